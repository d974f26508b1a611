package analyze

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestIdleConnMemory: what a tracked connection costs the analysis while
// it idles bounds how many the 100 MiB goal allows (issue 7): the conn
// alone (128 B) once the connection stands between messages, or hunts
// for one with a few bytes held, as the parser state, the exchange and
// its request are not kept then.
// The bounds leave a few bytes for what else the heap counts.
func TestIdleConnMemory(t *testing.T) {
	const n = 20000
	req := []byte("POST /up HTTP/1.1\r\nHost: example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
	tests := []struct {
		name  string
		feed  func(s reassembly.Stream, at time.Time)
		limit float64
	}{
		{"syn only", func(s reassembly.Stream, at time.Time) { s.Handshake(time.Millisecond) }, 136},
		{"after an exchange", func(s reassembly.Stream, at time.Time) {
			s.Data(reassembly.SideA, req, at)
			s.Data(reassembly.SideB, []byte("HTTP/1.1 100 Continue\r\n\r\n"), at)
			s.Data(reassembly.SideA, []byte("abc"), at)
			s.Data(reassembly.SideB, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), at)
		}, 136},
		{"hunting binary bytes", func(s reassembly.Stream, at time.Time) {
			s.Data(reassembly.SideA, []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\x00\x01\x02"), at)
		}, 136},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(Config{})
			streams := make([]reassembly.Stream, n)
			base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
			srv := netip.MustParseAddrPort("10.0.0.2:80")
			before := heapAlloc()
			for i := range streams {
				cli := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 40000)
				s := a.New(reassembly.ConnInfo{A: cli, B: srv, Handshake: true, FirstSeen: base, FirstPacket: uint64(i + 1)})
				tt.feed(s, base)
				streams[i] = s
			}
			per := float64(int64(heapAlloc())-int64(before)) / n
			runtime.KeepAlive(streams)
			if per > tt.limit {
				t.Errorf("%.0f bytes per idle connection, want <= %.0f", per, tt.limit)
			}
			t.Logf("%.0f bytes per idle connection", per)
		})
	}
}
