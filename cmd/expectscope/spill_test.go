package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/report"
)

// cloneRecords deep-copies records through JSON, as the spill does.
func cloneRecords(t *testing.T, recs []*analyze.Record) []*analyze.Record {
	t.Helper()
	out := make([]*analyze.Record, len(recs))
	for i, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = new(analyze.Record)
		if err := json.Unmarshal(b, out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestSpillOrderAndCandidates: records spilled in emit order, held in
// memory or on disk (in runs much smaller than usual), come back in
// report.Sort order, and correlating only the candidates gives the hops
// and record changes of correlating everything.
func TestSpillOrderAndCandidates(t *testing.T) {
	for _, every := range []int{0, 7} {
		t.Run(fmt.Sprintf("run every %d", every), func(t *testing.T) { testSpillOrderAndCandidates(t, every) })
	}
}

// testSpillOrderAndCandidates writes a run every so many records (never
// for 0: all are held).
func testSpillOrderAndCandidates(t *testing.T, every int) {
	emitted := uncorrelatedCorpus(t)
	want := cloneRecords(t, emitted)
	wantHops := analyze.Correlate(want)
	report.Sort(want)
	report.SortHops(wantHops)
	if len(wantHops) == 0 {
		t.Fatal("the corpus has no hop: the test proves nothing")
	}

	sp, err := newSpill()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for i, r := range cloneRecords(t, emitted) {
		sp.Emit(r)
		if every > 0 && i%every == 0 {
			sp.mu.Lock()
			if err := sp.flushRun(); err != nil {
				t.Fatal(err)
			}
			sp.mu.Unlock()
		}
	}
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	if sp.held != (every == 0) {
		t.Fatalf("held %v after runs every %d", sp.held, every)
	}
	cands, err := sp.candidates()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d records are candidate legs", len(cands), len(emitted))
	hops := analyze.Correlate(cands)
	report.SortHops(hops)
	patched := map[string]*analyze.Record{}
	for _, r := range cands {
		patched[r.ID] = r
	}
	var got []*analyze.Record
	if err := sp.each(patched, func(r *analyze.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		e.Encode(v)
		return b.String()
	}
	if g, w := enc(got), enc(want); g != w {
		t.Errorf("records differ (%d vs %d)", len(got), len(want))
	}
	if g, w := enc(hops), enc(wantHops); g != w {
		t.Errorf("hops differ:\n%s\nwant\n%s", g, w)
	}
}

// TestRecordWriterMatchesWrite: rendering records one at a time gives the
// bytes of report.Write over all of them, in every format, with hops and
// without records, and with records enough for several batches encoded
// on several cores at once.
func TestRecordWriterMatchesWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	recs := uncorrelatedCorpus(t)
	hops := analyze.Correlate(recs)
	report.Sort(recs)
	report.SortHops(hops)
	var many []*analyze.Record
	for len(many) < 1300 {
		many = append(many, recs...)
	}
	// Cells with spaces around them, wide and escaped characters: the
	// streamed table must size them as tablewriter does.
	var odd []*analyze.Record
	for i, ua := range []string{"  spaced out  ", "漢字のクライアント", "tab\there\x1b[31m", ""} {
		r := *recs[i]
		r.Request.UserAgent = ua
		r.Request.Host = strings.Repeat("h", 3*i) + " "
		odd = append(odd, &r)
	}
	for _, format := range report.Formats {
		for _, c := range []struct {
			name string
			recs []*analyze.Record
			hops []*analyze.Hop
		}{{"all", recs, hops}, {"no hops", recs[:len(recs)/3], nil}, {"none", nil, nil}, {"many", many, hops}, {"odd cells", odd, nil}} {
			out := &report.Output{Records: c.recs, Hops: c.hops, Summary: report.Tally(c.recs)}
			var want, got bytes.Buffer
			if err := report.Write(&want, format, out, false); err != nil {
				t.Fatal(err)
			}
			for _, sized := range []bool{false, true} {
				if sized && format != report.FormatTable {
					continue
				}
				got.Reset()
				rw, err := report.NewRecordWriter(&got, format, c.hops)
				if err != nil {
					t.Fatal(err)
				}
				if sized { // the table streamed, sized by a first pass
					var start time.Time
					if len(c.recs) > 0 {
						start = c.recs[0].HeadersEndAt
					}
					z := report.NewTableSizer(start)
					for _, r := range c.recs {
						z.Add(r)
					}
					rw.Widths, rw.Start = z.Widths(), start
				}
				for _, r := range c.recs {
					if err := rw.Write(r); err != nil {
						t.Fatal(err)
					}
				}
				if err := rw.Close(c.hops, out.Summary); err != nil {
					t.Fatal(err)
				}
				if got.String() != want.String() {
					t.Errorf("%s (sized %v), %s: RecordWriter wrote\n%s\nwant\n%s", format, sized, c.name, got.String(), want.String())
				}
			}
		}
	}
}

// uncorrelatedCorpus is every record of the corpus in emit order, before
// correlation, ids made unique across captures.
func uncorrelatedCorpus(t *testing.T) []*analyze.Record {
	t.Helper()
	recs := corpusRecordsRaw(t)
	seen := map[string]bool{}
	for i, r := range recs {
		for seen[r.ID] {
			r.ID += "+" + string(rune('a'+i%26))
		}
		seen[r.ID] = true
	}
	return slices.Clip(recs)
}

// legRec is a negotiation between client and server, for the candidates tests.
func legRec(id, client, server string) *analyze.Record {
	return &analyze.Record{Type: analyze.TypeNegotiation, ID: id, Conn: analyze.Conn{Client: client, Server: server},
		Request: analyze.Request{Method: "PUT", Target: "/x"}, HeadersEndAt: rt0}
}

// candidateIDs finishes sp and returns the IDs of its candidates.
func candidateIDs(t *testing.T, sp *spill) []string {
	t.Helper()
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	cands, err := sp.candidates()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range cands {
		ids = append(ids, r.ID)
	}
	return ids
}

// TestSpillCandidates: only records that can be a leg of a hop are read
// back for correlation.
func TestSpillCandidates(t *testing.T) {
	via := legRec("via", "10.0.0.9:1000", "10.0.0.8:80")
	via.Final = &analyze.Final{Status: 417, Via: "1.1 squid"}
	xrid := legRec("xrid", "10.0.0.7:1000", "10.0.0.6:80")
	xrid.Request.XRequestID = "abc"
	recs := []*analyze.Record{
		legRec("plain", "10.0.0.1:1000", "10.0.0.2:80"),
		legRec("down", "10.0.0.1:1001", "10.0.0.3:3128"),
		legRec("up", "10.0.0.3:2000", "10.0.0.4:80"),
		via, xrid,
	}
	for _, held := range []bool{true, false} {
		sp, err := newSpill()
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		for _, r := range recs {
			sp.Emit(r)
		}
		if !held {
			sp.mu.Lock()
			err = sp.unhold()
			sp.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
		}
		if ids := candidateIDs(t, sp); !slices.Equal(ids, []string{"down", "up", "via", "xrid"}) {
			t.Errorf("held %v: candidates %v, want down up via xrid", held, ids)
		}
	}
}

// TestSpillMayBeLeg: candidates skips its passes over the legs only when
// they would find nothing, whichever comes first of a proxy's two legs.
func TestSpillMayBeLeg(t *testing.T) {
	down := legRec("down", "10.0.0.1:1001", "10.0.0.3:3128")
	up := legRec("up", "10.0.0.3:2000", "10.0.0.4:80")
	via := legRec("via", "10.0.0.9:1000", "10.0.0.8:80")
	via.Final = &analyze.Final{Status: 417, Via: "1.1 squid"}
	viaNo417 := legRec("via200", "10.0.0.9:1001", "10.0.0.8:80")
	viaNo417.Final = &analyze.Final{Status: 200, Via: "1.1 squid"}
	xff := legRec("xff", "10.0.0.7:1000", "10.0.0.6:80")
	xff.Request.XForwardedFor = "10.0.0.1"
	plain := func(n int) []*analyze.Record {
		var recs []*analyze.Record
		for i := range n {
			recs = append(recs, legRec(fmt.Sprintf("p%d", i), fmt.Sprintf("10.1.%d.%d:1000", i/250, i%250), "10.0.0.2:80"))
		}
		return recs
	}
	for _, tc := range []struct {
		name string
		recs []*analyze.Record
		want []string
	}{
		{"plain", plain(3), nil},
		{"many clients", plain(5000), nil},
		{"down then up", append(plain(2), down, up), []string{"down", "up"}},
		{"up then down", append(plain(2), up, down), []string{"up", "down"}},
		{"via on a 417", append(plain(2), via), []string{"via"}},
		{"via on a 200", append(plain(2), viaNo417), nil},
		{"x-forwarded-for", append(plain(2), xff), []string{"xff"}},
	} {
		sp, err := newSpill()
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		for _, r := range tc.recs {
			sp.Emit(r)
		}
		ids := candidateIDs(t, sp)
		if skipped := !sp.mayBeLeg; !slices.Equal(ids, tc.want) || skipped != (tc.want == nil) {
			t.Errorf("%s: candidates %v (passes skipped: %v), want %v", tc.name, ids, skipped, tc.want)
		}
	}
}

// TestSpillGoesToDisk: past spillHeld records the spill writes runs and
// still gives every record back in order.
// diskSpill spills n negotiations, emitted out of time order, and
// checks that they went to disk.
func diskSpill(t *testing.T, n int) *spill {
	t.Helper()
	sp, err := newSpill()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	for i := range n {
		at := rt0.Add(time.Duration((i*7919)%n) * time.Millisecond) // emitted out of order
		sp.Emit(&analyze.Record{Type: analyze.TypeNegotiation, ID: fmt.Sprintf("%d-1", i), HeadersEndAt: at})
	}
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	if sp.held || len(sp.runs) == 0 {
		t.Fatalf("held %v, %d runs: want records on disk", sp.held, len(sp.runs))
	}
	return sp
}

func TestSpillGoesToDisk(t *testing.T) {
	n := spillHeld*2 + 3
	sp := diskSpill(t, n)
	var last time.Time
	got := 0
	if err := sp.each(nil, func(r *analyze.Record) error {
		if r.HeadersEndAt.Before(last) {
			t.Fatalf("record %s at %v after %v", r.ID, r.HeadersEndAt, last)
		}
		last = r.HeadersEndAt
		got++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("%d records back, want %d", got, n)
	}
}

// TestSpillEachAhead: reading ahead on another goroutine gives the
// records each gives, in the same order; fn stopping early (errStop, or
// an error) stops the reader and is what it returns.
func TestSpillEachAhead(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	n := spillHeld*3 + 17
	sp := diskSpill(t, n)
	var want, got []string
	if err := sp.each(nil, func(r *analyze.Record) error { want = append(want, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := sp.eachAhead(nil, func(r *analyze.Record) error { got = append(got, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) || len(got) != n {
		t.Fatalf("eachAhead gave %d records, each %d (of %d), or another order", len(got), len(want), n)
	}
	boom := errors.New("boom")
	for _, stopAt := range []int{1, 255, 256, 257, 5000} {
		for _, c := range []struct{ fnErr, want error }{{errStop, nil}, {boom, boom}} {
			k := 0
			err := sp.eachAhead(nil, func(*analyze.Record) error {
				if k++; k == stopAt {
					return c.fnErr
				}
				return nil
			})
			if err != c.want || k != stopAt {
				t.Errorf("fn returns %v at record %d: eachAhead returned %v after %d records", c.fnErr, stopAt, err, k)
			}
		}
	}
}
