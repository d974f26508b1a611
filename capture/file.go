package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxPacket is the largest record accepted when Options.MaxPacket is
// zero: tcpdump's and Wireshark's maximum snapshot length. A longer record
// is taken for corruption rather than allocated.
const DefaultMaxPacket = 262144

// maxWrappers bounds compression layers (a gzip of a gzip of ...), so
// that a crafted file cannot nest decompressors without end.
const maxWrappers = 4

// zstdMaxWindow bounds the memory a zstd frame may ask for (zstd --long=27).
const zstdMaxWindow = 1 << 27

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// MaxPacket is the largest captured record a file may hold; a larger
	// length field is reported as a corrupt file. Zero means DefaultMaxPacket.
	MaxPacket int
	// Stdin is read for the path "-"; nil means os.Stdin.
	Stdin io.Reader
	// NoMap reads uncompressed pcap and pcapng files as streams instead
	// of mapping them into memory (see FrameSource): for a file that may
	// be truncated while it is read.
	NoMap bool
	// MapMin is the size from which files are mapped: smaller ones are
	// read as streams. Zero means 1 MiB; a negative value maps any file.
	MapMin int64
}

// ErrCorrupt is wrapped by the Warning for a record whose framing is
// impossible (a length beyond Options.MaxPacket, a bad pcap header).
var ErrCorrupt = errors.New("corrupt capture file")

// Open opens capture files and merges them into one Source in timestamp
// order ("-" is standard input). Formats are recognised by their first
// bytes, not by name: pcap (either byte order, micro- or nanosecond),
// pcapng, and either wrapped in gzip or zstd.
//
// Open fails if a file cannot be opened or is of no known format. A file
// that is cut short or damaged later, its header included, yields a
// *Warning from Next instead, and the other files are still read.
func Open(paths []string, opt Options) (Source, error) {
	if len(paths) == 0 {
		return nil, errors.New("capture: no files to read")
	}
	if opt.MaxPacket <= 0 {
		opt.MaxPacket = DefaultMaxPacket
	}
	s := &fileSource{dec: NewDecoder()}
	for i, p := range paths {
		in, err := openInput(p, i, opt)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.inputs = append(s.inputs, in)
	}
	return s, nil
}

// openInput opens one file and peels compression layers until it finds a
// capture format.
func openInput(path string, idx int, opt Options) (*input, error) {
	in := &input{name: path, idx: idx}
	var r io.Reader
	if path == "-" {
		r = opt.Stdin
		if r == nil {
			r = os.Stdin
		}
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		in.closers = append(in.closers, f)
		r = f
	}
	for range maxWrappers + 1 {
		in.cnt = &countReader{r: r}
		in.br = bufio.NewReaderSize(in.cnt, 64<<10)
		magic, err := in.br.Peek(4)
		if err != nil && len(magic) < 4 {
			if err == io.EOF {
				err = fmt.Errorf("capture: %s: unknown file format (starts %q)", path, magic)
			} else {
				err = fmt.Errorf("capture: %s: %w", path, err)
			}
			in.close()
			return nil, err
		}
		if f, ok := r.(*os.File); ok && !opt.NoMap {
			mm, pr, err := openMapped(f, magic, opt)
			if mm != nil {
				in.mm, in.pr, in.pending = mm, pr, err
				return in, nil
			}
		}
		switch {
		case magic[0] == 0x1f && magic[1] == 0x8b:
			zr, err := gzip.NewReader(in.br)
			if err != nil {
				in.close()
				return nil, fmt.Errorf("capture: %s: gzip: %w", path, err)
			}
			r = in.inflated(zr, nil)
			continue
		case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			zr, err := zstd.NewReader(in.br,
				zstd.WithDecoderConcurrency(1), // decode in one goroutine (readAhead's, with several cores)
				zstd.WithDecoderMaxWindow(zstdMaxWindow))
			if err != nil {
				in.close()
				return nil, fmt.Errorf("capture: %s: zstd: %w", path, err)
			}
			r = in.inflated(zr, zr.Close)
			continue
		case bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}):
			in.pr, in.pending = newNgReader(in.br, opt.MaxPacket)
		default:
			pr, ok, err := newPcapReader(in.br, opt.MaxPacket)
			if !ok {
				head, _ := in.br.Peek(16)
				in.close()
				return nil, fmt.Errorf("capture: %s: unknown file format (starts %q)", path, head)
			}
			in.pr, in.pending = pr, err
		}
		return in, nil
	}
	in.close()
	return nil, fmt.Errorf("capture: %s: more than %d layers of compression", path, maxWrappers)
}

// packetReader reads the records of one capture file. data is valid until
// the next call.
type packetReader interface {
	next() (data []byte, ts time.Time, wireLen int, link LinkType, err error)
}

// input is one file of a merged capture, with its look-ahead packet.
type input struct {
	name    string
	idx     int // position on the command line: breaks timestamp ties
	closers []io.Closer
	cnt     *countReader  // counts decompressed bytes for offsets
	mm      *mapping      // the mapped file, or nil: unmapped only by fileSource.Close
	br      *bufio.Reader // reads from cnt
	pr      packetReader
	pending error  // a header error, reported on the first read
	records uint64 // records read so far

	data []byte
	ts   time.Time
	wire int
	link LinkType
}

// offset is the position of the next unread byte of the decompressed file.
func (in *input) offset() int64 {
	if in.mm != nil {
		return int64(in.mm.pos)
	}
	return in.cnt.n - int64(in.br.Buffered())
}

// advance reads the next record into the look-ahead. It returns io.EOF at
// the clean end of the file and a *Warning for anything else.
func (in *input) advance() error {
	off := in.offset()
	err := in.pending
	if err == nil {
		in.data, in.ts, in.wire, in.link, err = in.pr.next()
	}
	if err == nil {
		in.records++
		return nil
	}
	if err == io.EOF {
		return err
	}
	var pkt uint64
	if in.pending == nil {
		pkt = in.records + 1
	} else {
		off = 0 // the file header is at fault
	}
	return &Warning{File: in.name, Packet: pkt, Offset: off, Err: err}
}

// inflated is what reads a decompressor zr of in: zr itself on one core,
// with several a readAhead of it. closeZ, when not nil, releases zr once
// nothing reads it.
func (in *input) inflated(zr io.Reader, closeZ func()) io.Reader {
	if runtime.GOMAXPROCS(0) < 2 {
		if closeZ != nil {
			in.closers = append(in.closers, closerFunc(func() error { closeZ(); return nil }))
		}
		return zr
	}
	ra := newReadAhead(zr, closeZ)
	in.closers = append(in.closers, ra)
	return ra
}

func (in *input) close() error {
	var first error
	for i := len(in.closers) - 1; i >= 0; i-- {
		if err := in.closers[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	in.closers = nil
	return first
}

// fileSource merges inputs by timestamp. The heap holds the inputs whose
// look-ahead packet is ready; the input whose packet was returned last is
// held out of it and only advanced on the next call to Next, because the
// segment aliases its buffer.
type fileSource struct {
	inputs []*input
	heap   inputHeap
	last   *input
	primed bool
	warns  []*Warning
	dec    *Decoder
	seg    Segment
	files  uint64 // FileErrors
}

func (s *fileSource) Next() (*Segment, error) {
	if !s.primed {
		s.primed = true
		for _, in := range s.inputs {
			s.refill(in)
		}
	} else if s.last != nil {
		s.advanceTop()
	}
	s.last = nil
	for {
		if len(s.warns) > 0 {
			w := s.warns[0]
			s.warns = s.warns[1:]
			return nil, w
		}
		if len(s.heap) == 0 {
			return nil, io.EOF
		}
		in := s.heap[0]
		ok, _ := s.dec.Decode(in.link, in.data, in.ts, in.wire, &s.seg)
		if ok {
			s.last = in
			return &s.seg, nil
		}
		// Not a segment: nothing aliases this packet, move on.
		s.advanceTop()
	}
}

// refill advances in and puts it in the heap, or retires it.
func (s *fileSource) refill(in *input) {
	if err := in.advance(); err != nil {
		s.retire(in, err)
		return
	}
	heap.Push(&s.heap, in)
}

// advanceTop advances the input at the top of the heap, the one that gave
// the last record, and puts it back in order, or retires it. It stays in
// the heap meanwhile: with one input (the usual case) there is no order
// to restore, and the heap's order (time, then file) is total, so the
// records come out as by popping and pushing.
func (s *fileSource) advanceTop() {
	in := s.heap[0]
	if err := in.advance(); err != nil {
		heap.Pop(&s.heap)
		s.retire(in, err)
		return
	}
	if len(s.heap) > 1 {
		heap.Fix(&s.heap, 0)
	}
}

// retire closes an input that ended, keeping its warning if it ended in
// an error.
func (s *fileSource) retire(in *input, err error) {
	if w, ok := err.(*Warning); ok {
		s.files++
		s.warns = append(s.warns, w)
	}
	in.close()
}

func (s *fileSource) Stats() Stats {
	st := s.dec.Stats()
	st.FileErrors = s.files
	return st
}

func (s *fileSource) Close() error {
	var first error
	for _, in := range s.inputs {
		if err := in.close(); err != nil && first == nil {
			first = err
		}
		if in.mm != nil {
			// Only now: segments of an input that ended may still be in use.
			if err := in.mm.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// inputHeap orders inputs by look-ahead timestamp, then by file order so
// that equal timestamps come out the same way on every run.
type inputHeap []*input

func (h inputHeap) Len() int { return len(h) }
func (h inputHeap) Less(i, j int) bool {
	if c := h[i].ts.Compare(h[j].ts); c != 0 {
		return c < 0
	}
	return h[i].idx < h[j].idx
}
func (h inputHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *inputHeap) Push(x any)   { *h = append(*h, x.(*input)) }
func (h *inputHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// pcapReader reads classic pcap files
// (https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcap/). It is our own
// rather than pcapgo's so that a file cut right after a record header is
// reported (io.ReadFull returns io.EOF there, which reads as a clean end)
// and record lengths are checked before anything is allocated.
type pcapReader struct {
	br      *bufio.Reader
	order   binary.ByteOrder
	nano    bool
	link    LinkType
	snaplen int
	max     int
	hdr     [24]byte
	buf     []byte
}

// newPcapReader reads the file header. ok is false when the magic number
// is not a pcap one; err reports a header that is cut short or invalid.
func newPcapReader(br *bufio.Reader, maxPacket int) (r *pcapReader, ok bool, err error) {
	magic, _ := br.Peek(4)
	r = &pcapReader{br: br, max: maxPacket}
	if r.order, r.nano, ok = pcapOrder(magic); !ok {
		return nil, false, nil
	}
	if _, err := io.ReadFull(br, r.hdr[:24]); err != nil {
		return r, true, fmt.Errorf("pcap file header: %w", noEOF(err))
	}
	r.snaplen, r.link, err = parsePcapHeader(r.order, r.hdr[:24])
	return r, true, err
}

// pcapOrder tells a pcap file by its magic number: its byte order and
// timestamp resolution; ok is false for any other magic.
func pcapOrder(magic []byte) (order binary.ByteOrder, nano, ok bool) {
	switch binary.LittleEndian.Uint32(magic) {
	case 0xa1b2c3d4:
		return binary.LittleEndian, false, true
	case 0xa1b23c4d:
		return binary.LittleEndian, true, true
	case 0xd4c3b2a1:
		return binary.BigEndian, false, true
	case 0x4d3cb2a1:
		return binary.BigEndian, true, true
	}
	return nil, false, false
}

// parsePcapHeader checks the 24-byte pcap file header h.
func parsePcapHeader(order binary.ByteOrder, h []byte) (snaplen int, link LinkType, err error) {
	if v := order.Uint16(h[4:6]); v != 2 {
		return 0, 0, fmt.Errorf("%w: pcap major version %d", ErrCorrupt, v)
	}
	// The upper bits of the link-type field carry FCS information.
	return int(order.Uint32(h[16:20])), LinkType(order.Uint32(h[20:24])), nil
}

func (r *pcapReader) next() ([]byte, time.Time, int, LinkType, error) {
	h := r.hdr[:16]
	if _, err := io.ReadFull(r.br, h); err != nil {
		if err == io.EOF {
			return nil, time.Time{}, 0, 0, io.EOF
		}
		return nil, time.Time{}, 0, 0, fmt.Errorf("record header: %w", err)
	}
	sec := int64(r.order.Uint32(h[0:4]))
	frac := int64(r.order.Uint32(h[4:8]))
	caplen := int64(r.order.Uint32(h[8:12]))
	wire := int64(r.order.Uint32(h[12:16]))
	if caplen > int64(r.max) {
		return nil, time.Time{}, 0, 0, fmt.Errorf("%w: record length %d exceeds %d", ErrCorrupt, caplen, r.max)
	}
	if !r.nano {
		frac *= 1000
	}
	ts := time.Unix(sec, frac).UTC()
	if int(caplen) <= r.br.Size() {
		// In place: the record stays in the reader's buffer until the next
		// call, as r.buf would (no copy of every packet on the reader's
		// single goroutine).
		data, err := r.br.Peek(int(caplen))
		if err != nil {
			return nil, time.Time{}, 0, 0, fmt.Errorf("record data: %w", noEOF(err))
		}
		r.br.Discard(len(data))
		return data, ts, int(wire), r.link, nil
	}
	if cap(r.buf) < int(caplen) {
		r.buf = make([]byte, max(int(caplen), min(r.snaplen, r.max), 2048))
	}
	data := r.buf[:caplen]
	if _, err := io.ReadFull(r.br, data); err != nil {
		return nil, time.Time{}, 0, 0, fmt.Errorf("record data: %w", noEOF(err))
	}
	return data, ts, int(wire), r.link, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: where it is used, some of a
// structure has been promised and none arrived.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ngReader reads pcapng through pcapgo, which handles sections, interface
// descriptions and timestamp resolutions; each packet carries its
// interface's link type.
type ngReader struct {
	r   *pcapgo.NgReader
	max int
}

func newNgReader(br *bufio.Reader, maxPacket int) (r *ngReader, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("%w: pcapng reader failed: %v", ErrCorrupt, p)
		}
	}()
	// pcapgo wraps br in bufio.NewReader, which returns br itself: the
	// offset it leaves in br stays exact.
	ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		return nil, fmt.Errorf("pcapng section header: %w", err)
	}
	return &ngReader{r: ng, max: maxPacket}, nil
}

func (r *ngReader) next() (data []byte, ts time.Time, wire int, link LinkType, err error) {
	if r == nil {
		return nil, ts, 0, 0, io.ErrUnexpectedEOF
	}
	// pcapgo parses untrusted blocks; a panic there must end this file,
	// not the program.
	defer func() {
		if p := recover(); p != nil {
			data, err = nil, fmt.Errorf("%w: pcapng reader failed: %v", ErrCorrupt, p)
		}
	}()
	data, ci, err := r.r.ZeroCopyReadPacketData()
	if err != nil {
		if err == io.EOF {
			return nil, ts, 0, 0, io.EOF
		}
		return nil, ts, 0, 0, fmt.Errorf("pcapng block: %w", err)
	}
	if len(data) > r.max {
		return nil, ts, 0, 0, fmt.Errorf("%w: record length %d exceeds %d", ErrCorrupt, len(data), r.max)
	}
	iface, err := r.r.Interface(ci.InterfaceIndex)
	if err != nil {
		return nil, ts, 0, 0, fmt.Errorf("pcapng packet: %w", err)
	}
	return data, ci.Timestamp, ci.Length, LinkType(iface.LinkType), nil
}
