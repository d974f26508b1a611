package reassembly

import (
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/expectscope/expectscope/capture"
)

// countFactory makes streams that only count calls.
type countFactory struct {
	opened, closed int
	bytes          int
}

type countStream struct{ f *countFactory }

func (f *countFactory) New(ConnInfo) Stream              { f.opened++; return countStream{f} }
func (countStream) Handshake(time.Duration)              {}
func (s countStream) Data(_ Side, b []byte, _ time.Time) { s.f.bytes += len(b) }
func (countStream) Gap(Side, int64, time.Time)           {}
func (countStream) End(Side, EndReason, time.Time)       {}
func (s countStream) Close(EndReason, time.Time)         { s.f.closed++ }

func TestConnStateSmall(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 300 {
		t.Errorf("conn is %d bytes, want <= 300", n)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// synFlood feeds n SYNs from distinct endpoints, none answered.
func synFlood(a *Assembler, n int) {
	seg := &capture.Segment{Dst: srv, Flags: capture.FlagSYN}
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		seg.Src = netip.AddrPortFrom(ip, uint16(1024+i%50000))
		seg.Seq = uint32(i) * 7919
		seg.Time = base.Add(time.Duration(i) * time.Microsecond)
		seg.Packet = uint64(i + 1)
		a.Add(seg)
	}
}

func TestSYNFloodBounded(t *testing.T) {
	const maxConns = 10000
	before := heapInUse()
	f := &countFactory{}
	a := NewAssembler(f, Config{MaxConns: maxConns})
	synFlood(a, 200000)
	if a.open > maxConns || a.conns.len() > maxConns {
		t.Fatalf("open %d, tracked %d, want <= %d", a.open, a.conns.len(), maxConns)
	}
	after := heapInUse()
	grew := int64(after) - int64(before)
	// ~250 B of state + map slot + stream per connection.
	if grew > 8<<20 {
		t.Errorf("heap grew %d bytes for %d connections", grew, maxConns)
	}
	st := a.Stats()
	if st.Connections != 200000 || st.Evicted != 200000-maxConns {
		t.Errorf("stats %+v", st)
	}
	a.FlushAll(base.Add(time.Hour))
	if f.closed != f.opened {
		t.Errorf("opened %d, closed %d", f.opened, f.closed)
	}
	runtime.KeepAlive(a)
}

// BenchmarkSYNFlood is the full million SYNs with the default limits.
func BenchmarkSYNFlood(b *testing.B) {
	for b.Loop() {
		before := heapInUse()
		a := NewAssembler(&countFactory{}, Config{})
		synFlood(a, 1000000)
		b.ReportMetric(float64(int64(heapInUse())-int64(before))/(1<<20), "heapMiB")
		b.ReportMetric(float64(a.open), "open")
		runtime.KeepAlive(a)
	}
}

func TestBufferTotalBounded(t *testing.T) {
	// Many connections each holding out-of-order data: the total stays
	// under the limit and everything is delivered or gapped.
	f := &countFactory{}
	cfg := Config{MaxBufferedTotal: 1 << 20, MaxBufferedPerConn: 64 << 10}
	a := NewAssembler(f, cfg)
	payload := make([]byte, 1000)
	seg := &capture.Segment{Dst: srv, Flags: capture.FlagACK, Payload: payload, WireLen: len(payload)}
	for i := range 5000 {
		seg.Src = netip.AddrPortFrom(cli.Addr(), uint16(1+i%500))
		seg.Seq = uint32(100 + 1000*(i/500)*2) // every other segment missing
		seg.Time = base.Add(time.Duration(i) * time.Millisecond)
		a.Add(seg)
		if a.buffered > cfg.MaxBufferedTotal {
			t.Fatalf("buffered %d > %d", a.buffered, cfg.MaxBufferedTotal)
		}
	}
	a.FlushAll(base.Add(time.Hour))
	if f.bytes != 5000*1000 {
		t.Errorf("delivered %d bytes, want %d", f.bytes, 5000*1000)
	}
	if a.buffered != 0 || f.closed != f.opened {
		t.Errorf("buffered %d, opened %d closed %d", a.buffered, f.opened, f.closed)
	}
}

func benchConn(b *testing.B) (*Assembler, *countFactory) {
	f := &countFactory{}
	a := NewAssembler(f, Config{})
	for _, g := range handshake(ci, si) {
		a.Add(g.segment(1))
	}
	return a, f
}

func BenchmarkInOrder(b *testing.B) {
	a, _ := benchConn(b)
	payload := make([]byte, 1400)
	data := &capture.Segment{Src: cli, Dst: srv, Flags: fPA, Seq: ci + 1, Ack: si + 1, Payload: payload, WireLen: len(payload)}
	ack := &capture.Segment{Src: srv, Dst: cli, Flags: fA, Seq: si + 1, Ack: ci + 1}
	t := base.Add(time.Second)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		t = t.Add(time.Microsecond)
		data.Time = t
		a.Add(data)
		data.Seq += uint32(len(payload))
		ack.Ack = data.Seq
		ack.Time = t
		a.Add(ack)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/segment")
}

func BenchmarkOutOfOrder(b *testing.B) {
	a, _ := benchConn(b)
	payload := make([]byte, 1400)
	seg := &capture.Segment{Src: cli, Dst: srv, Flags: fPA, Ack: si + 1, Payload: payload, WireLen: len(payload)}
	seq := uint32(ci + 1)
	t := base.Add(time.Second)
	b.ReportAllocs()
	b.SetBytes(int64(2 * len(payload)))
	for b.Loop() {
		// Each pair arrives swapped: the second is held, then released.
		t = t.Add(time.Microsecond)
		seg.Time = t
		seg.Seq = seq + uint32(len(payload))
		a.Add(seg)
		seg.Seq = seq
		a.Add(seg)
		seq += 2 * uint32(len(payload))
	}
}

// TestConnMemory: what a tracked connection costs the assembler bounds
// how many fit the 100 MiB goal (issue 7). The conn is 232 bytes (208,
// plus its place in its shard's activity list, which makes eviction the
// same whatever the number of workers), in the 240-byte size class; its
// slot in the index adds 8 bytes over a load between 3/8 and 3/4, at
// most 21.
func TestConnMemory(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 232 {
		t.Errorf("conn is %d bytes, want <= 232", n)
	}
	for _, n := range []int{10000, 40000} {
		before := heapInUse()
		a := NewAssembler(&countFactory{}, Config{MaxConns: n})
		synFlood(a, 2*n)
		per := float64(int64(heapInUse())-int64(before)) / float64(a.conns.len())
		runtime.KeepAlive(a)
		t.Logf("%d connections: %.0f bytes each", n, per)
		if per > 264 {
			t.Errorf("%d connections: %.0f bytes each, want <= 264", n, per)
		}
	}
}

// BenchmarkInterleaved is uploads on 64 connections at once, a data
// segment and its ACK in turn on each: the per-segment path with a
// connection lookup for every other segment.
func BenchmarkInterleaved(b *testing.B) {
	const n = 64
	a := NewAssembler(&countFactory{}, Config{})
	payload := make([]byte, 1400)
	type pair struct{ data, ack capture.Segment }
	conns := make([]pair, n)
	t := base.Add(time.Second)
	for i := range conns {
		c := netip.AddrPortFrom(cli.Addr(), uint16(40000+i))
		for _, g := range handshake(ci, si) {
			s := g.segment(1)
			if s.Src == cli {
				s.Src = c
			} else {
				s.Dst = c
			}
			a.Add(s)
		}
		conns[i] = pair{
			data: capture.Segment{Src: c, Dst: srv, Flags: fPA, Seq: ci + 1, Ack: si + 1, Payload: payload, WireLen: len(payload)},
			ack:  capture.Segment{Src: srv, Dst: c, Flags: fA, Seq: si + 1, Ack: ci + 1},
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	i := 0
	for b.Loop() {
		p := &conns[i%n]
		i++
		t = t.Add(time.Microsecond)
		p.data.Time = t
		a.Add(&p.data)
		p.data.Seq += uint32(len(payload))
		p.ack.Ack = p.data.Seq
		p.ack.Time = t
		a.Add(&p.ack)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/segment")
}

// TestMaxConnsFor: the cap that fits a memory limit, one connection per
// ConnBudget bytes within [1024, DefaultMaxConns].
func TestMaxConnsFor(t *testing.T) {
	tests := []struct {
		limit int64
		want  int
	}{
		{0, DefaultMaxConns},
		{math.MaxInt64, DefaultMaxConns},
		{1 << 20, 1024},
		{70 << 20, 20480},
		{128 << 20, 37449},
		{224 << 20, DefaultMaxConns},
		{223 << 20, 65243},
		{1 << 40, DefaultMaxConns},
	}
	for _, tt := range tests {
		if got := MaxConnsFor(tt.limit); got != tt.want {
			t.Errorf("MaxConnsFor(%d) = %d, want %d", tt.limit, got, tt.want)
		}
	}
}

// endFactory records how each connection, by its first packet, ended.
type endFactory struct{ ends map[uint64]EndReason }

type endStream struct {
	f  *endFactory
	id uint64
}

func (f *endFactory) New(i ConnInfo) Stream        { return endStream{f, i.FirstPacket} }
func (endStream) Handshake(time.Duration)          {}
func (endStream) Data(Side, []byte, time.Time)     {}
func (endStream) Gap(Side, int64, time.Time)       {}
func (endStream) End(Side, EndReason, time.Time)   {}
func (s endStream) Close(r EndReason, _ time.Time) { s.f.ends[s.id] = r }

// TestEvictionSameWhateverTheSplit: connections split among assemblers
// by whole shards (as pipeline workers take them), each with the same
// Config, are evicted exactly as by one assembler: the output of a run
// does not depend on the number of workers even when MaxConns is hit.
func TestEvictionSameWhateverTheSplit(t *testing.T) {
	const maxConns, n = 3000, 20000
	r := rand.New(rand.NewPCG(4, 5))
	var segs []capture.Segment
	var open []netip.AddrPort
	for i := range n {
		// Open a connection, or send data on one opened earlier (so that
		// activity, not only age, decides who is evicted).
		seg := capture.Segment{Dst: srv, Time: base.Add(time.Duration(i) * time.Millisecond), Packet: uint64(i + 1)}
		if len(open) > 0 && r.IntN(3) == 0 {
			seg.Src = open[r.IntN(len(open))]
			seg.Flags = capture.FlagACK
			seg.Payload = []byte("x")
			seg.Seq = uint32(r.IntN(1 << 20))
		} else {
			seg.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+r.IntN(60000)))
			seg.Flags = capture.FlagSYN
			seg.Seq = r.Uint32()
			open = append(open, seg.Src)
		}
		segs = append(segs, seg)
	}
	run := func(workers int) map[uint64]EndReason {
		f := &endFactory{ends: map[uint64]EndReason{}}
		asms := make([]*Assembler, workers)
		for w := range asms {
			asms[w] = NewAssembler(f, Config{MaxConns: maxConns})
		}
		for i := range segs {
			s := segs[i]
			w := ShardOf(s.Src, s.Dst, Shards(maxConns)) % workers
			asms[w].Add(&s)
		}
		for _, a := range asms {
			if a.Stats().Evicted == 0 {
				t.Fatalf("%d workers: nothing evicted", workers)
			}
			a.FlushAll(base.Add(time.Hour))
		}
		return f.ends
	}
	want := run(1)
	for _, w := range []int{2, 3, 5} {
		got := run(w)
		if !maps.Equal(got, want) {
			diff := 0
			for id, r := range want {
				if got[id] != r {
					diff++
				}
			}
			t.Errorf("%d workers: %d of %d connections end otherwise than with one", w, diff, len(want))
		}
	}
}
