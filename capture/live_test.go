package capture

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/bpf"
)

// ether frames an IP packet in an Ethernet header.
func ether(ip []byte) []byte { return cat(macs, be16(ethertypeOf(ip)), ip) }

// runFilter runs prog on frame in x/net/bpf's VM and reports whether the
// frame is kept.
func runFilter(t *testing.T, raw []bpf.RawInstruction, frame []byte) bool {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("program does not disassemble: %v", prog)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return n > 0
}

func TestBuildFilter(t *testing.T) {
	v4 := ipPacket(t, tpkt{payload: "GET / HTTP/1.1\r\n"})                                      // 10.0.0.1:40000 -> 10.0.0.2:80
	v4rev := ipPacket(t, tpkt{src: "10.0.0.2:80", dst: "10.0.0.1:40000"})                       // the answer
	v4other := ipPacket(t, tpkt{src: "10.0.0.1:40000", dst: "10.0.0.9:8080"})                   // another port and host
	v6 := ipPacket(t, tpkt{v6: true})                                                           // [2001:db8::1]:40000 -> [2001:db8::2]:80
	v6rev := ipPacket(t, tpkt{v6: true, src: "[2001:db8::2]:80", dst: "[2001:db8::1]:40000"})   // the answer
	v6other := ipPacket(t, tpkt{v6: true, src: "[2001:db8::1]:40000", dst: "[2001:db8::9]:81"}) // elsewhere
	udp := udpPacket(t)
	// A later fragment of a TCP datagram: offset 8 (units of 8 bytes).
	frag := append([]byte(nil), v4...)
	binary.BigEndian.PutUint16(frag[6:], 1)
	// A first fragment (more fragments, offset 0) keeps its ports.
	first := append([]byte(nil), v4...)
	binary.BigEndian.PutUint16(first[6:], 0x2000)
	arp := cat(macs, be16(0x0806), make([]byte, 28))

	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	cases := []struct {
		name string
		spec FilterSpec
		keep map[string]bool
	}{
		{"tcp", FilterSpec{}, map[string]bool{"v4": true, "v4rev": true, "v4other": true, "v6": true, "v6rev": true, "v6other": true, "frag": true, "first": true}},
		{"port 80", FilterSpec{Port: 80}, map[string]bool{"v4": true, "v4rev": true, "v6": true, "v6rev": true, "frag": true, "first": true}},
		{"port 8080", FilterSpec{Port: 8080}, map[string]bool{"v4other": true, "frag": true}},
		{"port 40000", FilterSpec{Port: 40000}, map[string]bool{"v4": true, "v4rev": true, "v4other": true, "v6": true, "v6rev": true, "v6other": true, "frag": true, "first": true}},
		{"host v4", FilterSpec{Hosts: []netip.Addr{a("10.0.0.2")}}, map[string]bool{"v4": true, "v4rev": true, "frag": true, "first": true}},
		{"port and host v4", FilterSpec{Port: 80, Hosts: []netip.Addr{a("10.0.0.9")}}, map[string]bool{}},
		{"port and host v4 other", FilterSpec{Port: 8080, Hosts: []netip.Addr{a("10.0.0.9")}}, map[string]bool{"v4other": true}},
		{"host v6", FilterSpec{Hosts: []netip.Addr{a("2001:db8::2")}}, map[string]bool{"v6": true, "v6rev": true}},
		{"host v6 src", FilterSpec{Hosts: []netip.Addr{a("2001:db8::1")}}, map[string]bool{"v6": true, "v6rev": true, "v6other": true}},
		{"port and host v6", FilterSpec{Port: 81, Hosts: []netip.Addr{a("2001:db8::9")}}, map[string]bool{"v6other": true}},
		{"host v4-mapped", FilterSpec{Hosts: []netip.Addr{a("::ffff:10.0.0.9")}}, map[string]bool{"v4other": true}},
		{"two hosts", FilterSpec{Port: 80, Hosts: []netip.Addr{a("10.0.0.7"), a("2001:db8::7"), a("10.0.0.1"), a("2001:db8::1")}},
			map[string]bool{"v4": true, "v4rev": true, "v6": true, "v6rev": true, "frag": true, "first": true}},
	}
	frames := map[string][]byte{"v4": v4, "v4rev": v4rev, "v4other": v4other, "v6": v6, "v6rev": v6rev, "v6other": v6other,
		"frag": frag, "first": first, "udp": udp}
	for _, c := range cases {
		for _, link := range []LinkType{LinkEthernet, LinkRaw} {
			prog, err := BuildFilter(link, c.spec)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			for name, ip := range frames {
				frame := ip
				if link == LinkEthernet {
					frame = ether(ip)
				}
				if got := runFilter(t, prog, frame); got != c.keep[name] {
					t.Errorf("%s, link %d, %s: kept %v, want %v", c.name, link, name, got, c.keep[name])
				}
			}
			if link == LinkEthernet && runFilter(t, prog, arp) {
				t.Errorf("%s: ARP kept", c.name)
			}
		}
	}
	if _, err := BuildFilter(LinkSLL, FilterSpec{}); err == nil {
		t.Error("BuildFilter(LinkSLL): no error")
	}
}

// tcpdumpDDD is `tcpdump -ddd -i lo 'tcp port 80 and host 10.1.2.3'`
// (tcpdump 4.99, libpcap 1.10).
const tcpdumpDDD = `18
40 0 0 12
21 15 0 34525
21 0 14 2048
48 0 0 23
21 0 12 6
40 0 0 20
69 10 0 8191
177 0 0 14
72 0 0 14
21 2 0 80
72 0 0 16
21 0 5 80
32 0 0 26
21 2 0 167838211
32 0 0 30
21 0 1 167838211
6 0 0 262144
6 0 0 0
`

func TestParseDDD(t *testing.T) {
	prog, err := ParseDDD(strings.NewReader(tcpdumpDDD))
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) != 18 || prog[0] != (bpf.RawInstruction{Op: 40, K: 12}) {
		t.Fatalf("got %v", prog)
	}
	in := ether(ipPacket(t, tpkt{src: "10.1.2.3:5555", dst: "10.0.0.2:80"}))
	out := ether(ipPacket(t, tpkt{src: "10.1.2.4:5555", dst: "10.0.0.2:80"}))
	if !runFilter(t, prog, in) || runFilter(t, prog, out) {
		t.Error("the parsed program does not select what tcpdump's does")
	}
	// tcpdump -dd: C initialisers.
	dd := "{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 1, 0x00000800 },\n{ 0x6, 0, 0, 0x00040000 },\n{ 0x6, 0, 0, 0x00000000 },\n"
	prog, err = ParseDDD(strings.NewReader(dd))
	if err != nil || len(prog) != 4 || prog[1] != (bpf.RawInstruction{Op: 0x15, Jf: 1, K: 0x800}) {
		t.Fatalf("-dd: %v, %v", prog, err)
	}
	for _, bad := range []string{
		"",
		"2\n6 0 0 0\n",            // count mismatch
		"1\n6 0 0\n",              // three fields
		"1\n6 0 x 0\n",            // not a number
		"1\n6 300 0 0\n",          // jt out of range
		"2\n21 5 0 1\n6 0 0 0\n",  // jumps past the end
		"2\n6 0 0 0\n40 0 0 12\n", // no final return
	} {
		if _, err := ParseDDD(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseDDD(%q): no error", bad)
		}
	}
}

func TestKeepFrame(t *testing.T) {
	for _, c := range []struct{ loop, out, keep bool }{
		{false, false, true}, {false, true, true}, // eth0: what the host sends is seen once, outgoing
		{true, false, true}, {true, true, false}, // lo: outgoing then incoming, keep one
	} {
		if got := keepFrame(c.loop, c.out); got != c.keep {
			t.Errorf("keepFrame(loopback=%v, outgoing=%v) = %v", c.loop, c.out, got)
		}
	}
}

// fakeFrame is one frame the fake reader yields after a delay.
type fakeFrame struct {
	after    time.Duration
	frame    []byte
	outgoing bool
}

// fakeReader yields scripted frames; it waits with time.Sleep, which
// synctest's fake clock makes instant and exact.
type fakeReader struct {
	frames       []fakeFrame
	due          time.Time
	drops, reads uint64
	closed       bool
}

func (f *fakeReader) read(timeout time.Duration) ([]byte, time.Time, int, bool, error) {
	if len(f.frames) == 0 {
		time.Sleep(timeout)
		return nil, time.Time{}, 0, false, errTimeout
	}
	if f.due.IsZero() {
		f.due = time.Now().Add(f.frames[0].after)
	}
	if wait := time.Until(f.due); wait > timeout {
		time.Sleep(timeout)
		return nil, time.Time{}, 0, false, errTimeout
	} else {
		time.Sleep(wait)
	}
	fr := f.frames[0]
	f.frames = f.frames[1:]
	f.due = time.Time{}
	f.reads++
	return fr.frame, time.Now(), len(fr.frame), fr.outgoing, nil
}

func (f *fakeReader) kernelStats() (uint64, uint64, error) {
	p, d := f.reads, f.drops
	f.reads, f.drops = 0, 0
	return p, d, nil
}

func (f *fakeReader) close() error { f.closed = true; return nil }

func TestLiveTicksAndDedup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		frame := ether(ipPacket(t, tpkt{payload: "x"}))
		r := &fakeReader{frames: []fakeFrame{
			{after: 100 * time.Millisecond, frame: frame, outgoing: true}, // lo: the outgoing copy
			{after: 0, frame: frame}, // and the incoming one
			{after: 1200 * time.Millisecond, frame: frame, outgoing: true},
			{after: 0, frame: frame},
		}}
		var warns []error
		start := time.Now()
		s, err := newLiveSource(r, LinkEthernet, true, LiveOptions{Interface: "lo", Warn: func(e error) { warns = append(warns, e) }}, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		type ev struct {
			tick bool
			at   time.Duration
		}
		var got []ev
		for len(got) < 6 {
			seg, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			tick := !seg.Src.IsValid() && len(seg.Payload) == 0
			if !tick && seg.Time.Sub(start) != time.Since(start) {
				t.Errorf("segment time %v, now %v", seg.Time.Sub(start), time.Since(start))
			}
			got = append(got, ev{tick, seg.Time.Sub(start)})
		}
		want := []ev{
			{false, 100 * time.Millisecond}, // the packet, once
			{true, 600 * time.Millisecond},  // 500 ms idle
			{true, 1100 * time.Millisecond}, // and every 500 ms of idleness
			{false, 1300 * time.Millisecond},
			{true, 1800 * time.Millisecond},
			{true, 2300 * time.Millisecond},
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("events %v, want %v", got, want)
			}
		}
		if ls := s.LiveStats(); ls.LoopbackDups != 2 || ls.Ticks != 4 {
			t.Errorf("live stats %+v", ls)
		}
		if st := s.Stats(); st.TCP != 2 {
			t.Errorf("stats %+v", st)
		}

		// Drops: a warning at the next check, the counters summed.
		r.drops = 7
		time.Sleep(time.Second)
		if _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
		if len(warns) != 1 || !strings.Contains(warns[0].Error(), "dropped 7") {
			t.Errorf("warnings %v", warns)
		}
		if ls := s.LiveStats(); ls.KernelDrops != 7 || ls.KernelPackets != 4 {
			t.Errorf("live stats %+v", ls)
		}

		// Stop from another goroutine: Next returns io.EOF within a read slice.
		go func() {
			time.Sleep(250 * time.Millisecond)
			s.Stop()
		}()
		stopAt := time.Now()
		for {
			_, err := s.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(stopAt); d > 250*time.Millisecond+readSlice {
			t.Errorf("stopped after %v", d)
		}
		if err := s.Close(); err != nil || !r.closed {
			t.Errorf("Close: %v, closed %v", err, r.closed)
		}
	})
}
