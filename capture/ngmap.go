package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// Memory-mapped pcapng files.
//
// A mapped pcapng file must give exactly what ngReader (pcapgo) gives for
// the same bytes, warnings included, however the file is damaged: the
// choice between the two depends only on how the file was named and on
// Options.NoMap. So ngCursor is not a pcapng reader of its own but
// pcapgo's NgReader replayed step by step over the mapping: the same
// reads, the same (wrapping, uint32) count of what is left of a block,
// the same option and name-record loops, which can run past the end of
// a block whose lengths disagree, and the same error texts. The
// comparison with the stream is a test and a fuzz target
// (TestMappedNgSameAsStream, FuzzMappedNg).

// pcapng block types and constants (pcapgo's, which are unexported).
const (
	ngIDB        = 1
	ngPB         = 2 // obsolete packet block
	ngSPB        = 3
	ngNRB        = 4
	ngISB        = 5
	ngEPB        = 6
	ngJournal    = 9
	ngDSB        = 0xa
	ngCustom     = 0xbad
	ngCustomCopy = 0x40000bad
	ngSHB        = 0x0a0d0d0a
	ngOrderMagic = 0x1a2b3c4d

	ngOptTSResol  = 9
	ngOptTSOffset = 14
)

// ngIface is what framing needs of one interface of a pcapng section.
type ngIface struct {
	link               LinkType
	snaplen            uint32
	mask               uint64 // timestamp units per second
	scaleUp, scaleDown uint64 // units to nanoseconds
	offset             uint64 // if_tsoffset, seconds
}

// time converts a timestamp as pcapgo does, uint64 wrap-around included.
func (f *ngIface) time(ts uint64) time.Time {
	frac := ts % f.mask * f.scaleUp
	if f.scaleDown != 1 { // a division less per packet at nanoseconds and coarser
		frac /= f.scaleDown
	}
	return time.Unix(int64(ts/f.mask+f.offset), int64(frac)).UTC()
}

// ngState is the interface table in force at a point of a pcapng file:
// its section's byte order and interfaces. It is never changed: a block
// that changes it makes a new one, so chunks framed on other goroutines
// can share it.
type ngState struct {
	big    bool
	ifaces []ngIface
}

func (s *ngState) equal(t *ngState) bool {
	return s == t || s != nil && t != nil && s.big == t.big && slices.Equal(s.ifaces, t.ifaces)
}

// errNgLimit stops a call of ngCursor.next that went past ngCursor.limit.
var errNgLimit = errors.New("pcapng: framing limit")

// ngCursor replays pcapgo's NgReader over m from pos, in state st.
type ngCursor struct {
	m    []byte
	pos  int
	st   *ngState
	big  bool   // the byte order being read: st's, or a new section's while its header is read
	left uint32 // what NgReader counts as left of the current block
	// limit is where a call of next gives up with errNgLimit (checked
	// once per block, option and name record): how far a chunk framed
	// from a guess may read past its end.
	limit int
	ahead int // records to prefetch (prefetchRecords)
}

func newNgCursor(m []byte, pos int, st *ngState) ngCursor {
	return ngCursor{m: m, pos: pos, st: st, big: st.big, limit: math.MaxInt, ahead: nextAhead}
}

func (c *ngCursor) u16(b []byte) uint16 {
	if c.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (c *ngCursor) u32(b []byte) uint32 {
	if c.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (c *ngCursor) u64(b []byte) uint64 {
	if c.big {
		return binary.BigEndian.Uint64(b)
	}
	return binary.LittleEndian.Uint64(b)
}

// read is NgReader.readBytes: the next n bytes, in place.
func (c *ngCursor) read(n int) ([]byte, error) {
	if n < 0 {
		return nil, errors.New("length from file does not fit in int") // pcapgo's readFull, where int is 32 bits
	}
	if n > len(c.m)-c.pos {
		return nil, io.ErrUnexpectedEOF
	}
	b := c.m[c.pos : c.pos+n : c.pos+n]
	c.pos += n
	return b, nil
}

// discard is NgReader.discard: it skips n bytes and counts them off the block.
func (c *ngCursor) discard(n int) error {
	if n < 0 {
		return fmt.Errorf("could not discard %d bytes: %v", n, bufio.ErrNegativeCount)
	}
	if n > len(c.m)-c.pos {
		return io.ErrUnexpectedEOF
	}
	c.pos += n
	c.left -= uint32(n)
	return nil
}

// block is NgReader.readBlock: a block's type and length. io.EOF only
// where the file ends right at a block.
func (c *ngCursor) block() (uint32, error) {
	if c.pos > c.limit {
		return 0, errNgLimit
	}
	if c.pos == len(c.m) {
		return 0, io.EOF
	}
	h, err := c.read(8)
	if err != nil {
		return 0, err
	}
	typ := c.u32(h)
	if typ != ngSHB {
		c.left = c.u32(h[4:]) - 8
		return typ, nil
	}
	bo, err := c.read(4)
	if err != nil {
		return 0, err
	}
	switch {
	case binary.BigEndian.Uint32(bo) == ngOrderMagic:
		c.big = true
	case binary.LittleEndian.Uint32(bo) == ngOrderMagic:
		c.big = false
	default:
		return 0, errors.New("Wrong byte order value in Section Header")
	}
	c.left = c.u32(h[4:]) - 12
	return typ, nil
}

// option is NgReader.readOption: code 0 ends the options, also where
// exactly the block's trailing length is left.
func (c *ngCursor) option() (code uint16, value []byte, err error) {
	if c.left == 4 {
		return 0, nil, nil
	}
	if c.pos > c.limit {
		return 0, nil, errNgLimit
	}
	h, err := c.read(4)
	if err != nil {
		return 0, nil, err
	}
	c.left -= 4
	code, n := c.u16(h), c.u16(h[2:])
	if code == 0 {
		if n != 0 {
			return 0, nil, errors.New("End of Options must be zero length")
		}
		return 0, nil, nil
	}
	if n != 0 {
		if value, err = c.read(int(n)); err != nil {
			return 0, nil, err
		}
		if pad := n % 4; pad > 0 {
			if err := c.discard(int(4 - pad)); err != nil {
				return 0, nil, err
			}
		}
		c.left -= uint32(n)
	}
	return code, value, nil
}

func (c *ngCursor) skipOptions() error {
	for {
		code, _, err := c.option()
		if err != nil || code == 0 {
			return err
		}
	}
}

// section is NgReader.readSectionHeader, after block read the byte order.
func (c *ngCursor) section() error {
	h, err := c.read(12)
	if err != nil {
		return err
	}
	c.left -= 12
	if c.u16(h) != 1 || c.u16(h[2:]) != 0 {
		return pcapgo.ErrNgVersionMismatch
	}
	if err := c.skipOptions(); err != nil {
		return err
	}
	if err := c.discard(int(c.left)); err != nil {
		return err
	}
	c.st = &ngState{big: c.big}
	return nil
}

// iface is NgReader.readInterfaceDescriptor.
func (c *ngCursor) iface() error {
	h, err := c.read(8)
	if err != nil {
		return err
	}
	c.left -= 8
	f := ngIface{link: LinkType(c.u16(h)), snaplen: c.u32(h[4:])}
	var res uint8
	for {
		code, v, err := c.option()
		if err != nil {
			return err
		}
		if code == 0 {
			break
		}
		switch {
		case code == ngOptTSResol && len(v) >= 1:
			res = v[0]
		case code == ngOptTSOffset && len(v) >= 8:
			f.offset = c.u64(v)
		}
	}
	if err := c.discard(int(c.left)); err != nil {
		return err
	}
	if res == 0 {
		res = 6
	}
	exp := res & 0x7f
	if res&0x80 != 0 {
		if exp > 63 {
			return fmt.Errorf("Timestamp resolution 2^-%d is too high", exp)
		}
		f.mask = 1 << exp
	} else {
		if exp > 63 {
			return fmt.Errorf("Timestamp resolution 10^-%d is too high", exp)
		}
		f.mask = 1
		for range exp {
			f.mask *= 10 // wraps from 10^20 on, as in pcapgo
		}
	}
	f.scaleUp, f.scaleDown = 1, 1
	if f.mask < 1e9 {
		f.scaleUp = 1e9 / f.mask
	} else {
		f.scaleDown = f.mask / 1e9
	}
	c.st = &ngState{big: c.st.big, ifaces: append(slices.Clip(c.st.ifaces), f)}
	return nil
}

func errNoIface(id uint64, n int) error {
	return fmt.Errorf("Interface id %d not present in section (have only %d interfaces)", id, n)
}

// stats is NgReader.readInterfaceStatistics, which counts nothing we keep.
func (c *ngCursor) stats() error {
	h, err := c.read(12)
	if err != nil {
		return err
	}
	c.left -= 12
	if id := uint64(c.u32(h)); id >= uint64(len(c.st.ifaces)) {
		return errNoIface(id, len(c.st.ifaces))
	}
	if err := c.skipOptions(); err != nil {
		return err
	}
	return c.discard(int(c.left))
}

// names is NgReader.readNameResolutionBlock, which reads the records up
// to the block's count of what is left, the trailing length included.
func (c *ngCursor) names() error {
	for c.left > 0 {
		if c.pos > c.limit {
			return errNgLimit
		}
		h, err := c.read(4)
		if err != nil {
			return fmt.Errorf("could not read NameRecord Header block length: %v", err)
		}
		c.left -= 4
		typ := c.u16(h)
		length := min(int(c.u16(h[2:])), int(c.left))
		padding := length % 4
		if padding > 0 {
			padding = 4 - padding
		}
		var addr int
		var what, kind string
		switch typ {
		case 0:
			return c.discard(int(c.left))
		case 1:
			addr, what, kind = 4, "IPv4", "IP"
		case 2:
			addr, what, kind = 16, "IPv6", "IP"
		case 3:
			addr, what, kind = 6, "EUI-48", "EUI"
		case 4:
			addr, what, kind = 8, "EUI-64", "EUI"
		default:
			if err := c.discard(length + padding); err != nil {
				return fmt.Errorf("could not discard unknown name record: %v", err)
			}
			continue
		}
		if length < addr {
			return fmt.Errorf("name record of type %d is too short for its address", typ)
		}
		if _, err := c.read(addr); err != nil {
			return fmt.Errorf("could not read %s address: %v", what, fmt.Errorf("could not read %s address: %v", kind, err))
		}
		c.left -= uint32(length)
		if _, err := c.read(length - addr); err != nil {
			return fmt.Errorf("could not read name: %v", err)
		}
		if err := c.discard(padding); err != nil {
			return err
		}
	}
	return c.discard(int(c.left))
}

// other reads a block that holds no packet, as NgReader.readPacketHeader does.
func (c *ngCursor) other(typ uint32) error {
	switch typ {
	case ngIDB:
		return c.iface()
	case ngISB:
		return c.stats()
	case ngSHB:
		return c.section()
	case ngNRB:
		return c.names()
	}
	return c.discard(int(c.left))
}

// next reads blocks up to and including the next packet, as
// NgReader.ZeroCopyReadPacketData does, and checks the packet as
// ngReader.next does. On an error the cursor is left anywhere.
func (c *ngCursor) next(maxPacket int) (data []byte, ts time.Time, wire int, link LinkType, err error) {
	start := c.pos
	var f *ngIface
	var caplen int
	var typ uint32
	for f == nil {
		if typ, err = c.block(); err != nil {
			return nil, ts, 0, 0, ngErr(err)
		}
		switch typ {
		case ngEPB, ngPB:
			h, err := c.read(20)
			if err != nil {
				return nil, ts, 0, 0, ngErr(err)
			}
			c.left -= 20
			id := uint64(c.u32(h))
			if typ == ngPB {
				id = uint64(c.u16(h))
			}
			if id >= uint64(len(c.st.ifaces)) {
				return nil, ts, 0, 0, ngErr(errNoIface(id, len(c.st.ifaces)))
			}
			f = &c.st.ifaces[id]
			ts = f.time(uint64(c.u32(h[4:]))<<32 | uint64(c.u32(h[8:])))
			caplen, wire = int(c.u32(h[12:])), int(c.u32(h[16:]))
		case ngSPB:
			h, err := c.read(4)
			if err != nil {
				return nil, ts, 0, 0, ngErr(err)
			}
			c.left -= 4
			wire = int(c.u32(h))
			caplen = wire
			if len(c.st.ifaces) == 0 {
				return nil, ts, 0, 0, ngErr(errors.New("At least one Interface is needed for a packet"))
			}
			f = &c.st.ifaces[0]
			if f.snaplen != 0 && uint32(caplen) > f.snaplen {
				caplen = int(f.snaplen)
			}
		default:
			if err := c.other(typ); err != nil {
				return nil, ts, 0, 0, ngErr(err)
			}
		}
	}
	if data, err = c.read(caplen); err != nil {
		return nil, ts, 0, 0, ngErr(err)
	}
	c.left -= uint32(caplen)
	if pad := (4 - caplen&3) & 3; pad > 0 {
		if err := c.discard(pad); err != nil {
			return nil, ts, 0, 0, ngErr(err)
		}
	}
	if typ == ngEPB {
		if err := c.skipOptions(); err != nil {
			return nil, ts, 0, 0, ngErr(err)
		}
	}
	if err := c.discard(int(c.left)); err != nil {
		return nil, ts, 0, 0, ngErr(err)
	}
	prefetchRecords(c.m, c.pos, c.pos-start, c.ahead)
	if len(data) > maxPacket {
		return nil, ts, 0, 0, fmt.Errorf("%w: record length %d exceeds %d", ErrCorrupt, len(data), maxPacket)
	}
	return data, ts, wire, f.link, nil
}

// ngErr wraps an error of a block as ngReader.next does.
func ngErr(err error) error {
	if err == io.EOF || err == errNgLimit {
		return err
	}
	return fmt.Errorf("pcapng block: %w", err)
}

// ngMapReader reads a memory-mapped pcapng file: the packets are slices
// of the mapping. Errors are those of ngReader, at the same offsets.
type ngMapReader struct {
	mapping
	c     ngCursor
	first *ngState // after the first section header
	max   int
}

// openMappedNg reads the first section header of the mapped file m, as
// newNgReader does.
func openMappedNg(m []byte, maxPacket int) (*ngMapReader, error) {
	r := &ngMapReader{mapping: mapping{m: m}, max: maxPacket}
	r.c = newNgCursor(m, 0, &ngState{})
	err := func() error {
		typ, err := r.c.block()
		if err != nil {
			return err
		}
		if typ != ngSHB {
			return fmt.Errorf("Unknown magic %x", typ) // not reached: openMapped saw the magic
		}
		return r.c.section()
	}()
	if err != nil {
		r.pos = len(m)
		return r, fmt.Errorf("pcapng section header: %w", err)
	}
	r.pos, r.first = r.c.pos, r.c.st
	return r, nil
}

func (r *ngMapReader) next() ([]byte, time.Time, int, LinkType, error) {
	data, ts, wire, link, err := r.c.next(r.max)
	if err != nil {
		return nil, ts, 0, 0, err
	}
	r.pos = r.c.pos
	if r.pos-r.freed >= releaseLag+releaseStep {
		r.release(r.pos - releaseLag)
	}
	return data, ts, wire, link, nil
}

// Chunked framing of pcapng.
//
// What a block means depends on the interface table in force where it
// is: a packet's link type and timestamp resolution come from the
// interface descriptions before it in its section, and a section header
// may change the byte order. A chunk framed from a guessed start is
// framed in a guessed table too (that of the end of the chunk before it,
// if it was framed already, or else the last table a chunk ended in), and
// Follows accepts it only if that table is the one the chunk before it
// ended in, as well as its start where that chunk ended. A chunk that
// meets an interface description or a section header reads it as
// reading from the start would, and ends in the table it makes.

// ngMaxBlock is the largest block Guess takes for one: a packet block
// holds at most Options.MaxPacket bytes, and other blocks are small.
const ngMaxBlock = 16 << 20

type ngChunks struct {
	first *ngState                // the table chunk 0 starts in
	hint  atomic.Pointer[ngState] // the table a chunk starts in when the one before is not framed yet
	slots []ngSlot                // by chunk
}

// ngSlot is the table the last framing of a chunk started and ended in.
type ngSlot struct{ in, out atomic.Pointer[ngState] }

func newNgChunks(r *ngMapReader, start, n int) *ngChunks {
	g := &ngChunks{first: r.first, slots: make([]ngSlot, n)}
	// The interface descriptions usually all come before the first
	// packet: later chunks are guessed to start with them.
	c := newNgCursor(r.m, start, r.first)
	c.limit = start + 1<<20
	for c.pos+8 <= len(r.m) {
		switch c.u32(r.m[c.pos:]) {
		case ngEPB, ngSPB, ngPB:
			g.hint.Store(c.st)
			return g
		}
		typ, err := c.block()
		if err == nil {
			err = c.other(typ)
		}
		if err != nil {
			break
		}
	}
	g.hint.Store(c.st)
	return g
}

func (c *Chunker) guessNg(i int) int64 {
	lo, hi := c.bounds(i)
	big := c.ng.hint.Load().big
	for p := (lo + 3) &^ 3; p < hi && p-lo < c.window(); p += 4 {
		if c.plausibleNg(p, big) {
			return int64(p)
		}
	}
	return -1
}

// plausibleNg reports whether four blocks in a row (or as many as there
// are to the end of the file) look valid from p: a known type, a length
// of at least 12, a multiple of 4, repeated at the block's end.
func (c *Chunker) plausibleNg(p int, big bool) bool {
	m := c.mm.m
	u32 := binary.LittleEndian.Uint32
	if big {
		u32 = binary.BigEndian.Uint32
	}
	for range 4 {
		if p == len(m) {
			return true
		}
		if p+12 > len(m) {
			return false
		}
		switch u32(m[p:]) {
		case ngIDB, ngPB, ngSPB, ngNRB, ngISB, ngEPB, ngJournal, ngDSB, ngCustom, ngCustomCopy, ngSHB:
		default:
			return false
		}
		n := u32(m[p+4:])
		if n < 12 || n%4 != 0 || n > ngMaxBlock || int(n) > len(m)-p || u32(m[p+int(n)-4:]) != n {
			return false
		}
		p += int(n)
	}
	return true
}

func (c *Chunker) frameNg(i int, start int64, dst []Frame, each func(int, *Frame)) ([]Frame, int64, error) {
	lo, hi := c.bounds(i)
	st := c.ng.first
	if i > 0 {
		if st = c.ng.slots[i-1].out.Load(); st == nil {
			st = c.ng.hint.Load()
		}
	}
	slot := &c.ng.slots[i]
	slot.in.Store(st)
	cur := newNgCursor(c.mm.m, int(start), st)
	cur.ahead = chunkAhead
	if int(start) >= lo && i+1 < c.Len() {
		// Maybe a guess: a call that reads far past the chunk (a block
		// whose options or names run on) is left to the framing of the
		// next chunk, which starts before that chunk and so has no limit.
		// Otherwise a crafted file would be read once per chunk.
		cur.limit = hi + c.size
	}
	defer func() {
		slot.out.Store(cur.st)
		if cur.st != st {
			c.ng.hint.Store(cur.st)
		}
	}()
	for cur.pos < hi {
		at, atSt := cur.pos, cur.st
		data, ts, wire, link, err := cur.next(c.max)
		switch err {
		case nil:
			dst = append(dst, Frame{Data: data, Time: ts, WireLen: wire, Link: link})
			if each != nil {
				each(len(dst)-1, &dst[len(dst)-1])
			}
		case io.EOF:
			return dst, int64(len(c.mm.m)), nil
		case errNgLimit:
			cur.st = atSt
			return dst, int64(at), nil
		default:
			return dst, int64(at), err
		}
	}
	return dst, int64(cur.pos), nil
}
