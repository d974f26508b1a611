package reassembly

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/expectscope/expectscope/capture"
)

// Defaults for the zero fields of Config. They keep the assembler's own
// memory well under 100 MiB: connection state is 232 bytes plus at most
// 21 for its index (TestConnMemory), so DefaultMaxConns costs about 16 MiB
// plus the streams at worst, and out-of-order buffers are capped by
// DefaultMaxBufferedTotal (plus at most 4 MiB of pooled free buffers).
const (
	DefaultMaxConns           = 1 << 16
	DefaultMaxBufferedPerConn = 4 << 20
	DefaultMaxBufferedTotal   = 32 << 20
	DefaultIdleTimeout        = 5 * time.Minute
)

// ConnBudget is the memory a tracked connection is allowed, for
// MaxConnsFor: one costs 380 bytes while it idles (its state here and in
// the analysis, TestConnMemory) but about 3 KiB while it carries an
// exchange (parser state, request, the record on its way out), so with
// one connection per ConnBudget bytes even all of them busy at once leave
// the collector room under the memory limit.
const ConnBudget = 3584

// MaxConnsFor is the connection cap (Config.MaxConns) that fits a memory
// limit of limit bytes: one connection per ConnBudget bytes, from 1024 up
// to DefaultMaxConns (reached at 224 MiB; 20 480 at 70 MiB). No limit
// (limit <= 0 or math.MaxInt64) gives DefaultMaxConns.
func MaxConnsFor(limit int64) int {
	if limit <= 0 || limit == math.MaxInt64 {
		return DefaultMaxConns
	}
	return int(min(max(limit/ConnBudget, 1024), DefaultMaxConns))
}

// Config bounds the assembler. Zero fields take the defaults above.
type Config struct {
	// MaxConns bounds the connections tracked, closed ones remembered to
	// ignore their trailing segments included. Beyond it the least
	// recently active one is dropped (Close(EndEvicted) if open).
	MaxConns int
	// MaxBufferedPerConn bounds the out-of-order bytes held for one
	// direction of a connection (buffer capacity plus bookkeeping).
	MaxBufferedPerConn int
	// MaxBufferedTotal bounds the out-of-order bytes held for all
	// connections.
	MaxBufferedTotal int
	// IdleTimeout closes a connection (Close(EndIdle)) after this much
	// capture time without a segment.
	IdleTimeout time.Duration
	// StablePayloads promises that a Segment's Payload stays valid and
	// unchanged after Add returns, as long as the Assembler is used (the
	// segments of a memory-mapped file). The last in-order segment of each
	// direction is then kept by reference and compared byte for byte with
	// a retransmission of it, instead of by a CRC-32 computed for every
	// segment (a third of the CPU time of a run over upload traffic).
	StablePayloads bool
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxBufferedPerConn <= 0 {
		c.MaxBufferedPerConn = DefaultMaxBufferedPerConn
	}
	if c.MaxBufferedTotal <= 0 {
		c.MaxBufferedTotal = DefaultMaxBufferedTotal
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	return c
}

// scanEvery is how much capture time passes between two scans for idle
// connections. A connection's own idle deadline is also checked exactly
// when its next segment arrives, so the scan interval only decides when
// quiet connections are reported, and it depends on capture time alone.
const scanEvery = time.Second

// chunkOverhead is what one buffered chunk costs besides its bytes; it
// is charged against the buffer limits so that floods of tiny segments
// stay bounded too.
const chunkOverhead = 64

// Sequence-space comparisons (RFC 9293 section 3.4): valid across the
// 32-bit wraparound as long as the values are within 2^31 of each other.
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqLE(a, b uint32) bool { return int32(a-b) <= 0 }
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }
func seqGE(a, b uint32) bool { return int32(a-b) >= 0 }

// connKey is the unordered pair of endpoints, lo before hi: addresses in
// their 16-byte form, and in one word both ports and whether each address
// is IPv4 (lo port<<33 | lo is4<<32 | hi port<<1 | hi is4). Unlike a pair
// of netip.AddrPort (64 bytes with pointers and padding) it is 40 bytes of
// plain memory: a smaller map slot, one hash over one block, nothing for
// the collector to scan. IPv6 zones are not kept: addresses decoded from
// packets have none.
type connKey struct {
	lo, hi [16]byte
	ports  uint64
}

func endpointKey(ap netip.AddrPort) (a [16]byte, p uint64) {
	ip := ap.Addr()
	a = ip.As16()
	p = uint64(ap.Port()) << 1
	if ip.Is4() {
		p |= 1
	}
	return a, p
}

func makeKey(src, dst netip.AddrPort) (k connKey, srcIsLo bool) {
	sa, sp := endpointKey(src)
	da, dp := endpointKey(dst)
	if c := bytes.Compare(sa[:], da[:]); c < 0 || c == 0 && sp <= dp {
		return connKey{sa, da, sp<<32 | dp}, true
	}
	return connKey{da, sa, dp<<32 | sp}, false
}

// nanos is a capture time as nanoseconds since 1970. Connections keep
// their times so (8 bytes instead of a time.Time's 24, and no pointer
// whose every write the collector must see); times beyond 2106 or before
// 1834 are clamped, far outside any capture.
func nanos(t time.Time) int64 {
	const lim = 1 << 32 // seconds
	s := t.Unix()
	if s > lim {
		s = lim
	} else if s < -lim {
		s = -lim
	}
	return s*1e9 + int64(t.Nanosecond())
}

// addSat is a+d, saturated rather than wrapped (a huge IdleTimeout).
func addSat(a int64, d time.Duration) int64 {
	if r := a + int64(d); r >= a || d < 0 {
		return r
	}
	return math.MaxInt64
}

// dir flags.
const (
	dirStarted    uint8 = 1 << iota // next is valid
	dirSYN                          // the SYN (isn) was seen
	dirFINPending                   // a FIN at finSeq is waiting for a hole
	dirEnded                        // End was reported
)

// dir is the state of one direction.
type dir struct {
	next uint32 // next sequence number to deliver
	isn  uint32
	// The last segment delivered whole and in order, by its CRC-32, so that
	// a retransmission of it that carries other bytes counts as a conflict.
	lastSeq, lastLen, lastSum uint32
	flags                     uint8   // here, in the padding before the pointers
	last                      *byte   // its first byte, with Config.StablePayloads (lastLen long)
	ooo                       *oooBuf // nil until out-of-order data or a pending FIN needs it
}

func (d *dir) buffered() int {
	if d.ooo == nil {
		return 0
	}
	return d.ooo.mem
}

func (d *dir) hasChunks() bool { return d.ooo != nil && d.ooo.head < len(d.ooo.chunks) }

// oooBuf holds the out-of-order chunks of one direction, sorted by
// sequence number and never overlapping one another.
type oooBuf struct {
	chunks []chunk // live chunks are chunks[head:]
	head   int
	mem    int       // bytes charged against the limits
	finAt  time.Time // capture time of the pending FIN
	finSeq uint32    // sequence number of the pending FIN
}

// chunk is a copy of out-of-order bytes. gapAfter bytes after it are
// known to be missing from the capture (snaplen truncation).
type chunk struct {
	seq      uint32
	gapAfter uint32
	at       time.Time
	data     []byte // pooled; len is the captured bytes
}

func (c *chunk) end() uint32 { return c.seq + uint32(len(c.data)) }

// Handshake progress.
const (
	hsNone   uint8 = iota
	hsSYN          // A's SYN seen
	hsSYNACK       // B's SYN-ACK seen: synAckRTT is known
	hsDone         // Handshake reported (or never will be)
)

// conn is one connection, or, once closed by FIN or RST, a tombstone that
// swallows its trailing segments until it idles out. It is what every
// tracked connection costs (MaxConns of them), hence the narrow fields.
type conn struct {
	key          connKey
	stream       Stream // nil once closed
	prev, next   *conn  // activity list, least recent first
	sprev, snext *conn  // the same, within its shard (see Shards)
	bprev, bnext *conn  // list of connections holding buffers
	lastSeen     int64  // nanos
	synTime      int64  // nanos
	synAckRTT    time.Duration
	firstPacket  uint64
	d            [2]dir
	// order is the opening order, to break firstPacket ties; compared
	// across wraparound (connections opened within 2^31 of each other).
	order     uint32
	aIsLo     bool
	hs        uint8
	closed    bool
	inBufList bool
	shard     uint8
}

// Assembler rebuilds TCP streams from segments. It is not safe for
// concurrent use; streams are called from the goroutine that calls Add.
//
// Connections. The key is the unordered pair of endpoints. A connection
// opens on a SYN, a SYN-ACK or a segment with data, never on a bare ACK,
// FIN or RST. Side A sent the SYN; with only a SYN-ACK its sender is B;
// with neither, A sent the first segment seen. Closed by FIN or RST, a
// connection stays as a tombstone that swallows its trailing segments until
// it idles out; a SYN with a new ISN on a tombstone, or on an open
// connection whose sender already had another ISN or sent data without a
// SYN, starts a new connection (the old one is closed with EndReused).
//
// Overlaps: first copy wins. Bytes before the next expected sequence number
// have been delivered and are dropped (Retransmitted, or Overlaps for the
// part of a segment that also carries new bytes); delivered bytes are not
// kept, but a whole retransmission of the last segment delivered in order
// is compared by CRC-32 and counts as a Conflict when it differs. Out-of-order bytes are copied into a
// per-direction buffer of non-overlapping chunks; a later segment that
// covers held bytes is trimmed to the bytes not held, and differing
// bytes in the covered part count as Conflicts (also when an in-order
// segment overlaps held chunks). Each chunk keeps its own capture time.
//
// Gaps. A hole before held data becomes Gap(side, n) and delivery resumes
// after it when: the peer ACKs beyond it (the bytes were received, the
// capture missed them for good); the direction's or the total buffer limit
// is hit (the oldest hole of the direction, or every hole of the connection
// that started buffering first); a FIN from that side arrives while data
// after the hole is held; an RST; the idle timeout; eviction; FlushAll.
// A snaplen-truncated segment delivers its captured bytes, then a Gap for
// the rest of its wire length (at the segment's capture time).
//
// FIN: End(side, EndFIN) once the data before it is delivered (a FIN
// ahead of a hole waits for the hole like data does); Close(EndFIN) when
// both sides ended. RST: what can be delivered is, holes become gaps, then
// End(side, EndRST) and Close(EndRST). Idle (capture time), eviction and
// end of input close with Close alone.
//
// Handshake(rtt) is reported once: latest SYN to the ACK that completes
// the handshake, or SYN to SYN-ACK when that ACK was not captured.
type Assembler struct {
	f     StreamFactory
	cfg   Config
	conns connTable

	lruHead, lruTail *conn
	bufHead, bufTail *conn
	// shards are the per-shard activity lists, counts and caps (see
	// Shards).
	shards []shardList
	// last is the connection of the previous segment: most segments
	// follow one of the same connection, and comparing the key is
	// cheaper than hashing it. The key is remembered with the endpoints
	// it was made from, to skip making it again for the same pair.
	last             *conn
	lastSrc, lastDst netip.AddrPort
	lastKey          connKey
	lastSrcIsLo      bool

	open     int // connections not closed
	now      time.Time
	nowNs    int64 // nanos(now)
	haveNow  bool
	lastScan int64 // nanos
	scanned  bool
	order    uint32
	buffered int // bytes charged by all out-of-order buffers

	pool    bufPool
	oooFree []*oooBuf
	stats   Stats
}

// NewAssembler returns an assembler that makes a Stream with f for every
// connection it opens.
func NewAssembler(f StreamFactory, cfg Config) *Assembler {
	a := &Assembler{
		f:     f,
		cfg:   cfg.withDefaults(),
		conns: newConnTable(),
	}
	a.shards = make([]shardList, Shards(a.cfg.MaxConns))
	for i := range a.shards { // MaxConns in all
		a.shards[i].cap = a.cfg.MaxConns / len(a.shards)
		if i < a.cfg.MaxConns%len(a.shards) {
			a.shards[i].cap++
		}
	}
	a.lastKey, a.lastSrcIsLo = makeKey(a.lastSrc, a.lastDst) // what the zero endpoints make
	return a
}

// Stats returns the counters so far.
func (a *Assembler) Stats() Stats { return a.stats }

// Open returns the number of open connections.
func (a *Assembler) Open() int { return a.open }

// piece is the in-order segment being delivered: its bytes are delivered
// straight from the caller's buffer, without a copy.
type piece struct {
	seq      uint32
	end      uint32 // end of the captured bytes
	data     []byte
	at       time.Time
	overlap  bool
	conflict bool
}

// Add processes one segment. seg.Payload is only read during the call.
// Segments are expected in capture order; time is taken from seg.Time
// only, never from the wall clock.
func (a *Assembler) Add(seg *capture.Segment) {
	ns := nanos(seg.Time)
	if !a.haveNow || ns > a.nowNs {
		a.now, a.nowNs = seg.Time, ns
		a.haveNow = true
	}
	if !a.scanned || a.nowNs-a.lastScan >= int64(scanEvery) {
		a.lastScan, a.scanned = a.nowNs, true
		a.expireIdle()
	}

	key, srcIsLo := a.keyOf(seg)
	syn := seg.Flags&capture.FlagSYN != 0
	ack := seg.Flags&capture.FlagACK != 0
	c := a.last
	if c == nil || c.key != key {
		c = a.conns.get(&key)
	}
	if c != nil {
		if dl := a.deadline(c); dl < a.nowNs {
			a.expire(c, a.timeAt(dl))
			c = nil
		}
	}
	if c != nil {
		s := sideOf(c, srcIsLo)
		d := &c.d[s]
		retransSYN := syn && d.flags&dirSYN != 0 && d.isn == seg.Seq
		if c.closed {
			// TIME_WAIT: ignore the trailing segments, but a SYN with a
			// new ISN starts a new connection on the same ports.
			if !syn || retransSYN {
				a.touch(c, ns)
				return
			}
			a.remove(c)
			c = nil
		} else if syn && !ack && !retransSYN && d.flags&dirStarted != 0 {
			// Port reuse: a SYN from a side that already has a different
			// ISN, or that was seen sending data without a SYN.
			a.flushConn(c, seg.Time)
			if !c.closed {
				a.closeConn(c, EndReused, seg.Time)
			}
			a.remove(c)
			c = nil
		}
	}
	if c == nil {
		// Only a SYN or a segment with data opens a connection: bare ACKs
		// and RSTs (the tail of a connection we never saw) do not.
		if seg.Flags&capture.FlagRST != 0 || !syn && len(seg.Payload) == 0 && !(seg.Truncated && seg.WireLen > 0) {
			return
		}
		c = a.openConn(key, srcIsLo, seg)
	}
	a.last = c
	a.touch(c, ns)
	a.segment(c, sideOf(c, srcIsLo), seg)
}

// keyOf is makeKey(seg.Src, seg.Dst), from the previous segment's when
// it has the same endpoints, either way round.
func (a *Assembler) keyOf(seg *capture.Segment) (connKey, bool) {
	switch {
	case seg.Src == a.lastSrc && seg.Dst == a.lastDst:
		return a.lastKey, a.lastSrcIsLo
	case seg.Src == a.lastDst && seg.Dst == a.lastSrc:
		return a.lastKey, !a.lastSrcIsLo
	}
	k, lo := makeKey(seg.Src, seg.Dst)
	a.lastSrc, a.lastDst, a.lastKey, a.lastSrcIsLo = seg.Src, seg.Dst, k, lo
	return k, lo
}

// deadline is when c idles out, in nanos.
func (a *Assembler) deadline(c *conn) int64 { return addSat(c.lastSeen, a.cfg.IdleTimeout) }

// timeAt turns nanos ns back into a time.Time, in the location of the
// capture's own times.
func (a *Assembler) timeAt(ns int64) time.Time { return a.now.Add(time.Duration(ns - a.nowNs)) }

func sideOf(c *conn, srcIsLo bool) Side {
	if c.aIsLo == srcIsLo {
		return SideA
	}
	return SideB
}

func (a *Assembler) openConn(key connKey, srcIsLo bool, seg *capture.Segment) *conn {
	sh := ShardOf(seg.Src, seg.Dst, len(a.shards))
	for a.shards[sh].n >= a.shards[sh].cap && a.shards[sh].victim() != nil {
		v := a.shards[sh].victim()
		if !v.closed {
			a.flushConn(v, a.now)
			if !v.closed {
				a.closeConn(v, EndEvicted, a.now)
			}
			a.stats.Evicted++
		}
		a.remove(v)
	}
	syn := seg.Flags&capture.FlagSYN != 0
	ack := seg.Flags&capture.FlagACK != 0
	c := &conn{key: key, firstPacket: seg.Packet, order: a.order, shard: uint8(sh)}
	a.order++
	info := ConnInfo{FirstSeen: seg.Time, FirstPacket: seg.Packet}
	if syn && ack {
		// Only the SYN-ACK was seen: its sender is B.
		c.aIsLo = !srcIsLo
		info.A, info.B = seg.Dst, seg.Src
	} else {
		c.aIsLo = srcIsLo
		info.A, info.B = seg.Src, seg.Dst
		info.Handshake = syn
	}
	c.stream = a.f.New(info)
	if c.stream == nil {
		c.stream = nopStream{}
	}
	a.conns.put(c)
	a.open++
	a.stats.Connections++
	return c
}

// segment applies seg, sent by side s, to the open connection c.
func (a *Assembler) segment(c *conn, s Side, seg *capture.Segment) {
	t := seg.Time
	d := &c.d[s]
	flags := seg.Flags
	syn := flags&capture.FlagSYN != 0
	ack := flags&capture.FlagACK != 0
	rst := flags&capture.FlagRST != 0
	dataSeq := seg.Seq

	switch {
	case syn && !ack:
		if d.flags&(dirSYN|dirStarted) != 0 {
			if d.flags&dirSYN != 0 && d.isn == seg.Seq && c.hs == hsSYN && s == SideA {
				// A retransmitted SYN: measure from the latest one, the
				// one the SYN-ACK most likely answers.
				c.synTime = nanos(t)
			}
			return
		}
		d.isn, d.next = seg.Seq, seg.Seq+1
		d.flags |= dirSYN | dirStarted
		if s == SideA && c.hs == hsNone {
			c.hs, c.synTime = hsSYN, nanos(t)
		}
		dataSeq++
	case syn && ack:
		if d.flags&(dirSYN|dirStarted) != 0 {
			return // retransmitted SYN-ACK, or a stray one
		}
		d.isn, d.next = seg.Seq, seg.Seq+1
		d.flags |= dirSYN | dirStarted
		if s == SideB && c.hs == hsSYN {
			c.hs, c.synAckRTT = hsSYNACK, time.Duration(nanos(t)-c.synTime)
		}
		dataSeq++
	default:
		if d.flags&dirStarted == 0 && !rst {
			d.next = seg.Seq
			d.flags |= dirStarted
		}
		if c.hs == hsSYNACK {
			if s == SideA {
				if ack && seqGE(seg.Ack, c.d[SideB].isn+1) {
					c.hs = hsDone
					c.stream.Handshake(time.Duration(nanos(t) - c.synTime))
				}
			} else {
				// B moved on without the final ACK being captured.
				c.hs = hsDone
				c.stream.Handshake(c.synAckRTT)
			}
		}
	}

	// The peer acknowledged bytes the capture never showed: they were
	// sent and received, so the hole is final.
	if ack {
		os := s.Other()
		o := &c.d[os]
		if o.flags&dirStarted != 0 && o.flags&dirEnded == 0 && seqGT(seg.Ack, o.next) {
			target := seg.Ack
			if o.flags&dirFINPending != 0 && seqGT(target, o.ooo.finSeq) {
				target = o.ooo.finSeq
			}
			a.release(c, os, target, t, nil)
			if c.closed {
				return
			}
		}
	}

	if rst {
		a.flushConn(c, t)
		if c.closed {
			return
		}
		if d.flags&dirEnded == 0 {
			d.flags |= dirEnded
			c.stream.End(s, EndRST, t)
		}
		a.closeConn(c, EndRST, t)
		return
	}
	if d.flags&dirStarted == 0 {
		return
	}

	n := len(seg.Payload)
	w := n
	if seg.Truncated && seg.WireLen > n {
		w = seg.WireLen
	}
	if d.flags&dirEnded != 0 {
		if w > 0 {
			a.stats.Retransmitted++
		}
		return
	}
	if w > 0 {
		a.data(c, s, dataSeq, seg.Payload, uint32(w-n), t)
		if c.closed {
			return
		}
	}
	if flags&capture.FlagFIN != 0 && d.flags&dirEnded == 0 {
		fs := dataSeq + uint32(w)
		if seqLE(fs, d.next) && d.flags&dirFINPending == 0 {
			a.endFIN(c, s, fs, t)
			return
		}
		if d.flags&dirFINPending == 0 {
			o := a.oooFor(c, s)
			o.finSeq = fs
			d.flags |= dirFINPending
			o.finAt = t
		}
		if d.hasChunks() || seqLE(d.ooo.finSeq, d.next) {
			// The sender is done and data after the hole is held: the
			// hole will not be filled.
			a.release(c, s, d.ooo.finSeq, t, nil)
		}
	}
}

// differs reports whether b, a retransmission of the last in-order
// segment of d (same sequence number and length), carries other bytes.
func (a *Assembler) differs(d *dir, b []byte) bool {
	if a.cfg.StablePayloads {
		return !bytes.Equal(b, unsafe.Slice(d.last, d.lastLen))
	}
	return crc32.ChecksumIEEE(b) != d.lastSum
}

// data handles the bytes [seq, seq+len(b)+gapAfter) sent by side s; the
// last gapAfter bytes were cut by the snapshot length.
func (a *Assembler) data(c *conn, s Side, seq uint32, b []byte, gapAfter uint32, t time.Time) {
	d := &c.d[s]
	capEnd := seq + uint32(len(b))
	end := capEnd + gapAfter
	for !c.closed && d.flags&dirEnded == 0 {
		if seqLE(end, d.next) {
			// Entirely delivered already (retransmission or duplicate).
			// First copy wins: delivered bytes are not kept, but a copy of
			// the last in-order segment is compared by its checksum.
			a.stats.Retransmitted++
			if len(b) > 0 && gapAfter == 0 && seq == d.lastSeq && uint32(len(b)) == d.lastLen && a.differs(d, b) {
				a.stats.Conflicts++
			}
			return
		}
		if seqLE(seq, d.next) {
			p := piece{seq: seq, end: capEnd, data: b, at: t}
			if seq != d.next {
				p.overlap = true
			} else if gapAfter == 0 {
				d.lastSeq, d.lastLen = seq, uint32(len(b))
				if a.cfg.StablePayloads {
					d.last = unsafe.SliceData(b) // a pointer, not a slice: conn stays small
				} else {
					d.lastSum = crc32.ChecksumIEEE(b)
				}
			}
			a.release(c, s, end, t, &p)
			if p.overlap {
				a.stats.Overlaps++
			}
			if p.conflict {
				a.stats.Conflicts++
			}
			return
		}
		// Ahead of a hole: buffer a copy, within the limits. When a limit
		// is hit the oldest hole becomes a gap and delivery resumes.
		need := chunkOverhead + classCap(len(b))
		if d.buffered()+need > a.cfg.MaxBufferedPerConn {
			a.releaseFirstHole(c, s, seq, t)
			continue
		}
		if a.buffered+need > a.cfg.MaxBufferedTotal {
			switch v := a.bufHead; {
			case v == nil:
				a.release(c, s, seq, t, nil)
			case v != c:
				a.flushConn(v, t)
			case d.hasChunks():
				a.releaseFirstHole(c, s, seq, t)
			default:
				a.flushSide(c, s.Other(), t)
			}
			continue
		}
		a.insert(c, s, seq, b, gapAfter, t)
		return
	}
}

// releaseFirstHole turns the first hole of side s into a gap, stopping
// at seq (the segment being buffered) if that comes first.
func (a *Assembler) releaseFirstHole(c *conn, s Side, seq uint32, t time.Time) {
	d := &c.d[s]
	target := seq
	if d.hasChunks() && seqLT(d.ooo.chunks[d.ooo.head].seq, target) {
		target = d.ooo.chunks[d.ooo.head].seq
	}
	a.release(c, s, target, t, nil)
}

// release delivers side s up to target: buffered chunks and the in-order
// piece cur (which must start at or before next) as data, holes as gaps.
// Then it delivers the chunks that have become contiguous, and the FIN if
// it is reached. Buffered chunks come first where they overlap cur: first
// copy wins.
func (a *Assembler) release(c *conn, s Side, target uint32, at time.Time, cur *piece) {
	d := &c.d[s]
	// A snaplen gap after a chunk is reported at the chunk's time.
	var truncEnd uint32
	var truncAt time.Time
	hasTrunc := false
	for {
		if d.flags&dirFINPending != 0 && seqGE(d.next, d.ooo.finSeq) {
			a.endFIN(c, s, d.ooo.finSeq, d.ooo.finAt)
			return
		}
		var ch *chunk
		if d.hasChunks() {
			ch = &d.ooo.chunks[d.ooo.head]
		}
		if ch != nil && seqLE(ch.seq, d.next) {
			chAt := ch.at
			t := a.popChunk(c, s, cur)
			if seqGT(t, d.next) {
				truncEnd, truncAt, hasTrunc = t, chAt, true
			}
			if seqGT(t, target) {
				target = t
			}
			continue
		}
		if !seqLT(d.next, target) {
			return
		}
		if cur != nil && seqLE(cur.seq, d.next) && seqLT(d.next, cur.end) {
			lim := cur.end
			if ch != nil && seqLT(ch.seq, lim) {
				lim = ch.seq
			}
			off := d.next - cur.seq
			c.stream.Data(s, cur.data[off:off+(lim-d.next)], cur.at)
			d.next = lim
			continue
		}
		lim := target
		if ch != nil && seqLT(ch.seq, lim) {
			lim = ch.seq
		}
		gapAt := at
		if hasTrunc && seqLT(d.next, truncEnd) {
			gapAt = truncAt
			if seqLT(truncEnd, lim) {
				lim = truncEnd
			}
		}
		a.gap(c, s, lim-d.next, gapAt)
		d.next = lim
	}
}

// popChunk delivers the first chunk of side s (which starts at or before
// next) and frees it. It returns the end of the bytes it accounts for,
// including a snaplen gap after it.
func (a *Assembler) popChunk(c *conn, s Side, cur *piece) uint32 {
	d := &c.d[s]
	o := d.ooo
	ch := o.chunks[o.head]
	o.chunks[o.head] = chunk{}
	o.head++
	end := ch.end()
	if seqGT(end, d.next) {
		if cur != nil {
			// Compare with the in-order segment where they overlap.
			lo, hi := ch.seq, end
			if seqLT(lo, cur.seq) {
				lo = cur.seq
			}
			if seqGT(hi, cur.end) {
				hi = cur.end
			}
			if seqLT(lo, hi) {
				cur.overlap = true
				if !bytes.Equal(cur.data[lo-cur.seq:hi-cur.seq], ch.data[lo-ch.seq:hi-ch.seq]) {
					cur.conflict = true
				}
			}
		}
		c.stream.Data(s, ch.data[d.next-ch.seq:], ch.at)
		d.next = end
	}
	a.freeChunk(c, o, &ch)
	if o.head == len(o.chunks) {
		o.chunks = o.chunks[:0]
		o.head = 0
		if d.flags&dirFINPending == 0 {
			a.freeOOO(c, s)
		}
	}
	return end + ch.gapAfter
}

func (a *Assembler) gap(c *conn, s Side, n uint32, at time.Time) {
	if n == 0 {
		return
	}
	a.stats.Gaps++
	a.stats.GapBytes += uint64(n)
	c.stream.Gap(s, int64(n), at)
}

// endFIN reports the FIN of side s at sequence fs.
func (a *Assembler) endFIN(c *conn, s Side, fs uint32, at time.Time) {
	d := &c.d[s]
	d.flags = d.flags&^dirFINPending | dirEnded
	if seqGT(fs+1, d.next) {
		d.next = fs + 1
	}
	a.dropBuffers(c, s)
	c.stream.End(s, EndFIN, at)
	if c.d[s.Other()].flags&dirEnded != 0 {
		a.closeConn(c, EndFIN, at)
	}
}

// flushConn delivers everything buffered on both sides, holes as gaps.
func (a *Assembler) flushConn(c *conn, at time.Time) {
	a.flushSide(c, SideA, at)
	a.flushSide(c, SideB, at)
}

// flushSide delivers everything side s holds, holes as gaps, and its
// pending FIN.
func (a *Assembler) flushSide(c *conn, s Side, at time.Time) {
	d := &c.d[s]
	if c.closed || d.flags&dirEnded != 0 || d.ooo == nil {
		return
	}
	target := d.next
	o := d.ooo
	if n := len(o.chunks); n > o.head {
		last := &o.chunks[n-1]
		target = last.end() + last.gapAfter
	}
	if d.flags&dirFINPending != 0 && seqGT(o.finSeq, target) {
		target = o.finSeq
	}
	a.release(c, s, target, at, nil)
}

// closeConn reports Close and frees the connection's buffers. Closed by
// FIN or RST, the connection stays as a tombstone until it idles out.
func (a *Assembler) closeConn(c *conn, reason EndReason, at time.Time) {
	if c.hs == hsSYNACK {
		c.hs = hsDone
		c.stream.Handshake(c.synAckRTT)
	}
	a.dropBuffers(c, SideA)
	a.dropBuffers(c, SideB)
	st := c.stream
	c.stream = nil
	c.closed = true
	a.shards[c.shard].entomb(c)
	a.open--
	st.Close(reason, at)
}

// remove forgets c entirely; it must be closed already or be closed by
// the caller's loop (tombstones need nothing).
func (a *Assembler) remove(c *conn) {
	if !c.closed {
		panic("reassembly: remove of an open connection")
	}
	a.conns.remove(c)
	a.lruUnlink(c)
	a.shards[c.shard].unlink(c)
	if a.last == c {
		a.last = nil
	}
}

// expire closes c for idleness at its deadline, or forgets a tombstone.
func (a *Assembler) expire(c *conn, at time.Time) {
	if !c.closed {
		a.flushConn(c, at)
		if !c.closed {
			a.closeConn(c, EndIdle, at)
			a.stats.IdleFlushed++
		}
	}
	a.remove(c)
}

func (a *Assembler) expireIdle() {
	for c := a.lruHead; c != nil; c = a.lruHead {
		dl := a.deadline(c)
		if dl >= a.nowNs {
			return
		}
		a.expire(c, a.timeAt(dl))
	}
}

// FlushAll ends the input at time at: every open connection delivers what
// it holds (holes become gaps) and is closed with EndCapture, in the order
// of the packet that opened it. The assembler is empty afterwards.
func (a *Assembler) FlushAll(at time.Time) {
	open := make([]*conn, 0, a.open)
	for c := a.lruHead; c != nil; c = c.next {
		if !c.closed {
			open = append(open, c)
		}
	}
	slices.SortFunc(open, func(x, y *conn) int {
		if x.firstPacket != y.firstPacket {
			if x.firstPacket < y.firstPacket {
				return -1
			}
			return 1
		}
		if int32(x.order-y.order) < 0 {
			return -1
		}
		return 1
	})
	for _, c := range open {
		a.flushConn(c, at)
		if !c.closed {
			a.closeConn(c, EndCapture, at)
		}
	}
	for c := a.lruHead; c != nil; c = a.lruHead {
		a.remove(c)
	}
	a.conns.reset()
	a.last = nil
}

// Activity list.

// touch marks c active at ns, the time of its segment: its own latest
// time, not the clock (the latest time of any connection's), so that when
// capture time goes back a little its idle deadline is the same however
// the connections are spread over assemblers.
func (a *Assembler) touch(c *conn, ns int64) {
	c.lastSeen = max(c.lastSeen, ns)
	if a.lruTail == c {
		return
	}
	a.shards[c.shard].moveToTail(c)
	if c.prev != nil || a.lruHead == c {
		a.lruUnlink(c)
	}
	c.prev = a.lruTail
	c.next = nil
	if a.lruTail != nil {
		a.lruTail.next = c
	} else {
		a.lruHead = c
	}
	a.lruTail = c
}

func (a *Assembler) lruUnlink(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else if a.lruHead == c {
		a.lruHead = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else if a.lruTail == c {
		a.lruTail = c.prev
	}
	c.prev, c.next = nil, nil
}

// Buffers.

// oooFor returns the buffer of side s, allocating it if needed.
func (a *Assembler) oooFor(c *conn, s Side) *oooBuf {
	d := &c.d[s]
	if d.ooo == nil {
		if n := len(a.oooFree); n > 0 {
			d.ooo = a.oooFree[n-1]
			a.oooFree[n-1] = nil
			a.oooFree = a.oooFree[:n-1]
		} else {
			d.ooo = &oooBuf{}
		}
	}
	return d.ooo
}

// freeOOO returns the empty buffer of side s to the free list.
func (a *Assembler) freeOOO(c *conn, s Side) {
	d := &c.d[s]
	o := d.ooo
	if o == nil {
		return
	}
	d.ooo = nil
	d.flags &^= dirFINPending
	if cap(o.chunks) > 1024 {
		o.chunks = nil
	}
	*o = oooBuf{chunks: o.chunks[:0]}
	if len(a.oooFree) < 1024 {
		a.oooFree = append(a.oooFree, o)
	}
}

// dropBuffers discards what side s still holds.
func (a *Assembler) dropBuffers(c *conn, s Side) {
	o := c.d[s].ooo
	if o == nil {
		return
	}
	for i := o.head; i < len(o.chunks); i++ {
		a.stats.DroppedBuffers += uint64(len(o.chunks[i].data))
		a.freeChunk(c, o, &o.chunks[i])
		o.chunks[i] = chunk{}
	}
	o.chunks = o.chunks[:0]
	o.head = 0
	a.freeOOO(c, s)
}

func (a *Assembler) freeChunk(c *conn, o *oooBuf, ch *chunk) {
	charge := chunkOverhead + cap(ch.data)
	o.mem -= charge
	a.buffered -= charge
	if ch.data != nil {
		a.pool.put(ch.data)
	}
	if c.inBufList && c.d[0].buffered() == 0 && c.d[1].buffered() == 0 {
		a.bufUnlink(c)
	}
}

// insert buffers a copy of b at seq, ahead of next. Where it overlaps
// chunks already held, those win (first copy wins) and differing bytes
// count as a conflict.
func (a *Assembler) insert(c *conn, s Side, seq uint32, b []byte, gapAfter uint32, at time.Time) {
	o := a.oooFor(c, s)
	end := seq + uint32(len(b))
	// First live chunk that ends after seq.
	lo, hi := o.head, len(o.chunks)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if seqGT(o.chunks[m].end(), seq) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	i := lo
	pos := seq
	var overlap, conflict, stored bool
	for i < len(o.chunks) && seqLT(o.chunks[i].seq, end) {
		if seqLT(pos, o.chunks[i].seq) {
			i = a.insertAt(c, o, i, pos, b[pos-seq:o.chunks[i].seq-seq], 0, at)
			stored = true
		}
		ch := &o.chunks[i]
		l, h := pos, ch.end()
		if seqLT(l, ch.seq) {
			l = ch.seq
		}
		if seqGT(h, end) {
			h = end
		}
		if seqLT(l, h) {
			overlap = true
			if !bytes.Equal(b[l-seq:h-seq], ch.data[l-ch.seq:h-ch.seq]) {
				conflict = true
			}
			pos = h
		}
		i++
	}
	if seqLT(pos, end) || len(b) == 0 && gapAfter > 0 {
		covered := false
		if len(b) == 0 && i < len(o.chunks) && seqLE(o.chunks[i].seq, seq) {
			covered = true // an empty piece inside a held chunk
		}
		if !covered {
			a.insertAt(c, o, i, pos, b[pos-seq:], gapAfter, at)
			stored = true
			gapAfter = 0
		}
	}
	if gapAfter > 0 {
		// The end of the truncated segment lies in a held chunk: extend
		// that chunk's known gap instead.
		j := i - 1
		if len(b) == 0 {
			j = i
		}
		if j >= o.head && j < len(o.chunks) {
			ch := &o.chunks[j]
			if t := end + gapAfter; seqGT(t, ch.end()+ch.gapAfter) {
				ch.gapAfter = t - ch.end()
				stored = true
			}
		}
	}
	switch {
	case stored:
		a.stats.OutOfOrder++
		if overlap {
			a.stats.Overlaps++
		}
	case overlap:
		a.stats.Retransmitted++
	}
	if conflict {
		a.stats.Conflicts++
	}
	if o.head == len(o.chunks) {
		o.chunks = o.chunks[:0]
		o.head = 0
		if c.d[s].flags&dirFINPending == 0 {
			a.freeOOO(c, s)
		}
	}
}

// insertAt stores a copy of b as a chunk at index i and returns the index
// after it.
func (a *Assembler) insertAt(c *conn, o *oooBuf, i int, seq uint32, b []byte, gapAfter uint32, at time.Time) int {
	ch := chunk{seq: seq, gapAfter: gapAfter, at: at}
	if len(b) > 0 {
		ch.data = a.pool.get(len(b))
		copy(ch.data, b)
	}
	charge := chunkOverhead + cap(ch.data)
	o.mem += charge
	a.buffered += charge
	if uint64(a.buffered) > a.stats.BufferedPeak {
		a.stats.BufferedPeak = uint64(a.buffered)
	}
	if !c.inBufList {
		a.bufLink(c)
	}
	if o.head > 0 && len(o.chunks) == cap(o.chunks) {
		n := copy(o.chunks, o.chunks[o.head:])
		clear(o.chunks[n:])
		o.chunks = o.chunks[:n]
		i -= o.head
		o.head = 0
	}
	o.chunks = slices.Insert(o.chunks, i, ch)
	return i + 1
}

func (a *Assembler) bufLink(c *conn) {
	c.inBufList = true
	c.bprev = a.bufTail
	c.bnext = nil
	if a.bufTail != nil {
		a.bufTail.bnext = c
	} else {
		a.bufHead = c
	}
	a.bufTail = c
}

func (a *Assembler) bufUnlink(c *conn) {
	c.inBufList = false
	if c.bprev != nil {
		c.bprev.bnext = c.bnext
	} else {
		a.bufHead = c.bnext
	}
	if c.bnext != nil {
		c.bnext.bprev = c.bprev
	} else {
		a.bufTail = c.bprev
	}
	c.bprev, c.bnext = nil, nil
}

// bufPool recycles chunk buffers in power-of-two classes from 64 B to
// 64 KiB, keeping at most maxPooled bytes on hand.
type bufPool struct {
	free [nClasses][][]byte
	held int
}

const (
	minClassShift = 6
	nClasses      = 11 // 64 B .. 64 KiB
	maxPooled     = 4 << 20
)

func classOf(n int) int {
	c := 0
	for (1 << (c + minClassShift)) < n {
		c++
	}
	return c
}

// classCap is the capacity get(n) returns.
func classCap(n int) int {
	if n == 0 {
		return 0
	}
	if c := classOf(n); c < nClasses {
		return 1 << (c + minClassShift)
	}
	return n
}

func (p *bufPool) get(n int) []byte {
	c := classOf(n)
	if c >= nClasses {
		return make([]byte, n)
	}
	if l := len(p.free[c]); l > 0 {
		b := p.free[c][l-1]
		p.free[c][l-1] = nil
		p.free[c] = p.free[c][:l-1]
		p.held -= cap(b)
		return b[:n]
	}
	return make([]byte, n, 1<<(c+minClassShift))
}

func (p *bufPool) put(b []byte) {
	c := classOf(cap(b))
	if c >= nClasses || cap(b) != 1<<(c+minClassShift) || p.held+cap(b) > maxPooled {
		return
	}
	p.held += cap(b)
	p.free[c] = append(p.free[c], b[:0])
}

type nopStream struct{}

func (nopStream) Handshake(time.Duration)        {}
func (nopStream) Data(Side, []byte, time.Time)   {}
func (nopStream) Gap(Side, int64, time.Time)     {}
func (nopStream) End(Side, EndReason, time.Time) {}
func (nopStream) Close(EndReason, time.Time)     {}

// Shards is the number of shards MaxConns is split into: a connection
// belongs to shard ShardOf(its endpoints, Shards(MaxConns)), and each
// shard holds at most its part of MaxConns (MaxConns/Shards, one more for
// the first MaxConns%Shards), evicting its own least recently active one. A pipeline that gives each worker whole shards
// (ShardOf(a, b, Shards(MaxConns)) % workers) and every worker the same
// Config then evicts the very connections a single Assembler would: the
// output does not depend on the number of workers. Shards hold at least
// 256 connections (fewer shards for a small MaxConns), so that the cap is
// reached about when MaxConns connections are open.
func Shards(maxConns int) int {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return min(max(maxConns/256, 1), 64)
}

// ShardOf returns the shard, in [0, n), of the connection between a and b
// (either way round).
func ShardOf(a, b netip.AddrPort, n int) int {
	h := foldAP(a) + foldAP(b) // the same both ways
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 29
	return int(((h >> 32) * uint64(n)) >> 32) // the top half scaled to [0, n): no division
}

// foldAP folds an endpoint into 64 bits; ShardOf mixes the sum. An IPv4
// address is read as 4 bytes: going through As16 cost a store-forwarding
// stall per packet.
func foldAP(ap netip.AddrPort) uint64 {
	a := ap.Addr()
	var h uint64
	if a.Is4() {
		b := a.As4()
		h = uint64(binary.LittleEndian.Uint32(b[:]))
	} else {
		b := a.As16()
		h = binary.LittleEndian.Uint64(b[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(b[8:])
	}
	return h*0x9e3779b97f4a7c15 ^ uint64(ap.Port())<<7
}

// shardList is a shard's activity lists, least recent first, and how
// many connections it may hold.
type shardList struct {
	// live and tombs hold the shard's open and closed connections, each
	// least recently active first: a tombstone is dropped before any open
	// connection is evicted. Kept in one list, a connection that waited a
	// second for its 100 Continue was evicted on a busy capture while the
	// thousands that closed in that second stayed as tombstones.
	live, tombs connList
	n, cap      int // connections in both; the most allowed
}

// connList is a list of connections through their sprev and snext.
type connList struct{ head, tail *conn }

// has reports whether c, which is in this list or in none, is in it.
func (l *connList) has(c *conn) bool { return c.sprev != nil || l.head == c }

func (l *connList) push(c *conn) {
	c.sprev, c.snext = l.tail, nil
	if l.tail != nil {
		l.tail.snext = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) unlink(c *conn) {
	if c.sprev != nil {
		c.sprev.snext = c.snext
	} else {
		l.head = c.snext
	}
	if c.snext != nil {
		c.snext.sprev = c.sprev
	} else {
		l.tail = c.sprev
	}
	c.sprev, c.snext = nil, nil
}

// of is the list c belongs in.
func (l *shardList) of(c *conn) *connList {
	if c.closed {
		return &l.tombs
	}
	return &l.live
}

func (l *shardList) moveToTail(c *conn) {
	list := l.of(c)
	if list.tail == c {
		return
	}
	if list.has(c) {
		list.unlink(c)
	} else {
		l.n++
	}
	list.push(c)
}

// unlink takes c out of the shard, if it is in it.
func (l *shardList) unlink(c *conn) {
	if list := l.of(c); list.has(c) {
		list.unlink(c)
		l.n--
	}
}

// entomb moves c, just closed, from the open connections to the
// tombstones, as the most recently active one.
func (l *shardList) entomb(c *conn) {
	if l.live.has(c) {
		l.live.unlink(c)
		l.tombs.push(c)
	}
}

// victim is the connection to drop for room: the least recently active
// tombstone, else the least recently active open connection.
func (l *shardList) victim() *conn {
	if l.tombs.head != nil {
		return l.tombs.head
	}
	return l.live.head
}
