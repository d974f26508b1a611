package report

import "testing"

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/upload?x=1", "/upload?x=1"},
		{"/\x1b[2J/clear", `/\x1b[2J/clear`},
		{"a\r\nb\tc", `a\x0d\x0ab\x09c`},
		{"del\x7f", `del\x7f`},
		{"c1\u009b31m", `c1\u{009b}31m`},
		{"bidi\u202eevil", `bidi\u{202e}evil`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`back\slash`, `back\\slash`},
		{"ünïcode", "ünïcode"},
	}
	for _, tt := range tests {
		if got := Escape(tt.in); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzEscape(f *testing.F) {
	f.Add("/\x1b[2J")
	f.Add("\u009b\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("control byte %#x survived in %q", c, out)
			}
		}
		for _, r := range out {
			if r >= 0x80 && r < 0xa0 || isBidiControl(r) {
				t.Fatalf("rune %U survived in %q", r, out)
			}
		}
	})
}
