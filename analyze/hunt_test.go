package analyze

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// huntFinds feeds chunks to findMessageStart as conn.hunt does, keeping
// b[tail(b):] of the bytes not matched, and lists what it found, at
// positions in the whole stream.
func huntFinds(chunks [][]byte, wantReq, wantResp bool, tail func([]byte) int) []string {
	var found []string
	var held []byte
	base := 0 // stream position of held[0]
	for _, ch := range chunks {
		data := append(append([]byte(nil), held...), ch...)
		if off, isReq := findMessageStart(data, wantReq, wantResp); off >= 0 {
			found = append(found, fmt.Sprintf("%d/%v", base+off, isReq))
			base += len(data)
			held = nil
			continue
		}
		cut := tail(data)
		base += cut
		held = data[cut:]
	}
	return found
}

// TestHuntTail: what hunting finds is the same whether it keeps the last
// huntWindow bytes (as it did) or only the tail huntTail says matters,
// over random streams of HTTP-like and binary pieces cut anywhere.
func TestHuntTail(t *testing.T) {
	pieces := []string{
		"GET ", "POST ", "PUT", "/x", "/a b", " ", "  ", "HTTP/1.1", "HTTP/1.", "HTTP/1.0 200 OK", "HTTP/1.1 100 Continue",
		"\r\n", "\n", "\r", "abc", "Z", "Q", "\x00", "\x16\x03", "\x7f", "\tX", "x-y", strings.Repeat("a", 40),
		strings.Repeat("A", 40), "GETX ", "\x00POST /u HTTP/1.1", "HTTP/1.1 417 Expectation Failed",
	}
	window := func(b []byte) int { return max(0, len(b)-huntWindow) }
	modes := []struct {
		name              string
		wantReq, wantResp bool
	}{{"request", true, false}, {"response", false, true}, {"either", true, true}}
	r := rand.New(rand.NewPCG(7, 7))
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			for n := range 4000 {
				var sb strings.Builder
				for range 1 + r.IntN(60) {
					if r.IntN(50) == 0 {
						sb.WriteString(strings.Repeat("b", r.IntN(3*huntWindow)))
					}
					if r.IntN(8) == 0 {
						sb.WriteByte(byte(r.IntN(256)))
						continue
					}
					sb.WriteString(pieces[r.IntN(len(pieces))])
				}
				stream := []byte(sb.String())
				var chunks [][]byte
				for len(stream) > 0 {
					k := min(len(stream), 1+r.IntN(24))
					if r.IntN(10) == 0 {
						k = min(len(stream), 1+r.IntN(2*huntWindow))
					}
					chunks = append(chunks, stream[:k])
					stream = stream[k:]
				}
				want := huntFinds(chunks, m.wantReq, m.wantResp, window)
				got := huntFinds(chunks, m.wantReq, m.wantResp, func(b []byte) int { return huntTail(b, m.wantReq) })
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("stream %d %q: found %v, want %v", n, chunks, got, want)
				}
			}
		})
	}
}

// TestHuntTailShort: on bytes that cannot start a message the tail is a
// few bytes.
func TestHuntTailShort(t *testing.T) {
	tests := []struct {
		name    string
		b       string
		wantReq bool
		keep    int
	}{
		{"body filler", strings.Repeat("abcdefghij0123456789", 50), true, 1},
		{"filler, response side", strings.Repeat("abcdefghij0123456789", 50), false, 1},
		{"start of HTTP/1. at the end", strings.Repeat("x", 100) + "HTTP/", false, 6},
		{"method near the end", strings.Repeat("x", 100) + " POST /up", true, 9},
		{"line break near the end", strings.Repeat("Q", 100) + "\nab", true, 1},
		{"status line not ended", "zzzz\x00HTTP/1.1 200", false, 13},
	}
	for _, tt := range tests {
		if got := len(tt.b) - huntTail([]byte(tt.b), tt.wantReq); got != tt.keep {
			t.Errorf("%s: keeps %d bytes, want %d", tt.name, got, tt.keep)
		}
	}
}
