package reassembly

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestShardOf: both directions of a connection go to one shard, in
// range, and connections spread evenly (within 3 % of an equal share)
// over 2 to 5 shards, for IPv4 and IPv6, also when only ports differ (one
// client and one server: the common capture).
func TestShardOf(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	v4 := func() netip.Addr {
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	v6 := func() netip.Addr {
		var b [16]byte
		b[0], b[1], b[15] = 0x20, 0x01, byte(r.IntN(256))
		return netip.AddrFrom16(b)
	}
	client, server := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	for _, c := range []struct {
		name     string
		src, dst func() netip.AddrPort
	}{
		{"ipv4", func() netip.AddrPort { return netip.AddrPortFrom(v4(), uint16(r.IntN(65536))) }, func() netip.AddrPort { return netip.AddrPortFrom(v4(), 80) }},
		{"ipv6", func() netip.AddrPort { return netip.AddrPortFrom(v6(), uint16(r.IntN(65536))) }, func() netip.AddrPort { return netip.AddrPortFrom(v6(), 443) }},
		{"one pair", func() netip.AddrPort { return netip.AddrPortFrom(client, uint16(1024+r.IntN(60000))) }, func() netip.AddrPort { return netip.AddrPortFrom(server, 80) }},
	} {
		for n := 2; n <= 5; n++ {
			const conns = 60000
			count := make([]int, n)
			for range conns {
				s, d := c.src(), c.dst()
				k := ShardOf(s, d, n)
				if k < 0 || k >= n {
					t.Fatalf("%s: shard %d of %d", c.name, k, n)
				}
				if back := ShardOf(d, s, n); back != k {
					t.Fatalf("%s: %v->%v in shard %d, back in %d", c.name, s, d, k, back)
				}
				count[k]++
			}
			for k, got := range count {
				if share := float64(got) * float64(n) / conns; share < 0.97 || share > 1.03 {
					t.Errorf("%s, %d shards: shard %d has %d connections (%.3f of an equal share)", c.name, n, k, got, share)
				}
			}
		}
	}
}
