package capture

// prefetchRecord asks the CPU to start loading the two cache lines at
// m[pos:], where the next record's header is, while the caller decodes
// the record it just framed. Records are read one after the other and
// each header's position is known only from the one before it, so without
// this every header is a full memory round trip that nothing overlaps: a
// record per 1.5 KB of upload traffic misses every cache, and framing a
// chunk was a third of a decoding goroutine's time.
func prefetchRecord(m []byte, pos int) {
	if pos >= 0 && pos+128 <= len(m) {
		prefetch(&m[pos])
	}
}
