package analyze

import (
	"strings"
	"testing"
)

// TestDiagnoseRejected: a 417's diagnosis says what the client did next,
// and does not read as a contradiction when a retry was linked but asked
// for 100-continue again.
func TestDiagnoseRejected(t *testing.T) {
	id := "7-2"
	for _, c := range []struct {
		name      string
		flags     []Flag
		retriedBy *string
		want      []string
		not       []string
	}{
		{"retried without Expect", []Flag{FlagRetriedWithoutExpect}, &id,
			[]string{"417 before any body", "the client retried without Expect"}, []string{"again"}},
		{"retried with Expect again", []Flag{FlagNoRetryAfter417}, &id,
			[]string{"retried with Expect again", "RFC 9110 10.1.1"}, []string{"did not come again"}},
		{"never retried", []Flag{FlagNoRetryAfter417}, nil,
			[]string{"did not come again without Expect"}, []string{"retried"}},
		{"body anyway, desync", []Flag{FlagBodyAfter417, FlagRetriedWithoutExpect, FlagUnreadBody}, &id,
			[]string{"sent the body anyway", "retried without Expect", "desync"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &Record{Type: TypeNegotiation, Verdict: Rejected, Flags: c.flags, RetriedBy: c.retriedBy,
				Final: &Final{Status: 417, Server: "nginx"}}
			got := Diagnose(r)
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(got, w) {
					t.Errorf("%q has %q", got, w)
				}
			}
		})
	}
}
