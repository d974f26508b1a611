package report

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/expectscope/expectscope/analyze"
)

// TestAppendCountsJSON: the hand encoder writes what encoding/json writes
// for summaries with every field set at random (nil, empty and full maps
// and slices; strings with control characters and invalid UTF-8; floats
// near the exponent thresholds, and NaN, which both refuse).
func TestAppendCountsJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	refused := 0
	for i := range 20000 {
		var c Counts
		fill(rng, reflect.ValueOf(&c).Elem())
		if rng.IntN(200) == 0 {
			nan := math.NaN()
			if len(c.Servers) > 0 && c.Servers[0] != nil {
				c.Servers[0].Wait100.P90 = &nan
			} else {
				c.LostMs = math.Inf(1)
			}
		}
		want, werr := marshalStd(t, &c)
		got, gerr := AppendCountsJSON(nil, &c)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("summary %d: error %v, encoding/json %v", i, gerr, werr)
		}
		if werr != nil {
			refused++
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("summary %d differs:\n got %s\nwant %s", i, got, want)
		}
	}
	if refused == 0 {
		t.Fatal("no summary was refused: the refusals went untested")
	}
}

// TestAppendCountsJSONOfTally: a summary as the tally makes it.
func TestAppendCountsJSONOfTally(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	tl := NewTallier()
	verdicts := []analyze.Verdict{analyze.Continued, analyze.Rejected, analyze.FinalBeforeBody, analyze.TimedOut, analyze.NoWait}
	for range 300 {
		var r analyze.Record
		fill(rng, reflect.ValueOf(&r).Elem())
		r.Type = analyze.TypeNegotiation
		r.Verdict = verdicts[rng.IntN(len(verdicts))]
		for _, f := range []**float64{&r.Wait100Ms, &r.ClientWaitMs, &r.LostMs} {
			if *f != nil {
				v := math.Round(rng.Float64()*2e6) / 1e3 // waits as the analyser rounds them
				*f = &v
			}
		}
		tl.Add(&r)
	}
	c := tl.Counts()
	c.Input = map[string]uint64{"packets": 10, "gaps": 0}
	c.Warnings = []string{"x.pcap: packet 3 at offset 80: record data: unexpected EOF"}
	want, err := marshalStd(t, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendCountsJSON(nil, c)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("err %v\n got %s\nwant %s", err, got, want)
	}
	for _, part := range []string{`"servers":[{`, `"clients":[{`, `"timeouts":[{`} {
		if !bytes.Contains(got, []byte(part)) {
			t.Errorf("the tally's summary has no %s: %s", part, got)
		}
	}
}

// BenchmarkTally adds 600 negotiations of three servers and two client
// families, with waits, and takes the summary: the part of the end of a
// run that is the tally's.
func BenchmarkTally(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]*analyze.Record, 600)
	for i := range recs {
		w, cw := math.Round(rng.Float64()*5e3)/1e3, math.Round(rng.Float64()*2e6)/1e3
		recs[i] = &analyze.Record{Type: analyze.TypeNegotiation, Verdict: analyze.Continued,
			Conn:      analyze.Conn{Client: "10.0.0.2:40000", Server: []string{"10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:8080"}[i%3]},
			Request:   analyze.Request{Host: "example", UserAgent: []string{"curl/8.5.0", "Go-http-client/1.1"}[i%2]},
			Wait100Ms: &w, ClientWaitMs: &cw}
	}
	b.ReportAllocs()
	for b.Loop() {
		tl := NewTallier()
		for _, r := range recs {
			tl.Add(r)
		}
		tl.Counts()
	}
}

// TestPercentilesBySelection: the percentiles found by selection are the
// nearest-rank values of the sorted set, on sets of every size up to 300
// with few and many distinct values.
func TestPercentilesBySelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 19))
	for i := range 3000 {
		n := rng.IntN(301)
		distinct := 1 + rng.IntN(1+rng.IntN(400))
		vals := make([]float64, n)
		for j := range vals {
			vals[j] = float64(rng.IntN(distinct)) * 0.125
		}
		sorted := slices.Clone(vals)
		slices.Sort(sorted)
		got := percentiles(vals)
		for _, c := range []struct {
			q   float64
			got *float64
		}{{50, got.P50}, {90, got.P90}, {99, got.P99}} {
			want, ok := NearestRank(sorted, c.q)
			if ok != (c.got != nil) || ok && *c.got != want {
				t.Fatalf("set %d (n=%d): p%v = %v, want %v (%v)", i, n, c.q, c.got, want, ok)
			}
		}
		if got.N != n {
			t.Fatalf("n %d, want %d", got.N, n)
		}
		slices.Sort(vals)
		if !slices.Equal(vals, sorted) {
			t.Fatalf("set %d: values lost or changed", i)
		}
	}
}

// FuzzAppendCountsJSON compares the summary's hand encoder with
// encoding/json on arbitrary strings (User-Agents, Hosts, endpoints and
// warnings come from the wire) and floats.
func FuzzAppendCountsJSON(f *testing.F) {
	f.Add("curl/8\xff", "host\u2028", "10.0.0.1:80", "w\x00", 1.5e-7, 3)
	f.Add("", "<>&", "", "", 1e21, 0)
	f.Fuzz(func(t *testing.T, ua, host, endpoint, warning string, ms float64, n int) {
		c := &Counts{Type: "summary", Negotiations: n, Exchanges: n / 2, Hops: n % 3,
			Verdicts: map[string]int{ua: n, host: 1}, Flags: map[string]int{warning: n},
			LostMs: ms, WastedBytes: int64(n),
			Wait100: Percentiles{N: n, P50: &ms}, ClientWait: Percentiles{N: 1, P99: &ms},
			Servers:  []*Group{{Key: endpoint + " " + host, Endpoint: endpoint, Host: host, Negotiations: n, Verdicts: map[string]int{ua: 1}, LostMs: ms}},
			Clients:  []*Group{{Key: ua, Verdicts: map[string]int{}}, nil},
			Timeouts: []*TimerFired{{Client: ua, TimerMs: n, Count: n, UserAgents: []string{ua, host}, MedianWait: &ms}},
			Input:    map[string]uint64{endpoint: uint64(n), "packets": 1},
			Warnings: []string{warning}}
		want, werr := marshalStd(t, c)
		got, gerr := AppendCountsJSON(nil, c)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("error %v, encoding/json %v", gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs:\n got %s\nwant %s", got, want)
		}
	})
}
