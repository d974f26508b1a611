// Package gen synthesises deterministic packet captures of HTTP/1.1
// upload traffic with a known outcome for every Expect: 100-continue
// negotiation, for correctness tests at scale and for benchmarks.
//
// A capture is a set of sessions. A session is one scripted scenario
// (continued, rejected and retried, final before body, timed out, ...)
// over one or two TCP connections from its own client IP, so that no two
// sessions share a 4-tuple. Sessions run in Concurrency parallel slots,
// each slot running its sessions back to back; the packets of all slots
// are merged by time. The same Config always yields the same bytes.
package gen

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/expectscope/expectscope/capture"
)

// MSS is the largest TCP payload the generator puts in one segment.
const MSS = 1448

// Config says what to generate. Zero fields take the defaults.
type Config struct {
	Seed        uint64
	Sessions    int // number of sessions (default 1000)
	Concurrency int // sessions in flight at once (default 64)
	// BodyMin and BodyMax bound upload sizes (default 1 KiB .. 64 KiB).
	BodyMin, BodyMax int
	// Hold keeps each connection open (idle) this long after its last
	// exchange, to build captures with many concurrent connections.
	Hold time.Duration
	// Stagger spreads the first session of each slot over this much time
	// (default 1 ms per slot, at most 1 s).
	Stagger time.Duration
	// Loss, Reorder and Retrans are per-body-segment probabilities of a
	// segment missing from the capture (a gap), swapped with the next one,
	// and captured twice (a retransmission after the next segment).
	Loss, Reorder, Retrans float64
	// AckEvery: the receiver of a body acknowledges every n segments (default 8).
	AckEvery int
	// Start is the capture time of the first packet (default 2024-05-01 UTC).
	Start time.Time
	// Only restricts the mix to these scenarios (by name); empty = all.
	Only []string
}

func (c *Config) defaults() {
	if c.Sessions <= 0 {
		c.Sessions = 1000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.BodyMin <= 0 {
		c.BodyMin = 1 << 10
	}
	if c.BodyMax < c.BodyMin {
		c.BodyMax = max(c.BodyMin, 64<<10)
	}
	if c.Stagger <= 0 {
		c.Stagger = min(time.Duration(c.Concurrency)*time.Millisecond, time.Second)
	}
	if c.AckEvery <= 0 {
		c.AckEvery = 8
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	}
}

// Expectation is the known outcome of one negotiation (a request that
// carried Expect).
type Expectation struct {
	Scenario     string    `json:"scenario"`
	Client       string    `json:"client"` // ip:port of the connection the request was on
	Server       string    `json:"server"`
	Index        int       `json:"index"` // request index on that connection, from 1 as in record ids
	HeadersEndAt time.Time `json:"headers_end_at"`
	Verdict      string    `json:"verdict"`
	Flags        []string  `json:"flags"` // flags the record must carry (others may be present)
	Status       int       `json:"status"`
	// Gap is set when capture loss touched the connection: the verdict
	// may then be "incomplete" instead.
	Gap bool `json:"gap,omitempty"`
}

// Stats counts what was written.
type Stats struct {
	Packets, Bytes, Connections uint64
	Negotiations                int
	Scenarios                   map[string]int
}

// pkt is one segment of a session, times relative to the session start.
type pkt struct {
	t       time.Duration
	conn    uint8 // 0 or 1: which of the session's connections
	dir     uint8 // 0 client->server, 1 server->client
	flags   uint8
	seq     uint32
	ack     uint32
	payload []byte
}

type endpoint struct {
	client, server netip.AddrPort
}

// session is one scripted scenario in flight.
type session struct {
	idx    int
	start  time.Time
	conns  [2]endpoint
	pkts   []pkt
	pos    int
	exp    []Expectation
	gap    bool
	name   string
	slot   int
	nconns int
}

func (s *session) nextTime() time.Time { return s.start.Add(s.pkts[s.pos].t) }
func (s *session) end() time.Time      { return s.start.Add(s.pkts[len(s.pkts)-1].t) }

type sessHeap []*session

func (h sessHeap) Len() int { return len(h) }
func (h sessHeap) Less(i, j int) bool {
	ti, tj := h[i].nextTime(), h[j].nextTime()
	if !ti.Equal(tj) {
		return ti.Before(tj)
	}
	return h[i].idx < h[j].idx
}
func (h sessHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sessHeap) Push(x any)   { *h = append(*h, x.(*session)) }
func (h *sessHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

var filler, noise []byte

func init() {
	filler = make([]byte, 64<<10)
	for i := range filler {
		filler[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[i%36]
	}
	r := rand.New(rand.NewPCG(1, 2))
	noise = make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	// Make it unmistakably not HTTP from its first byte.
	noise[0] = 0x16
}

// Generate writes a pcap (Ethernet, nanosecond timestamps) to w and
// returns the expected outcome of every negotiation, in capture order of
// their sessions.
func Generate(w io.Writer, cfg Config) ([]Expectation, Stats, error) {
	cfg.defaults()
	bw := bufio.NewWriterSize(w, 1<<20)
	pw, err := capture.NewPcapWriter(bw, capture.LinkEthernet, 65535)
	if err != nil {
		return nil, Stats{}, err
	}
	g := &generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	g.mix = mixFor(cfg.Only)
	st := Stats{Scenarios: map[string]int{}}
	var exps []Expectation
	var h sessHeap
	next := 0
	slotFree := make([]time.Time, cfg.Concurrency)
	for i := range slotFree {
		slotFree[i] = cfg.Start.Add(cfg.Stagger * time.Duration(i) / time.Duration(cfg.Concurrency))
	}
	// Sessions are assigned to slots in order: session i runs in slot
	// i%Concurrency, after that slot's previous session ended.
	startSession := func(slot int) {
		if next >= cfg.Sessions {
			return
		}
		s := g.build(next, slotFree[slot])
		st.Scenarios[s.exp0name()]++
		next++
		slotFree[slot] = s.end().Add(time.Duration(50+g.rng.IntN(500)) * time.Microsecond)
		s.slot = slot
		heap.Push(&h, s)
	}
	for i := range cfg.Concurrency {
		startSession(i)
	}
	frame := make([]byte, 0, 14+20+24+MSS)
	for h.Len() > 0 {
		s := h[0]
		p := &s.pkts[s.pos]
		at := s.nextTime()
		frame = buildFrame(frame[:0], s.conns[p.conn], p)
		if err := pw.WritePacket(at, len(frame), frame); err != nil {
			return nil, st, err
		}
		st.Packets++
		st.Bytes += uint64(len(frame))
		s.pos++
		if s.pos == len(s.pkts) {
			heap.Pop(&h)
			for i := range s.exp {
				s.exp[i].Gap = s.gap
			}
			exps = append(exps, s.exp...)
			st.Connections += uint64(s.nconns)
			startSession(s.slot)
		} else {
			heap.Fix(&h, 0)
		}
	}
	st.Negotiations = len(exps)
	return exps, st, bw.Flush()
}

// buildFrame appends an Ethernet/IPv4/TCP frame for p.
func buildFrame(b []byte, ep endpoint, p *pkt) []byte {
	src, dst := ep.client, ep.server
	if p.dir == 1 {
		src, dst = dst, src
	}
	// Ethernet.
	b = append(b, 0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00)
	if p.dir == 1 {
		b[5], b[11] = 1, 2
	}
	tcpLen := 20
	if p.flags&capture.FlagSYN != 0 {
		tcpLen = 24
	}
	total := 20 + tcpLen + len(p.payload)
	ip := len(b)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, 0x45, 0, byte(total>>8), byte(total), 0, 0, 0x40, 0, 64, 6, 0, 0)
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	var sum uint32
	for i := ip; i < ip+20; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[ip+10:], ^uint16(sum))
	// TCP (checksum left zero, as with checksum offload).
	var fl byte
	if p.flags&capture.FlagFIN != 0 {
		fl |= 0x01
	}
	if p.flags&capture.FlagSYN != 0 {
		fl |= 0x02
	}
	if p.flags&capture.FlagRST != 0 {
		fl |= 0x04
	}
	if p.flags&capture.FlagPSH != 0 {
		fl |= 0x08
	}
	if p.flags&capture.FlagACK != 0 {
		fl |= 0x10
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint32(b, p.seq)
	b = binary.BigEndian.AppendUint32(b, p.ack)
	b = append(b, byte(tcpLen/4)<<4, fl, 0xff, 0xff, 0, 0, 0, 0)
	if tcpLen == 24 {
		b = append(b, 2, 4, byte(MSS>>8), byte(MSS&0xff))
	}
	return append(b, p.payload...)
}

// ClientAddr is the client endpoint of connection c of session i.
func ClientAddr(i, c int) netip.AddrPort {
	n := uint32(i)
	ip := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
	return netip.AddrPortFrom(ip, uint16(20000+(i*7)%40000+c))
}

func itoa(n int) string { return strconv.Itoa(n) }
