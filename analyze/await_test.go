package analyze

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/expectscope/expectscope/reassembly"
)

// TestAwaitBounded: a flood of 417s that are never retried holds at most
// DefaultMaxAwait of them; the oldest are released early, counted, and every
// negotiation is still emitted once. A retry of a held one is linked.
func TestAwaitBounded(t *testing.T) {
	n := DefaultMaxAwait + 500
	seen := map[string]int{}
	var recs []*Record
	a := New(Config{Emit: func(r *Record) { seen[r.ID]++; recs = append(recs, r) }})
	conn := func(i int, port uint16, req, resp string, ms float64) {
		info := reassembly.ConnInfo{
			A:         netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), port),
			B:         netip.MustParseAddrPort("10.0.0.2:80"),
			Handshake: true, FirstSeen: at(ms), FirstPacket: uint64(i+1) + uint64(port-40000)*1e6,
		}
		s := a.New(info)
		s.Data(reassembly.SideA, []byte(req), at(ms))
		if resp != "" {
			s.Data(reassembly.SideB, []byte(resp), at(ms+1))
		}
		s.Close(reassembly.EndFIN, at(ms+2))
	}
	for i := range n {
		req := fmt.Sprintf("PUT /u/%d HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", i)
		conn(i, 40000, req, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", float64(i)*3)
		if a.linker.Waiting() > DefaultMaxAwait || len(a.linker.fifo) > DefaultMaxAwait {
			t.Fatalf("after %d: %d waiting, %d slots", i+1, a.linker.Waiting(), len(a.linker.fifo))
		}
	}
	// The last one is still held: its retry links.
	last := n - 1
	conn(last, 40001, fmt.Sprintf("PUT /u/%d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", last), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", float64(n)*3)
	a.Flush()
	if got := a.Stats().RetryWaitsDropped; got != uint64(n-DefaultMaxAwait) {
		t.Errorf("RetryWaitsDropped = %d, want %d", got, n-DefaultMaxAwait)
	}
	if len(seen) != n || a.linker.Waiting() != 0 {
		t.Fatalf("%d records for %d negotiations, %d still waiting", len(seen), n, a.linker.Waiting())
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s emitted %d times", id, c)
		}
	}
	for _, r := range recs {
		if r.Request.Target == fmt.Sprintf("/u/%d", last) && r.Type == TypeNegotiation && (r.RetriedBy == nil || !hasFlag(r, FlagRetriedWithoutExpect)) {
			t.Errorf("last 417 not linked to its retry: %+v", r)
		}
	}
}

func hasFlag(r *Record, f Flag) bool {
	for _, x := range r.Flags {
		if x == f {
			return true
		}
	}
	return false
}
