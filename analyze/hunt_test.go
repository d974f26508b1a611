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

// firstMethodStartByByte is firstMethodStart as it was written first, one
// byte at a time: the reference the faster version must agree with.
func firstMethodStartByByte(b []byte) int {
	start := 0 // of the current run of token characters
	for i := 0; i <= len(b); i++ {
		if i < len(b) && isTokenChar(b[i]) {
			continue
		}
		if i == len(b) || b[i] == ' ' {
			for p := max(start, i-maxMethodLen); p < i; p++ {
				if b[p] >= 'A' && b[p] <= 'Z' {
					return p
				}
			}
		}
		start = i + 1
	}
	return -1
}

func TestFirstMethodStart(t *testing.T) {
	tests := []struct {
		b    string
		want int
	}{
		{"", -1},
		{"GET", 0},
		{"GET ", 0},
		{"xGET /", 1},
		{"get / HTTP/1.1", -1},
		{"\x00POST /u", 1},
		{"abc def", -1},
		{"abc dEf", 5},
		{strings.Repeat("a", 40) + "B ", 40},
		{"B" + strings.Repeat("a", 40) + " ", -1}, // the method would be longer than maxMethodLen
		{strings.Repeat("a", 31) + "B", 31},
		{"aB" + strings.Repeat("a", 30) + " ", 1}, // 32 token bytes: the method's longest
		{"Ba" + strings.Repeat("a", 31) + " ", -1},
		{"x\tPUT", 2},
		{"  ", -1},
		{"A B", 0},
		{"a B", 2},
	}
	for _, tt := range tests {
		if got, ref := firstMethodStart([]byte(tt.b)), firstMethodStartByByte([]byte(tt.b)); got != tt.want || ref != tt.want {
			t.Errorf("firstMethodStart(%q) = %d (by byte %d), want %d", tt.b, got, ref, tt.want)
		}
	}
	r := rand.New(rand.NewPCG(7, 9))
	alphabet := []byte("aZ \t\r\n\x00\x16-GETPOST/")
	for range 20000 {
		b := make([]byte, r.IntN(80))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		if got, want := firstMethodStart(b), firstMethodStartByByte(b); got != want {
			t.Fatalf("firstMethodStart(%q) = %d, by byte %d", b, got, want)
		}
	}
}

func FuzzFirstMethodStart(f *testing.F) {
	f.Add([]byte("xx POST /u HTTP/1.1"))
	f.Add([]byte(strings.Repeat("a", 40) + "B "))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := firstMethodStart(b), firstMethodStartByByte(b); got != want {
			t.Fatalf("firstMethodStart(%q) = %d, by byte %d", b, got, want)
		}
	})
}

func TestStartsTLSHello(t *testing.T) {
	tests := []struct {
		b    string
		want bool
	}{
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", true}, // ClientHello in a TLS 1.0 record (curl, TLS 1.3)
		{"\x16\x03\x03\x00\x7a\x02\x00\x00\x76", true},         // ServerHello
		{"\x16\x03\x01\x02\x00", false},                        // too short to see the handshake type
		{"\x16\x03\x01\x02\x00\x0b", false},                    // Certificate: not a connection's first record
		{"\x16\x03\x05\x02\x00\x01", false},
		{"\x16\x03\x01\x50\x00\x01", false}, // longer than a record may be
		{"\x17\x03\x03\x00\x20\x01", false}, // application data
		{"\x16\x02\x01\x02\x00\x01", false},
		{"POST /u HTTP/1.1\r\n", false},
		{"\x05\x01\x00", false}, // SOCKS5 greeting
	}
	for _, tt := range tests {
		if got := startsTLSHello([]byte(tt.b)); got != tt.want {
			t.Errorf("startsTLSHello(%q) = %v, want %v", tt.b, got, tt.want)
		}
	}
}
