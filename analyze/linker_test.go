package analyze

import (
	"fmt"
	"net/netip"
	"strconv"
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
		op      string // "417", "clientend", "req", "req+expect", "advance", "flush"
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
			name:  "retry without Expect on the same connection links and releases at once",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "1-2", who: a, at: 1.1, retryOf: "1-1"}},
			want:  []string{"1-1:1-2:true:false"},
		},
		{
			name:  "retry without Expect on a new connection after a 417 with close",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "2-1", who: a, at: 1.1, retryOf: "1-1"}},
			want:  []string{"1-1:2-1:true:false"},
		},
		{
			name: "a request with Expect on another connection is not a repeat, open or closed",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "2-1", who: a, at: 2},
				{op: "clientend", id: "1-9", at: 3}, {op: "req+expect", id: "3-1", who: a, at: 4},
				{op: "req", id: "4-1", who: a, at: 5, retryOf: "1-1"}},
			want: []string{"1-1:4-1:true:false"},
		},
		{
			// Squid closes the connection that carried a 417; another
			// client's request of the same URL on a connection it already
			// used is not the repeat; the refused client's, on a new
			// connection, is.
			name: "a repeat with Expect on a connection's later request is not taken from another connection",
			steps: []step{{op: "417", id: "1-2", who: a, at: 1}, {op: "req+expect", id: "5-2", who: a, at: 1.1},
				{op: "req", id: "9-1", who: a, at: 1.2, retryOf: "1-2"}},
			want: []string{"1-2:9-1:true:false"},
		},
		{
			// Squid's 417s to two curls at once, each closing its
			// connection and opening the next at once, the second to close
			// sending its repeat first. Connections are numbered by their
			// first packet, closes by theirs (here the time in ms).
			name: "repeats on new connections go with the connection their client closed just before",
			steps: []step{{op: "417", id: "100-2", who: a, at: 1}, {op: "417", id: "200-2", who: a, at: 1.000008},
				{op: "clientend", id: "100-9", at: 1.002}, {op: "clientend", id: "200-9", at: 1.004},
				{op: "req", id: "1005-1", who: a, at: 1.006, retryOf: "200-2"}, {op: "req", id: "1003-1", who: a, at: 1.007, retryOf: "100-2"}},
			want: []string{"200-2:1005-1:true:false", "100-2:1003-1:true:false"},
		},
		{
			// Node's agent: sockets stuck after 417s the server closes
			// together, the queued repeats going out on new sockets in the
			// order they were made, not the order the sockets closed.
			name: "417s of different moments are repeated in their order, whatever order the connections closed in",
			steps: []step{{op: "417", id: "100-2", who: a, at: 1}, {op: "417", id: "200-2", who: a, at: 1.0005},
				{op: "clientend", id: "100-9", at: 6}, {op: "clientend", id: "200-9", at: 6.001},
				{op: "req", id: "6002-1", who: a, at: 6.003, retryOf: "100-2"}, {op: "req", id: "6004-1", who: a, at: 6.005, retryOf: "200-2"}},
			want: []string{"100-2:6002-1:true:false", "200-2:6004-1:true:false"},
		},
		{
			// Go's net/http after a 417: the refusing connection still carries
			// the body sent anyway, and the repeat goes out on an idle one.
			name:  "a repeat without Expect on another open connection (a client's pool) links",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "4-7", who: a, at: 1.1, retryOf: "1-1"}},
			want:  []string{"1-1:4-7:true:false"},
		},
		{
			// Node's agent: the repeats go out in the order the 417s came,
			// whichever connection the server closed first.
			name: "repeats on other connections take the 417s in their order, closing or not",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "417", id: "2-1", who: a, at: 2},
				{op: "req", id: "3-1", who: a, at: 3, retryOf: "1-1"}, {op: "req", id: "4-1", who: a, at: 4, retryOf: "2-1"}},
			want: []string{"1-1:3-1:true:false", "2-1:4-1:true:false"},
		},
		{
			name: "a retry with Expect takes its 417: a later request is not linked to it",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "1-2", who: a, at: 1.1, retryOf: "1-1"},
				{op: "req", id: "1-3", who: a, at: 1.2}, {op: "flush"}},
			want: []string{"1-1:1-2:false:false"},
		},
		{
			name: "a chain: refused, asked again, refused again, then repeated without Expect",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "1-2", who: a, at: 1.1, retryOf: "1-1"},
				{op: "417", id: "1-2", who: a, at: 1.2}, {op: "req", id: "1-3", who: a, at: 1.3, retryOf: "1-2"}},
			want: []string{"1-1:1-2:false:false", "1-2:1-3:true:false"},
		},
		{
			// curl with an explicit Expect header, run again and again from
			// one address: each run repeats its refused request on its own
			// connection, and the runs overlap. Every later run used to be
			// linked to the first 417.
			name: "the same upload over and over from one address links each run to its own 417",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req+expect", id: "5-1", who: a, at: 1.05},
				{op: "417", id: "5-1", who: a, at: 1.06}, {op: "req+expect", id: "1-2", who: a, at: 1.1, retryOf: "1-1"},
				{op: "req+expect", id: "5-2", who: a, at: 1.2, retryOf: "5-1"}, {op: "req+expect", id: "9-1", who: a, at: 3}, {op: "flush"}},
			want: []string{"1-1:1-2:false:false", "5-1:5-2:false:false"},
		},
		{
			name: "a repeat on the refusing connection takes that connection's 417 before an older one",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "417", id: "2-1", who: a, at: 2},
				{op: "req", id: "2-2", who: a, at: 2.1, retryOf: "2-1"}, {op: "req", id: "3-1", who: a, at: 3, retryOf: "1-1"}},
			want: []string{"2-1:2-2:true:false", "1-1:3-1:true:false"},
		},
		{
			name: "another identity is not a retry",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "req", id: "2-1", who: b, at: 2}, {op: "req", id: "3-1", who: other, at: 2},
				{op: "flush"}},
			want: []string{"1-1::false:false"},
		},
		{
			name:  "a request before the 417 is not its retry",
			steps: []step{{op: "417", id: "1-1", who: a, at: 5}, {op: "req", id: "1-0", who: a, at: 4}, {op: "flush"}},
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
			name: "two 417s of one request on closing connections: the first is retried first",
			steps: []step{{op: "417", id: "1-1", who: a, at: 1}, {op: "417", id: "2-1", who: a, at: 2}, {op: "clientend", id: "2-9", at: 2.5},
				{op: "req", id: "3-1", who: a, at: 3, retryOf: "1-1"}, {op: "req", id: "4-1", who: a, at: 4, retryOf: "2-1"}},
			want: []string{"1-1:3-1:true:false", "2-1:4-1:true:false"},
		},
		{
			name:  "flush releases in the order of the 417s",
			steps: []step{{op: "417", id: "2-1", who: b, at: 1}, {op: "417", id: "1-1", who: a, at: 2}, {op: "flush"}},
			want:  []string{"2-1::false:false", "1-1::false:false"},
		},
	}
	// A negotiation's id is its connection's first packet, a dash and its
	// place on the connection, as an Analyzer names it.
	connOf := func(id string) uint64 {
		n, err := strconv.ParseUint(id[:strings.IndexByte(id, '-')], 10, 64)
		if err != nil {
			t.Fatalf("id %q", id)
		}
		return n
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
					l.Rejected(s.id, connOf(s.id), s.who, sec(s.at), s.id)
				case "clientend": // the client of id's connection closes it
					l.Advance(sec(s.at))
					l.ClientClosed(connOf(s.id), uint64(s.at*1000))
				case "req", "req+expect":
					l.Advance(sec(s.at))
					if r := l.Request(s.id, connOf(s.id), s.who, sec(s.at), s.op == "req+expect", strings.HasSuffix(s.id, "-1")); r != s.retryOf {
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
