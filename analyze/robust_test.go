package analyze

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

// TestChunkSizeLeadingZeros: leading zeros do not count towards the
// overflow limit (found by FuzzChunked against net/http).
func TestChunkSizeLeadingZeros(t *testing.T) {
	tests := []struct {
		line string
		want int64
		ok   bool
	}{
		{"0000000000000005", 5, true},
		{"00000000000000000000000000000", 0, true},
		{"fffffffffffffff", 1<<60 - 1, true},
		{"0fffffffffffffff", 1<<60 - 1, true},
		{"1000000000000000", 0, false},     // 2^60: 16 significant digits
		{"ffffffffffffffffff", 0, false},   // overflows int64
		{"8000000000000000;a=b", 0, false}, // 2^63
		{"", 0, false},
		{"-1", 0, false},
	}
	for _, tt := range tests {
		got, err := parseChunkSize([]byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d ok=%v", tt.line, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadChunk) {
			t.Errorf("parseChunkSize(%q): %v is not ErrBadChunk", tt.line, err)
		}
	}
}

// TestContentLengthHostile: negative, signed, huge and conflicting
// lengths are parse errors, never a negative or overflowed length.
func TestContentLengthHostile(t *testing.T) {
	for _, v := range []string{"-1", "+5", "99999999999999999999", "9223372036854775808", "1e3", "5, 6", " ", "0x10"} {
		_, err := parseRequestHead([]byte("PUT / HTTP/1.1\r\nContent-Length: " + v + "\r\n\r\n"))
		if !errors.Is(err, ErrBadLength) {
			t.Errorf("Content-Length %q: err %v, want ErrBadLength", v, err)
		}
	}
	rh, err := parseRequestHead([]byte("PUT / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n"))
	if err != nil || rh.h.contentLength != 999999999999999999 {
		t.Fatalf("18-digit length: %v %v", rh, err)
	}
}

// TestHeaderBombs: 100k header fields and a 1 MiB request line cost a
// parse error, not memory, and the connection goes on being parsed.
func TestHeaderBombs(t *testing.T) {
	var b strings.Builder
	b.WriteString("PUT /bomb HTTP/1.1\r\nExpect: 100-continue\r\n")
	for i := 0; i < 100000; i++ {
		b.WriteString("X: y\r\n")
	}
	b.WriteString("\r\n")
	bomb := b.String()
	longLine := "GET /" + strings.Repeat("a", 1<<20) + " HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tc := range []struct{ name, data string }{{"fields", bomb}, {"line", longLine}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, max := range []int{0, 8 << 20} { // default, and a limit the bomb fits in
				var evs []ev
				// Deliver in 1460-byte segments, as TCP would.
				for d := tc.data; len(d) > 0; {
					n := min(len(d), 1460)
					evs = append(evs, ev{"c", 0, d[:n], ""})
					d = d[n:]
				}
				evs = append(evs, ev{"s", 1, "HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n", ""},
					ev{"c", 2, putExpect, ""}, ev{"s", 3, "HTTP/1.1 100 Continue\r\n\r\n", ""},
					ev{"c", 4, "0123456789", ""}, ev{"s", 5, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""})
				cfg := Config{MaxHeaderBytes: max}
				recs := run(t, true, evs, cfg)
				// The bomb itself yields no record; the next negotiation is found.
				if len(recs) == 0 || recs[len(recs)-1].Request.Target != "/up" {
					t.Fatalf("max %d: records %v", max, recs)
				}
			}
		})
	}
}

// TestHeaderEndStraddle: a header block whose CRLF CRLF is split across
// two segments at any byte is found (a "\r\n\r" | "\n" split was missed
// and merged the next message into it: 10k pipelined responses lost 2k).
func TestHeaderEndStraddle(t *testing.T) {
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
	for _, lf := range []string{"\r\n", "\n"} {
		stream := strings.Repeat(strings.ReplaceAll(resp, "\r\n", lf), 3)
		for cut := 1; cut < len(stream); cut++ {
			evs := []ev{
				{"c", 0, strings.Repeat("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 3), ""},
				{"s", 1, stream[:cut], ""}, {"s", 2, stream[cut:], ""},
			}
			recs := run(t, true, evs, Config{All: true})
			if len(recs) != 3 {
				t.Fatalf("lf %q cut %d: %d records", lf, cut, len(recs))
			}
			for _, r := range recs {
				if r.Final == nil || r.Final.Status != 200 {
					t.Fatalf("lf %q cut %d: record %s final %v", lf, cut, r.ID, r.Final)
				}
			}
		}
	}
	for from := 0; from <= 4; from++ {
		if got := headerEnd([]byte("A\r\n\r\nB"), from); got != 5 {
			t.Errorf("headerEnd(from %d) = %d, want 5", from, got)
		}
	}
}

// TestShortNonHTTPCounted: a connection that carried bytes, none of them
// HTTP, counts as a non-HTTP stream even when it closed before the hunt
// budget was spent; one that carried no byte does not.
func TestShortNonHTTPCounted(t *testing.T) {
	for _, tc := range []struct {
		handshake bool
		data      string
		want      uint64
	}{{true, "\x16\x03\x01 not http", 1}, {false, "\x16\x03\x01 not http", 1}, {true, "", 0}} {
		a := New(Config{})
		s := a.New(reassembly.ConnInfo{
			A: netip.MustParseAddrPort("10.0.0.1:40000"), B: netip.MustParseAddrPort("10.0.0.2:80"),
			Handshake: tc.handshake, FirstSeen: t0, FirstPacket: 1,
		})
		if tc.data != "" {
			s.Data(reassembly.SideA, []byte(tc.data), t0)
			s.Data(reassembly.SideB, []byte("\x00\x01garbage"), t0)
		}
		s.Close(reassembly.EndFIN, t0)
		if st := a.Stats(); st.NonHTTP != tc.want || st.HTTPConnections != 0 {
			t.Errorf("%+v: stats %+v", tc, st)
		}
	}
}

// TestResponseWithoutStatusLine: header fields where a status line must
// start, on a connection already speaking HTTP, are a counted parse
// error; the request stays unanswered and the next response still pairs.
func TestResponseWithoutStatusLine(t *testing.T) {
	var recs []*Record
	a := New(Config{All: true, Emit: func(r *Record) { recs = append(recs, r) }})
	s := a.New(reassembly.ConnInfo{
		A: netip.MustParseAddrPort("10.0.0.1:40000"), B: netip.MustParseAddrPort("10.0.0.2:80"),
		Handshake: true, FirstSeen: t0, FirstPacket: 1,
	})
	s.Data(reassembly.SideA, []byte(putExpect), at(0))
	s.Data(reassembly.SideB, []byte("Content-Length: 0\r\nServer: odd\r\n\r\n"), at(1))
	s.Data(reassembly.SideA, []byte("0123456789"), at(1000))
	s.Data(reassembly.SideB, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), at(1001))
	s.Close(reassembly.EndFIN, at(1002))
	if st := a.Stats(); st.ParseErrors != 1 {
		t.Errorf("parse errors %d", st.ParseErrors)
	}
	if a.LastParseError() == nil || !errors.Is(a.LastParseError(), ErrBadStatusLine) {
		t.Errorf("last error %v", a.LastParseError())
	}
	if len(recs) != 1 || recs[0].Final == nil || recs[0].Final.Status != 200 {
		t.Fatalf("records %+v", recs)
	}
}

// TestLongMethodNoHang: a request line whose method is longer than
// startsRequest accepts is found by hunting but refused at the boundary;
// the two disagreed and the parser looped for ever (found by FuzzConn).
func TestLongMethodNoHang(t *testing.T) {
	done := make(chan []*Record)
	go func() {
		done <- run(t, true, []ev{
			{"c", 0, "AAA000AAAAAAAAAAAAAAAAAAAAAiiiiiii 0 HTTP/1.0\n0", ""},
			{"c", 1, strings.Repeat("M", 33) + " / HTTP/1.1\r\nHost: h\r\n\r\n", ""},
			{"c", 2, putExpect, ""}, {"s", 3, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 4, "0123456789", ""}, {"s", 5, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, Config{})
	}()
	select {
	case recs := <-done:
		if len(recs) != 1 || recs[0].Verdict != Continued {
			t.Fatalf("records %+v", recs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parser does not return")
	}
	for n, ok := range map[int]bool{32: true, 33: false} {
		_, _, _, err := parseRequestLine([]byte(strings.Repeat("M", n) + " / HTTP/1.1"))
		if (err == nil) != ok {
			t.Errorf("method of %d: err %v", n, err)
		}
	}
}

// TestTLSGivenUp: a connection that starts with a TLS ClientHello (or,
// picked up from its first bytes without a handshake, a ServerHello) is
// not HTTP, even where its later bytes happen to read as a request and a
// response: they are ciphertext. It counts once as a non-HTTP stream.
func TestTLSGivenUp(t *testing.T) {
	hello := "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x5a", 64)
	serverHello := "\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + strings.Repeat("\xa5", 64)
	coincidence := "\x17\x03\x03\x01\x00" + putExpect
	for _, handshake := range []bool{true, false} {
		evs := []ev{
			{who: "c", ms: 0, data: hello},
			{who: "s", ms: 1, data: serverHello},
			{who: "c", ms: 2, data: coincidence},
			{who: "s", ms: 3, data: "\x17\x03\x03\x00\x40\nHTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"},
		}
		var recs []*Record
		a := New(Config{All: true, Emit: func(r *Record) { recs = append(recs, r) }})
		s := a.New(reassembly.ConnInfo{
			A: netip.MustParseAddrPort("10.0.0.1:40000"), B: netip.MustParseAddrPort("10.0.0.2:443"),
			Handshake: handshake, FirstSeen: t0, FirstPacket: 1,
		})
		for _, e := range evs {
			side := reassembly.SideA
			if e.who == "s" {
				side = reassembly.SideB
			}
			s.Data(side, []byte(e.data), at(e.ms))
		}
		s.Close(reassembly.EndFIN, at(4))
		a.Flush()
		if len(recs) != 0 {
			t.Errorf("handshake %v: %d records from TLS, first %+v", handshake, len(recs), recs[0].Request)
		}
		if st := a.Stats(); st.NonHTTP != 1 || st.HTTPConnections != 0 || st.Resyncs != 0 {
			t.Errorf("handshake %v: stats %+v", handshake, st)
		}
	}
}
