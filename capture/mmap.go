package capture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"
)

// Memory-mapped capture files.
//
// An uncompressed pcap or pcapng (ngmap.go) file given by name is mapped
// read-only instead of read through a buffer (Options.NoMap turns that
// off): records are framed in place, with no read system calls and no
// copy, and a Segment's Payload (and Raw) stays valid until the Source is
// closed, not only until the next call to Next. That is what lets the pipeline hand records to other
// goroutines without copying them (see FrameSource). Pages the reader has
// left far behind are given back to the kernel as it goes (they stay in
// the page cache; reading them again only faults them in again), so the
// mapping does not grow the resident set with the file.
//
// A mapped file is read as long as it was when it was opened. A file that
// is truncated while it is mapped makes the process fault (SIGBUS): read
// such a file through standard input or with Options.NoMap. Compressed
// files and standard input are read as streams.

// mmapMinSize is the smallest file worth mapping by default.
const mmapMinSize = 1 << 20

const (
	releaseLag  = 2 << 20 // mapped bytes kept behind the reader (batches in flight; more only costs faults)
	releaseStep = 2 << 20 // pages are given back this many bytes at a time
)

// Frame is one captured record, not decoded. Data aliases the mapping.
type Frame struct {
	Data    []byte
	Time    time.Time
	WireLen int
	Link    LinkType
}

// FrameSource is a Source whose records can be decoded elsewhere, in
// parallel: the pipeline frames records on one goroutine and decodes them
// on several. Call either Next or NextFrame on a source, never both.
type FrameSource interface {
	Source
	// Mapped reports whether every input is memory-mapped: only then may
	// NextFrame be used, and only then do frames (and the segments decoded
	// from them) stay valid until Close.
	Mapped() bool
	// NextFrame returns the next record in the order Next would decode
	// them, io.EOF at the end, or a *Warning as Next does. Stats counts
	// no packet for frames: their decoders do.
	NextFrame(f *Frame) error
}

// DecodeFrame decodes f as Decode does and numbers the segment packet,
// for frames decoded out of capture order by several Decoders. An IPv4
// fragment needs the state of the fragments before it: DecodeFrame then
// counts nothing and reports deferred, and the caller passes the frame,
// in capture order, to one Decoder that sees every deferred frame (with
// DecodeFrame again, which decodes fragments when d is that Decoder:
// sequential true).
func (d *Decoder) DecodeFrame(f *Frame, packet uint64, seg *Segment, sequential bool) (ok, deferred bool) {
	before := d.stats
	ok, _ = d.Decode(f.Link, f.Data, f.Time, f.WireLen, seg)
	if !sequential && d.stats.Fragments != before.Fragments {
		d.stats = before
		d.defrag = nil
		return false, true
	}
	seg.Packet = packet
	return ok, false
}

// Mapped implements FrameSource.
func (s *fileSource) Mapped() bool {
	for _, in := range s.inputs {
		if in.mm == nil {
			return false
		}
	}
	return len(s.inputs) > 0
}

// MappedSize is the total size of the mapped inputs.
func (s *fileSource) MappedSize() int64 {
	var n int64
	for _, in := range s.inputs {
		if in.mm != nil {
			n += int64(len(in.mm.m))
		}
	}
	return n
}

// NextFrame implements FrameSource.
func (s *fileSource) NextFrame(f *Frame) error {
	if !s.primed {
		s.primed = true
		for _, in := range s.inputs {
			s.refill(in)
		}
	} else if s.last != nil {
		s.advanceTop()
	}
	s.last = nil
	if len(s.warns) > 0 {
		w := s.warns[0]
		s.warns = s.warns[1:]
		return w
	}
	if len(s.heap) == 0 {
		return io.EOF
	}
	in := s.heap[0]
	*f = Frame{Data: in.data, Time: in.ts, WireLen: in.wire, Link: in.link}
	s.last = in
	return nil
}

// mapping is a mapped file and how far its reader got.
type mapping struct {
	m     []byte
	pos   int // offset of the next record
	freed int // pages before this offset were given back
}

// mapReader reads a memory-mapped pcap file: the records are slices of
// the mapping. Errors are those of pcapReader, at the same offsets.
type mapReader struct {
	mapping
	order binary.ByteOrder
	big   bool // order is big-endian: u32 reads without an interface call
	nano  bool
	link  LinkType
	max   int
}

// openMapped maps f when it is a regular file worth mapping that starts
// with a pcap or pcapng magic number; nil when it is not (then f is read
// as a stream). err is an error in the file header, reported as the
// stream's reader reports it.
func openMapped(f *os.File, magic []byte, opt Options) (*mapping, packetReader, error) {
	maxPacket, minSize := opt.MaxPacket, opt.MapMin
	if minSize == 0 {
		minSize = mmapMinSize
	}
	order, nano, ok := pcapOrder(magic)
	ng := binary.LittleEndian.Uint32(magic) == ngSHB
	if !ok && !ng {
		return nil, nil, nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < minSize || fi.Size() < 4 || int64(int(fi.Size())) != fi.Size() {
		return nil, nil, nil
	}
	m, err := mapFile(f, fi.Size())
	if err != nil {
		return nil, nil, nil // read it as a stream
	}
	if ng {
		r, err := openMappedNg(m, maxPacket)
		return &r.mapping, r, err
	}
	r := &mapReader{mapping: mapping{m: m}, order: order, big: order == binary.BigEndian, nano: nano, max: maxPacket}
	if len(m) < 24 {
		r.pos = len(m)
		return &r.mapping, r, fmt.Errorf("pcap file header: %w", io.ErrUnexpectedEOF)
	}
	_, r.link, err = parsePcapHeader(order, m[:24])
	r.pos = 24
	return &r.mapping, r, err
}

func (r *mapReader) next() ([]byte, time.Time, int, LinkType, error) {
	data, ts, wire, next, err := r.frameAt(r.pos, nextAhead)
	if err != nil {
		return nil, ts, 0, 0, err
	}
	r.pos = next
	if r.pos-r.freed >= releaseLag+releaseStep {
		r.release(r.pos - releaseLag)
	}
	return data, ts, wire, r.link, nil
}

// frameAt reads the record whose header is at pos: io.EOF at the end of
// the file, the errors of pcapReader otherwise; next is where the
// following record starts.
func (r *mapReader) frameAt(pos, ahead int) (data []byte, ts time.Time, wire, next int, err error) {
	rest := r.m[pos:]
	if len(rest) == 0 {
		return nil, ts, 0, pos, io.EOF
	}
	if len(rest) < 16 {
		return nil, ts, 0, pos, fmt.Errorf("record header: %w", io.ErrUnexpectedEOF)
	}
	h := rest[:16]
	sec := int64(r.u32(h[0:4]))
	frac := int64(r.u32(h[4:8]))
	caplen := int64(r.u32(h[8:12]))
	wire = int(r.u32(h[12:16]))
	if caplen > int64(r.max) {
		return nil, ts, 0, pos, fmt.Errorf("%w: record length %d exceeds %d", ErrCorrupt, caplen, r.max)
	}
	if caplen > int64(len(rest)-16) {
		return nil, ts, 0, pos, fmt.Errorf("record data: %w", io.ErrUnexpectedEOF)
	}
	if !r.nano {
		frac *= 1000
	}
	end := 16 + int(caplen)
	prefetchRecords(r.m, pos+end, end, ahead)
	return rest[16:end:end], time.Unix(sec, frac).UTC(), wire, pos + end, nil
}

// u32 reads a header field in the file's byte order.
func (r *mapReader) u32(b []byte) uint32 {
	if r.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

// release gives back the pages before off.
func (r *mapping) release(off int) {
	to := off &^ (os.Getpagesize() - 1)
	if to > r.freed && to <= len(r.m) {
		releaseMapped(r.m[r.freed:to])
		r.freed = to
	}
}

func (r *mapping) Close() error {
	if r.m == nil {
		return nil
	}
	err := unmapFile(r.m)
	r.m = nil
	return err
}

// Chunker frames the records of one mapped pcap or pcapng file from
// several goroutines at once. The file after its header is cut into
// chunks of a fixed size; a chunk holds the records that start in it (in
// pcapng, whose packets may follow other blocks, the records whose
// reading starts in it: after the packet before). Where the first of them
// starts is known only once the chunk before is framed: Guess finds a
// likely start by the shape of record headers or blocks, Frame frames
// from any start, and the caller accepts a chunk only if Follows says it
// continues the chunk before (and frames it again from where that one
// ended otherwise), so the result is exactly what reading from the start
// gives.
type Chunker struct {
	s     *fileSource
	in    *input
	mm    *mapping
	size  int
	start int // where chunk 0 starts: after the file header
	max   int // Options.MaxPacket

	pr   *mapReader // pcap
	sec0 int64      // seconds of the first record, for Guess

	ng *ngChunks // pcapng
}

// Chunker returns a Chunker for a source of one mapped pcap or pcapng
// file whose header was read without error and which nothing was read
// from yet; nil otherwise. Chunks are size bytes, or up to maxSize when
// the first records are large: room for chunkRecords of them.
//
// A chunk's decoder searches for its first record from the chunk's start,
// half a record on average, where reading the file in order hops from
// header to header: with 64 KiB records (loopback captures, or GRO) and
// 512 KiB chunks the searching cost more than the decoding, and two cores
// were slower than one.
func (s *fileSource) Chunker(size, maxSize int) *Chunker {
	if len(s.inputs) != 1 || s.primed || size <= 0 {
		return nil
	}
	in := s.inputs[0]
	if in.mm == nil || in.pending != nil {
		return nil
	}
	s.primed = true // NextFrame and Next are not to be used any more
	c := &Chunker{s: s, in: in, mm: in.mm, size: size, start: in.mm.pos}
	switch r := in.pr.(type) {
	case *mapReader:
		c.pr, c.max = r, r.max
		if len(c.mm.m) >= c.start+16 {
			c.sec0 = int64(r.u32(c.mm.m[c.start:]))
		}
		c.size = grownChunk(size, maxSize, meanRecord(c.mm.m, c.start, func(h []byte) int { return 16 + int(r.u32(h[8:12])) }))
	case *ngMapReader:
		c.max = r.max
		u32 := binary.LittleEndian.Uint32
		if r.first.big {
			u32 = binary.BigEndian.Uint32
		}
		c.size = grownChunk(size, maxSize, meanRecord(c.mm.m, c.start, func(h []byte) int { return int(u32(h[4:8])) }))
		c.ng = newNgChunks(r, c.start, c.Len())
	}
	return c
}

// chunkRecords is how many records of the size found at a file's start a
// grown chunk holds: the search for its first record then covers about
// 1/(2 chunkRecords) of the file.
const chunkRecords = 128

// grownChunk is the chunk size for records of mean length mean: size, or
// room for chunkRecords of them, up to maxSize, in whole 64 KiB.
func grownChunk(size, maxSize, mean int) int {
	want := (mean*chunkRecords + 1<<16 - 1) &^ (1<<16 - 1)
	return max(size, min(want, maxSize))
}

// meanRecord is the mean length of the first records (up to 64, within
// 8 MiB) from start, hopping by length(header) (16 bytes of it at
// least); 0 when there is none.
func meanRecord(m []byte, start int, length func(h []byte) int) (mean int) {
	defer func() {
		// A file cut short under its mapping faults (debug.SetPanicOnFault):
		// no estimate; reading the records will report it.
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); !fault {
				panic(p)
			}
			mean = 0
		}
	}()
	p, n := start, 0
	for n < 64 && p+16 <= len(m) && p-start < 8<<20 {
		l := length(m[p : p+16])
		if l < 16 || l > len(m)-p {
			break
		}
		p += l
		n++
	}
	if n == 0 {
		return 0
	}
	return (p - start) / n
}

// window is how far from a chunk's start its first record is looked
// for: as far as the largest record allowed, so that a chunk that starts
// in one still finds the next.
func (c *Chunker) window() int { return max(1<<17, c.max+16) }

// Size is the size of a chunk in bytes.
func (c *Chunker) Size() int { return c.size }

// Len is the number of chunks.
func (c *Chunker) Len() int { return max(1, (len(c.mm.m)-c.start+c.size-1)/c.size) }

// bounds are the offsets chunk i starts and ends at.
func (c *Chunker) bounds(i int) (lo, hi int) {
	lo = c.start + i*c.size
	return lo, min(lo+c.size, len(c.mm.m))
}

// Start is the offset of the first record: where chunk 0 starts.
func (c *Chunker) Start() int64 { return int64(c.start) }

// Guess returns the offset of the first record that seems to start in
// chunk i: the first offset from which four record headers (pcapng
// blocks, at offsets a multiple of 4) in a row, or as many as there are
// to the end of the file, look valid. -1 when none does near the chunk's
// start.
func (c *Chunker) Guess(i int) int64 {
	if i == 0 {
		return c.Start()
	}
	if c.ng != nil {
		return c.guessNg(i)
	}
	lo, hi := c.bounds(i)
	m := c.mm.m
	// A record header needs 16 bytes; plausible refuses one cut by the end.
	end := min(hi, lo+c.window(), len(m)-15)
	// Most offsets fail on the top byte of the seconds, which plausible
	// wants within 2^24 of the first record's: only offsets where that byte
	// is within one of the first record's are tried, found with IndexByte.
	// A chunk starts on average half a record before its first record, and
	// payload rarely holds that byte: with 64 KiB records (loopback, GRO)
	// testing byte by byte cost more than decoding.
	top, at := byte(c.sec0>>24), 3
	if c.pr.big {
		at = 0
	}
	next := [3]int{-1, -1, -1}
	for p := lo; p < end; p++ {
		if p = nearByte(m, p+at, end+at, top, &next) - at; p >= end {
			break
		}
		if c.plausible(p) {
			return int64(p)
		}
	}
	return -1
}

// nearByte returns the least offset in [from, to) whose byte is within
// one of b (b-1, b or b+1, wrapping), or to. next holds, for each of the
// three, the offset of its occurrence found last (-1 at first, to when
// there is none more): offsets are asked for in increasing order, so
// each value's bytes are searched once.
func nearByte(m []byte, from, to int, b byte, next *[3]int) int {
	best := to
	for k := range next {
		if next[k] < from {
			if j := bytes.IndexByte(m[from:to], b-1+byte(k)); j >= 0 {
				next[k] = from + j
			} else {
				next[k] = to
			}
		}
		best = min(best, next[k])
	}
	return best
}

func (c *Chunker) plausible(p int) bool {
	m, r := c.mm.m, c.pr
	fracMax := uint32(1_000_000)
	if r.nano {
		fracMax = 1_000_000_000
	}
	for range 4 {
		if p == len(m) {
			return true
		}
		if p+16 > len(m) {
			return false
		}
		h := m[p : p+16]
		sec := int64(r.u32(h[0:4]))
		caplen := r.u32(h[8:12])
		wire := r.u32(h[12:16])
		if r.u32(h[4:8]) >= fracMax || caplen > uint32(r.max) || wire < caplen || wire > 1<<18 ||
			sec < c.sec0-1<<24 || sec > c.sec0+1<<24 {
			return false
		}
		p += 16 + int(caplen)
		if p > len(m) {
			return false
		}
	}
	return true
}

// Frame appends to dst the records of chunk i, the first at start. end is
// where the record after them starts; err, when not nil, is why the record
// at end cannot be read (the file ends there: see Fail).
//
// each, when not nil, is called with every record as soon as it is framed
// (its index in dst and a pointer into dst, valid during the call), before
// the next record is read: the next header is on its way from memory
// meanwhile (prefetchRecords), so decoding there costs little more than
// framing alone, where framing then decoding pays for every header twice.
func (c *Chunker) Frame(i int, start int64, dst []Frame, each func(k int, f *Frame)) (frames []Frame, end int64, err error) {
	if c.ng != nil {
		return c.frameNg(i, start, dst, each)
	}
	_, hi := c.bounds(i)
	pos := int(start)
	for pos < hi {
		data, ts, wire, next, err := c.pr.frameAt(pos, chunkAhead)
		if err != nil {
			return dst, int64(pos), err
		}
		if n := len(dst); n%3 == 0 && n+framesAhead+3 <= cap(dst) {
			prefetchWrite((*byte)(unsafe.Pointer(&dst[:n+framesAhead+1][n+framesAhead])))
		}
		dst = append(dst, Frame{Data: data, Time: ts, WireLen: wire, Link: c.pr.link})
		if each != nil {
			each(len(dst)-1, &dst[len(dst)-1])
		}
		pos = next
	}
	return dst, int64(pos), nil
}

// Follows reports whether chunk i, as last framed from start, continues
// the chunks before it, which ended at want: it starts there and, in
// pcapng, in the interface table they ended in. Called in chunk order,
// once the chunks before i are accepted and while nothing frames i.
func (c *Chunker) Follows(i int, start, want int64) bool {
	if start != want {
		return false
	}
	if c.ng == nil {
		return true
	}
	prev := c.ng.first
	if i > 0 {
		prev = c.ng.slots[i-1].out.Load()
	}
	return prev.equal(c.ng.slots[i].in.Load())
}

// Fail returns the warning Next gives for err at the packet-th record
// (1-based), at offset off, and counts the file error in Stats.
func (c *Chunker) Fail(packet uint64, off int64, err error) *Warning {
	c.s.files++
	return &Warning{File: c.in.name, Packet: packet, Offset: off, Err: err}
}

// Release gives back the mapped pages before off: records before it must
// not be in use any more (reading them again would only be slower).
// Pages go back 2 MiB at a time: each call interrupts the other CPUs
// running the process's threads (TLB shootdown), so not at every chunk,
// but each MiB kept is a MiB of resident set (the pipeline calls Release
// off its critical path).
func (c *Chunker) Release(off int64) {
	if int(off)-c.mm.freed >= chunkReleaseStep {
		c.mm.release(int(off))
	}
}

const chunkReleaseStep = 2 << 20

// ReleaseStep is how far Release lets the pages before its offset wait:
// it gives them back in steps of this many bytes.
const ReleaseStep = chunkReleaseStep

// Given returns the offset before which the pages were given back; not
// to be called while Release runs.
func (c *Chunker) Given() int64 { return int64(c.mm.freed) }

// framesAhead is how far ahead of the frame it appends Chunker.Frame
// prefetches dst's slots for writing, three at a time (a Frame is a
// cache line). A chunk's frames were last written by whichever core
// framed the batch before, and the first store to each line stalls on
// taking it from there.
const framesAhead = 6
