package report

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// buildAll runs b's passes over recs and returns how many there were.
func buildAll(b *HTMLBuilder, recs []*analyze.Record) int {
	passes := 0
	for b.NextPass() {
		passes++
		for _, r := range recs {
			b.Add(r)
		}
	}
	return passes
}

// TestHTMLBuilderHoldsLittle: whatever the number of records, the builder
// keeps at most MaxRows of each kind for the table and MaxLadders for the
// ladders (and the hops' legs), and its timeline at most MaxMarks bins.
func TestHTMLBuilderHoldsLittle(t *testing.T) {
	verdicts := []analyze.Verdict{analyze.Continued, analyze.Rejected, analyze.Continued, analyze.TimedOut, analyze.Unanswered}
	var recs []*analyze.Record
	for i := range 30_000 {
		recs = append(recs, htmlRecord(fmt.Sprintf("%d-1", i), time.Duration(i)*time.Millisecond, verdicts[i%len(verdicts)]))
	}
	opts := HTMLOptions{MaxRows: 50, MaxLadders: 7, MaxMarks: 40}
	b := NewHTMLBuilder(opts, nil, func(string) *analyze.Record { return nil }, recs[0].HeadersEndAt)
	passes := 0
	for b.NextPass() {
		passes++
		maxBins := 0
		for _, r := range recs {
			b.Add(r)
			if b.bins != nil {
				maxBins = max(maxBins, len(b.bins.bins))
			}
		}
		if maxBins > opts.MaxMarks {
			t.Errorf("pass %d held %d bins, more than %d", passes, maxBins, opts.MaxMarks)
		}
	}
	if len(b.rowsFlagged) > opts.MaxRows || len(b.rowsOther) > opts.MaxRows || len(b.ladderPicks) > opts.MaxLadders {
		t.Errorf("held %d+%d rows and %d ladder picks", len(b.rowsFlagged), len(b.rowsOther), len(b.ladderPicks))
	}
	// 30 000 negotiations over 30 s in 40 marks: the 3-pixel cells of the
	// first binning are far too many, so the timeline took coarser passes.
	if passes < 4 {
		t.Errorf("%d passes: the timeline was not binned again", passes)
	}
	p := b.page(b.Counts())
	n := 0
	for _, m := range p.Chart.Marks {
		n += m.Count
	}
	if !p.Chart.Binned || len(p.Chart.Marks) > opts.MaxMarks || n != len(recs) {
		t.Errorf("binned %v, %d marks holding %d negotiations, want at most %d holding %d", p.Chart.Binned, len(p.Chart.Marks), n, opts.MaxMarks, len(recs))
	}
	if len(p.Ladders) != opts.MaxLadders || p.LaddersNeeded != len(recs)*3/5 {
		t.Errorf("%d ladders of %d needed, want %d of %d", len(p.Ladders), p.LaddersNeeded, opts.MaxLadders, len(recs)*3/5)
	}
}

// TestHTMLBuilderRows: a table with room for every record shows them in
// the order they came, flagged or not; a cut one takes the flagged first,
// then the earliest others, shown in time order.
func TestHTMLBuilderRows(t *testing.T) {
	vs := []analyze.Verdict{analyze.Continued, analyze.Rejected, analyze.Rejected, analyze.Continued, analyze.TimedOut, analyze.Continued, analyze.Continued}
	var recs []*analyze.Record
	for i, v := range vs {
		recs = append(recs, htmlRecord(fmt.Sprintf("%d-1", i), time.Duration(i)*time.Second, v))
	}
	ids := func(rows []tableRow) []string {
		var s []string
		for _, r := range rows {
			s = append(s, r.ID)
		}
		return s
	}
	for _, c := range []struct {
		maxRows int
		want    []string
		note    bool
	}{
		{7, []string{"0-1", "1-1", "2-1", "3-1", "4-1", "5-1", "6-1"}, false},
		{5, []string{"0-1", "1-1", "2-1", "3-1", "4-1"}, true},
		{4, []string{"0-1", "1-1", "2-1", "4-1"}, true},
		{2, []string{"1-1", "2-1"}, true},
	} {
		b := NewHTMLBuilder(HTMLOptions{MaxRows: c.maxRows}, nil, func(string) *analyze.Record { return nil }, recs[0].HeadersEndAt)
		buildAll(b, recs)
		rows, total, note := b.rows(nil)
		if got := ids(rows); !slices.Equal(got, c.want) || total != len(recs) || (note != "") != c.note {
			t.Errorf("MaxRows %d: rows %v of %d, note %q; want %v", c.maxRows, got, total, note, c.want)
		}
	}
}

// TestHTMLBuilderLadders: a hop's upstream leg is drawn inside its hop's
// ladder when its downstream leg is among the records, whichever comes
// first; alone otherwise; and ladders past MaxLadders are counted.
func TestHTMLBuilderLadders(t *testing.T) {
	down := htmlRecord("1-1", 2*time.Second, analyze.Rejected)
	up := htmlRecord("2-1", time.Second, analyze.Rejected) // before its downstream leg
	up.Conn = analyze.Conn{Client: "10.0.0.5:50000", Server: "10.0.0.9:80"}
	hop := &analyze.Hop{Type: "hop", Intermediary: "proxy",
		Downstream: analyze.Endpoint{ID: down.ID, Client: down.Conn.Client, Server: down.Conn.Server},
		Upstream:   analyze.Endpoint{ID: up.ID, Client: up.Conn.Client, Server: up.Conn.Server}}
	other := htmlRecord("3-1", 3*time.Second, analyze.TimedOut)
	byID := map[string]*analyze.Record{down.ID: down, up.ID: up, other.ID: other}
	lookup := func(id string) *analyze.Record { return byID[id] }
	for _, c := range []struct {
		name       string
		recs       []*analyze.Record
		maxLadders int
		want       []string
		needed     int
	}{
		{"both legs", []*analyze.Record{up, down, other}, 5, []string{"1-1", "3-1"}, 2},
		{"upstream leg alone", []*analyze.Record{up, other}, 5, []string{"2-1", "3-1"}, 2},
		{"cut", []*analyze.Record{up, down, other}, 1, []string{"1-1"}, 2},
		{"cut, upstream alone", []*analyze.Record{up, other}, 1, []string{"2-1"}, 2},
	} {
		b := NewHTMLBuilder(HTMLOptions{MaxLadders: c.maxLadders}, []*analyze.Hop{hop}, lookup, htmlT0)
		buildAll(b, c.recs)
		ls, needed := b.ladders()
		var got []string
		for _, l := range ls {
			got = append(got, l.RecordID)
		}
		if !slices.Equal(got, c.want) || needed != c.needed {
			t.Errorf("%s: ladders %v of %d needed, want %v of %d", c.name, got, needed, c.want, c.needed)
		}
	}
}
