package analyze

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestRetryLinker drives the linker with sequences of events, as an
// Analyzer or the pipeline's merger does, and checks each answer and
// what each 417 was released with, in order.
func TestRetryLinker(t *testing.T) {
	who := func(client, target string) RequestIdentity {
		return RequestIdentity{Client: netip.MustParseAddr(client), Method: "PUT", Host: "h", Target: target}
	}
	a, b := who("10.0.0.1", "/a"), who("10.0.0.1", "/b")
	other := who("10.0.0.2", "/a") // same request from another client
	type step struct {
		op      string // "417", "req", "req+expect", "advance", "flush"
		id      string
		who     RequestIdentity
		at      float64 // seconds
		retryOf string  // want, for req
	}
	tests := []struct {
		name  string
		max   int
		steps []step
		want  []string // releases: "id:retriedBy:withoutExpect:dropped"
	}{
		{
			name:  "retry without Expect links and releases at once",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "2-1", who: a, at: 1.1, retryOf: "1-1"}},
			want:  []string{"1-1:2-1:true:false"},
		},
		{
			name: "retry with Expect is named, the 417 waits on; a later one without Expect wins",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "2-1", who: a, at: 1.1, retryOf: "1-1"},
				{op: "req", id: "3-1", who: a, at: 1.2, retryOf: "1-1"}},
			want: []string{"1-1:3-1:true:false"},
		},
		{
			name:  "retry with Expect only: named at the end, never without Expect",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "2-1", who: a, at: 2, retryOf: "1-1"}, {op: "flush"}},
			want:  []string{"1-1:2-1:false:false"},
		},
		{
			name: "another identity is not a retry",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "2-1", who: b, at: 2}, {op: "req", id: "3-1", who: other, at: 2},
				{op: "flush"}},
			want: []string{"1-1::false:false"},
		},
		{
			name:  "a request before the 417 is not its retry",
			steps: []step{{op: "417", id: "1-1", who: a, at: 5}, {op: "req", id: "0-2", who: a, at: 4}, {op: "flush"}},
			want:  []string{"1-1::false:false"},
		},
		{
			name: "the window passes by capture time",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "advance", at: 30.999}, {op: "advance", at: 31},
				{op: "req", id: "2-1", who: a, at: 31}},
			want: []string{"1-1::false:false"},
		},
		{
			name: "the oldest 417 beyond the bound is dropped; the others still link",
			max:  2,
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "417", id: "2-1", who: b, at: 2}, {op: "417", id: "3-1", who: other, at: 3},
				{op: "req", id: "4-1", who: a, at: 4}, {op: "req", id: "5-1", who: b, at: 5, retryOf: "2-1"}, {op: "flush"}},
			want: []string{"1-1::false:true", "2-1:5-1:true:false", "3-1::false:false"},
		},
		{
			name: "two 417s of one request: the first is retried first",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "417", id: "2-1", who: a, at: 2},
				{op: "req", id: "3-1", who: a, at: 3, retryOf: "1-1"}, {op: "req", id: "4-1", who: a, at: 4, retryOf: "2-1"}},
			want: []string{"1-1:3-1:true:false", "2-1:4-1:true:false"},
		},
		{
			name:  "flush releases in the order of the 417s",
			steps: []step{{op: "417", id: "2-1", who: b, at: 1}, {op: "417", id: "1-1", who: a, at: 2}, {op: "flush"}},
			want:  []string{"2-1::false:false", "1-1::false:false"},
		},
	}
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			l := NewRetryLinker(30*time.Second, tt.max, func(id string, o RetryOutcome) {
				got = append(got, fmt.Sprintf("%s:%s:%v:%v", id, o.RetriedBy, o.WithoutExpect, o.Dropped))
			})
			for i, s := range tt.steps {
				switch s.op {
				case "417":
					l.Advance(sec(s.at))
					l.Rejected(s.id, s.who, sec(s.at), s.id)
				case "req", "req+expect":
					l.Advance(sec(s.at))
					if r := l.Request(s.id, s.who, sec(s.at), s.op == "req+expect"); r != s.retryOf {
						t.Errorf("step %d: %s is a retry of %q, want %q", i, s.id, r, s.retryOf)
					}
				case "advance":
					l.Advance(sec(s.at))
				case "flush":
					l.Flush()
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("released\n %v\nwant\n %v", got, tt.want)
			}
			if l.Waiting() != 0 && tt.steps[len(tt.steps)-1].op == "flush" {
				t.Errorf("%d still waiting after Flush", l.Waiting())
			}
		})
	}
}
