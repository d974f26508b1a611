package analyze

import "testing"

func TestFindMessageStart(t *testing.T) {
	tests := []struct {
		name            string
		in              string
		wantReq, wantRs bool
		off             int
		isReq           bool
	}{
		{"request at start", "GET / HTTP/1.1\r\n", true, false, 0, true},
		{"request after body tail", "tail\r\nPUT /x HTTP/1.1\r\n", true, false, 6, true},
		{"socks prefix glued to POST", "\x05\x01\x00\x03\x05onion\x00POST /p HTTP/1.1\r\n", true, false, 11, true},
		{"response after line", "junk\nHTTP/1.1 200 OK\r\n", false, true, 5, false},
		{"response after socks reply", "\x05\x00\x00\x01\x00\x00HTTP/1.1 100 Continue\r\n", false, true, 6, false},
		{"response inside text is not one", "see HTTP/1.1 200 OK\r\n", false, true, -1, false},
		{"incomplete line", "GET / HTTP/1.", true, false, -1, false},
		{"no request in binary", "\x16\x03\x01\x02\x00", true, true, -1, false},
	}
	for _, tt := range tests {
		off, isReq := findMessageStart([]byte(tt.in), tt.wantReq, tt.wantRs)
		if off != tt.off || (off >= 0 && isReq != tt.isReq) {
			t.Errorf("%s: got (%d,%v), want (%d,%v)", tt.name, off, isReq, tt.off, tt.isReq)
		}
	}
}

func TestParseContentLength(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"42", 42, true}, {"5, 5", 5, true}, {"5, 6", 0, false},
		{"-1", 0, false}, {"+1", 0, false}, {"", 0, false}, {"99999999999999999999", 0, false}, {"1e3", 0, false},
		{"999999999999999999", 999999999999999999, true}, {"1000000000000000000", 0, false}, {"007", 7, true},
		{"5,5", 5, true}, {" 5", 5, true}, {"5 ", 5, true}, {",", 0, false}, {"5,", 0, false}, {"1 2", 0, false},
	}
	for _, tt := range tests {
		got, err := parseContentLength([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseContentLength(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestParseChunkSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1a", 26, true}, {"FF;ext=1", 255, true}, {"10 ; x", 16, true},
		{"", 0, false}, {"g", 0, false}, {"1000000000000000", 0, false}, {"7fffffffffffffff", 0, false},
	}
	for _, tt := range tests {
		got, err := parseChunkSize([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseChunkSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

// TestHeaderEndSplit feeds a header block split at every byte: the
// terminator must be found however it straddles the chunks.
func TestHeaderEndSplit(t *testing.T) {
	for _, block := range []string{"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET / HTTP/1.1\nHost: h\n\n"} {
		for cut := 1; cut < len(block); cut++ {
			first := headerEnd([]byte(block[:cut]), 0)
			if first >= 0 && first != len(block) {
				t.Fatalf("%q cut %d: early end %d", block, cut, first)
			}
			if first >= 0 {
				continue
			}
			if got := headerEnd([]byte(block), cut); got != len(block) {
				t.Errorf("%q cut at %d: headerEnd = %d, want %d", block, cut, got, len(block))
			}
		}
	}
}
