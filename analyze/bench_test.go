package analyze

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

// BenchmarkParse measures HTTP/1.1 parsing and negotiation tracking on
// one keep-alive connection of 100 uploads with Expect, each answered by
// 100 Continue, its body in MSS-sized pieces (Content-Length or chunked),
// then a final response: the bytes the Analyzer sees per op, as the
// assembler hands them over.
func BenchmarkParse(b *testing.B) {
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		b.Run(name, func(b *testing.B) { benchParse(b, chunked) })
	}
}

type piece struct {
	side reassembly.Side
	data []byte
}

func benchParse(b *testing.B, chunked bool) {
	const uploads, bodySize, mss = 100, 64 << 10, 1448
	var pieces []piece
	total := 0
	add := func(s reassembly.Side, d []byte) {
		pieces = append(pieces, piece{s, d})
		total += len(d)
	}
	for i := range uploads {
		var body []byte
		head := fmt.Sprintf("PUT /upload/%d HTTP/1.1\r\nHost: files.example\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nExpect: 100-continue\r\n", i)
		if chunked {
			head += "Transfer-Encoding: chunked\r\n\r\n"
			for n := 0; n < bodySize; n += 8192 {
				body = fmt.Appendf(body, "%x\r\n%s\r\n", 8192, strings.Repeat("x", 8192))
			}
			body = append(body, "0\r\n\r\n"...)
		} else {
			head += fmt.Sprintf("Content-Length: %d\r\n\r\n", bodySize)
			body = []byte(strings.Repeat("x", bodySize))
		}
		add(reassembly.SideA, []byte(head))
		add(reassembly.SideB, []byte("HTTP/1.1 100 Continue\r\n\r\n"))
		for len(body) > 0 {
			n := min(mss, len(body))
			add(reassembly.SideA, body[:n])
			body = body[n:]
		}
		add(reassembly.SideB, []byte("HTTP/1.1 201 Created\r\nServer: nginx\r\nContent-Length: 0\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\r\n"))
	}
	info := reassembly.ConnInfo{
		A:         netip.MustParseAddrPort("10.0.0.1:40000"),
		B:         netip.MustParseAddrPort("10.0.0.2:80"),
		Handshake: true, FirstSeen: t0, FirstPacket: 1,
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	records := 0
	for b.Loop() {
		a := New(Config{Emit: func(*Record) { records++ }})
		s := a.New(info)
		now := t0
		for _, p := range pieces {
			now = now.Add(10 * time.Microsecond)
			s.Data(p.side, p.data, now)
		}
		s.Close(reassembly.EndFIN, now)
		a.Flush()
	}
	if records != uploads*b.N {
		b.Fatalf("%d records, want %d", records, uploads*b.N)
	}
}
