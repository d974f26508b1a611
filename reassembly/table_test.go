package reassembly

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/expectscope/expectscope/capture"
)

// TestConnTable checks the index against a map through random puts and
// removes, at the loads where runs of occupied slots are long and wrap
// around the end, and across growth and reset.
func TestConnTable(t *testing.T) {
	tests := []struct {
		name       string
		keys, ops  int
		removeRate float64
	}{
		{"small, many removes", 600, 20000, 0.5},
		{"grows past the minimum", 5000, 30000, 0.3},
		{"few keys, churn", 40, 5000, 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(tt.keys)))
			keys := make([]connKey, tt.keys)
			for i := range keys {
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(r.IntN(65536)))
				keys[i], _ = makeKey(src, srv)
			}
			tab := newConnTable()
			want := map[connKey]*conn{}
			check := func() {
				if tab.len() != len(want) {
					t.Fatalf("len %d, want %d", tab.len(), len(want))
				}
				for i := range keys {
					if got := tab.get(&keys[i]); got != want[keys[i]] {
						t.Fatalf("get(key %d) = %p, want %p", i, got, want[keys[i]])
					}
				}
			}
			for op := range tt.ops {
				k := keys[r.IntN(len(keys))]
				c := want[k]
				switch {
				case c == nil:
					c = &conn{key: k}
					tab.put(c)
					want[k] = c
				case r.Float64() < tt.removeRate:
					tab.remove(c)
					delete(want, k)
				}
				if op%997 == 0 {
					check()
				}
			}
			check()
			tab.reset()
			clear(want)
			check()
		})
	}
}

// TestMakeKey: both directions give one key, and endpoints that differ
// only in family, port or side give different ones.
func TestMakeKey(t *testing.T) {
	a4 := netip.MustParseAddrPort("10.0.0.1:40000")
	a6 := netip.MustParseAddrPort("[::ffff:10.0.0.1]:40000")
	b := netip.MustParseAddrPort("10.0.0.2:80")
	b6 := netip.MustParseAddrPort("[::ffff:10.0.0.2]:80")
	tests := []struct {
		name           string
		s1, d1, s2, d2 netip.AddrPort
		same           bool
	}{
		{"reverse direction", a4, b, b, a4, true},
		{"IPv4 and IPv4-mapped IPv6", a4, b, a6, b6, false},
		{"other port", a4, b, netip.AddrPortFrom(a4.Addr(), 40001), b, false},
		{"ports swapped", a4, b, netip.AddrPortFrom(a4.Addr(), 80), netip.AddrPortFrom(b.Addr(), 40000), false},
	}
	for _, tt := range tests {
		k1, lo1 := makeKey(tt.s1, tt.d1)
		k2, lo2 := makeKey(tt.s2, tt.d2)
		if (k1 == k2) != tt.same {
			t.Errorf("%s: same key %v, want %v", tt.name, k1 == k2, tt.same)
		}
		if tt.same && lo1 == lo2 {
			t.Errorf("%s: both directions are the lo side", tt.name)
		}
	}
}

// TestKeyOfRemembers: the key remembered from the previous segment is
// the one makeKey gives, for the same endpoints either way round, new
// ones, and the zero endpoints of a clock tick.
func TestKeyOfRemembers(t *testing.T) {
	other := netip.MustParseAddrPort("10.0.0.3:40001")
	var zero netip.AddrPort
	a := NewAssembler(&countFactory{}, Config{})
	for i, p := range [][2]netip.AddrPort{{zero, zero}, {cli, srv}, {cli, srv}, {srv, cli}, {other, srv}, {srv, cli}, {zero, zero}, {srv, srv}} {
		k, lo := a.keyOf(&capture.Segment{Src: p[0], Dst: p[1]})
		wk, wlo := makeKey(p[0], p[1])
		if k != wk || lo != wlo {
			t.Errorf("segment %d %v -> %v: key %v lo %v, want %v %v", i, p[0], p[1], k, lo, wk, wlo)
		}
	}
}
