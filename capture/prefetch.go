package capture

import "unsafe"

// prefetchRecords asks the CPU to start loading the headers of the n
// records after this one: the one at m[pos:] surely, and those after it
// if they are the same size as this one, which is how uploads are
// captured (runs of full-size segments). Records are read one after the
// other and each header's position is known only from the one before it,
// so without this every header is a full memory round trip that nothing
// overlaps: a record per 1.5 KB of upload traffic misses every cache.
// Where records are only decoded between headers (the pipeline's chunks),
// that is shorter than a round trip: four records ahead framed and
// decoded a 385 MB capture in 40 ms instead of 59 (one ahead) on one
// core. Where each record is also analysed before the next is read
// (Source.Next), one ahead is enough. A wrong guess costs a cache line
// read for nothing.
func prefetchRecords(m []byte, pos, size, n int) {
	if n > 1 && pos >= 0 && pos+(n-1)*size+128 <= len(m) {
		// One call for all n: a call per record ahead was 2 % of the CPU.
		prefetchStride(&m[pos], size, n)
		return
	}
	for range n {
		if pos < 0 || pos+128 > len(m) {
			return
		}
		prefetch(&m[pos])
		pos += size
	}
}

// Records prefetched ahead of the one just framed: in chunks, and when
// records are read one at a time.
const (
	chunkAhead = 4
	nextAhead  = 1
)

// Prefetch asks the CPU to start loading s. A consumer that takes
// segments decoded on another core (the pipeline's workers) stalls on
// the first read of each, a round trip to the other core's cache; with
// the next few prefetched, those round trips overlap.
func (s *Segment) Prefetch() {
	p := (*[segmentSize]byte)(unsafe.Pointer(s))
	prefetch(&p[0])
	prefetch(&p[segmentSize-64])
}

const segmentSize = int(unsafe.Sizeof(Segment{}))

// PrefetchWrite asks the CPU to fetch s for writing. A decoder that
// fills segments another core read last (the pipeline's batches are
// reused) otherwise stalls on the first store to each.
func (s *Segment) PrefetchWrite() {
	p := (*[segmentSize]byte)(unsafe.Pointer(s))
	prefetchWrite(&p[0])
}
