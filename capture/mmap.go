package capture

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

// Memory-mapped capture files.
//
// An uncompressed pcap file given by name is mapped read-only instead of
// read through a buffer (Options.NoMap turns that off): records are framed
// in place, with no read system calls and no copy, and a Segment's Payload
// (and Raw) stays valid until the Source is closed, not only until the next
// call to Next. That is what lets the pipeline hand records to other
// goroutines without copying them (see FrameSource). Pages the reader has
// left far behind are given back to the kernel as it goes (they stay in
// the page cache; reading them again only faults them in again), so the
// mapping does not grow the resident set with the file.
//
// A mapped file is read as long as it was when it was opened. A file that
// is truncated while it is mapped makes the process fault (SIGBUS): read
// such a file through standard input or with Options.NoMap.
// Compressed files, pcapng and standard input are read as streams.

// mmapMinSize is the smallest file worth mapping by default.
const mmapMinSize = 1 << 20

const (
	releaseLag  = 32 << 20 // mapped bytes kept behind the reader (batches in flight)
	releaseStep = 8 << 20  // pages are given back this many bytes at a time
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
		if in.mr == nil {
			return false
		}
	}
	return len(s.inputs) > 0
}

// NextFrame implements FrameSource.
func (s *fileSource) NextFrame(f *Frame) error {
	if !s.primed {
		s.primed = true
		for _, in := range s.inputs {
			s.refill(in)
		}
	} else if s.last != nil {
		s.refill(s.last)
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
	in := heap.Pop(&s.heap).(*input)
	*f = Frame{Data: in.data, Time: in.ts, WireLen: in.wire, Link: in.link}
	s.last = in
	return nil
}

// mapReader reads a memory-mapped pcap file: the records are slices of
// the mapping. Errors are those of pcapReader, at the same offsets.
type mapReader struct {
	m     []byte
	pos   int // offset of the next record header
	freed int // pages before this offset were given back
	order binary.ByteOrder
	nano  bool
	link  LinkType
	max   int
}

// openMapped maps f when it is a regular file worth mapping that starts
// with a pcap magic number; nil when it is not (then f is read as a stream).
func openMapped(f *os.File, magic []byte, opt Options) (*mapReader, error) {
	maxPacket, minSize := opt.MaxPacket, opt.MapMin
	if minSize == 0 {
		minSize = mmapMinSize
	}
	order, nano, ok := pcapOrder(magic)
	if !ok {
		return nil, nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < minSize || fi.Size() < 4 || int64(int(fi.Size())) != fi.Size() {
		return nil, nil
	}
	m, err := mapFile(f, fi.Size())
	if err != nil {
		return nil, nil // read it as a stream
	}
	r := &mapReader{m: m, order: order, nano: nano, max: maxPacket}
	if len(m) < 24 {
		r.pos = len(m)
		return r, fmt.Errorf("pcap file header: %w", io.ErrUnexpectedEOF)
	}
	_, r.link, err = parsePcapHeader(order, m[:24])
	r.pos = 24
	return r, err
}

func (r *mapReader) next() ([]byte, time.Time, int, LinkType, error) {
	rest := r.m[r.pos:]
	if len(rest) == 0 {
		return nil, time.Time{}, 0, 0, io.EOF
	}
	if len(rest) < 16 {
		return nil, time.Time{}, 0, 0, fmt.Errorf("record header: %w", io.ErrUnexpectedEOF)
	}
	h := rest[:16]
	sec := int64(r.order.Uint32(h[0:4]))
	frac := int64(r.order.Uint32(h[4:8]))
	caplen := int64(r.order.Uint32(h[8:12]))
	wire := int64(r.order.Uint32(h[12:16]))
	if caplen > int64(r.max) {
		return nil, time.Time{}, 0, 0, fmt.Errorf("%w: record length %d exceeds %d", ErrCorrupt, caplen, r.max)
	}
	if caplen > int64(len(rest)-16) {
		return nil, time.Time{}, 0, 0, fmt.Errorf("record data: %w", io.ErrUnexpectedEOF)
	}
	if !r.nano {
		frac *= 1000
	}
	end := 16 + int(caplen)
	data := rest[16:end:end]
	r.pos += end
	if r.pos-r.freed >= releaseLag+releaseStep {
		to := (r.pos - releaseLag) &^ (os.Getpagesize() - 1)
		releaseMapped(r.m[r.freed:to])
		r.freed = to
	}
	return data, time.Unix(sec, frac).UTC(), int(wire), r.link, nil
}

func (r *mapReader) Close() error {
	if r.m == nil {
		return nil
	}
	err := unmapFile(r.m)
	r.m = nil
	return err
}
