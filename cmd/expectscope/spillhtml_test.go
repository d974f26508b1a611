package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/report"
)

// TestSpillRenderMatchesRender: --html and --ladder drawn from a spill on
// disk, record by record in passes (renderSpill), give the bytes of
// drawing them from every record in memory (render), with and without
// filters: the corpus (hops, retries, every verdict) repeated until the
// timeline is binned, in coarser cells than the first, and the table and
// the ladders are cut.
func TestSpillRenderMatchesRender(t *testing.T) {
	base := uncorrelatedCorpus(t)
	var emitted []*analyze.Record
	negs := 0
	for k := 0; negs <= report.DefaultMaxMarks+500; k++ {
		for _, r := range cloneRecords(t, base) {
			// Repeats a few milliseconds apart: their marks share cells.
			r.ID = fmt.Sprintf("%s~%d", r.ID, k)
			shift := time.Duration(k) * 3 * time.Millisecond
			r.HeadersEndAt = r.HeadersEndAt.Add(shift)
			if r.RetriedBy != nil {
				s := fmt.Sprintf("%s~%d", *r.RetriedBy, k)
				r.RetriedBy = &s
			}
			if r.RetryOf != nil {
				s := fmt.Sprintf("%s~%d", *r.RetryOf, k)
				r.RetryOf = &s
			}
			if r.Type == analyze.TypeNegotiation {
				negs++
			}
			emitted = append(emitted, r)
		}
	}
	sp, err := newSpill()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, r := range emitted {
		sp.Emit(r)
	}
	if err := sp.finish(); err != nil {
		t.Fatal(err)
	}
	if sp.held {
		t.Fatal("the records stayed in memory: the test proves nothing")
	}
	cands, err := sp.candidates()
	if err != nil {
		t.Fatal(err)
	}
	hops := analyze.Correlate(cands)
	report.SortHops(hops)
	if len(hops) == 0 {
		t.Fatal("no hop: the test proves nothing")
	}
	patched := map[string]*analyze.Record{}
	for _, r := range cands {
		patched[r.ID] = r
	}
	var all []*analyze.Record
	if err := sp.each(patched, func(r *analyze.Record) error { all = append(all, r); return nil }); err != nil {
		t.Fatal(err)
	}
	input := map[string]uint64{"packets": 7}
	warnings := []string{"a warning"}
	dir := t.TempDir()
	for i, c := range []struct {
		name string
		o    readOptions
	}{
		{"html", readOptions{outputOptions: outputOptions{format: report.FormatNDJSON}}},
		{"html all", readOptions{outputOptions: outputOptions{format: report.FormatCSV}, all: true}},
		{"html summary, verdict", readOptions{outputOptions: outputOptions{format: report.FormatTable, summary: true, verdicts: []string{"rejected", "timed-out"}}}},
		{"html since", readOptions{outputOptions: outputOptions{format: report.FormatJSON, since: "0.5s"}}},
		{"ladders", readOptions{outputOptions: outputOptions{format: report.FormatTable, ladder: ladderAll}}},
		{"ladders markdown all", readOptions{outputOptions: outputOptions{format: report.FormatMarkdown, ladder: ladderAll}, all: true}},
		{"ladders flag", readOptions{outputOptions: outputOptions{format: report.FormatTable, ladder: ladderAll, flags: []string{"unread-body"}}}},
		{"ladder of an upstream leg", readOptions{outputOptions: outputOptions{format: report.FormatTable, ladder: hops[0].Upstream.ID}}},
		{"ladder of an exchange", readOptions{outputOptions: outputOptions{format: report.FormatTable, ladder: firstExchange(t, all)}}},
		{"ladder of no record", readOptions{outputOptions: outputOptions{format: report.FormatTable, ladder: "no-such-id"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, got := c.o, c.o
			if !strings.HasPrefix(c.name, "ladder") {
				want.html = filepath.Join(dir, fmt.Sprintf("%d-want.html", i))
				got.html = filepath.Join(dir, fmt.Sprintf("%d-got.html", i))
			}
			var wantOut, gotOut bytes.Buffer
			_, wantErr := want.render(&wantOut, c.o.format, append([]*analyze.Record(nil), all...), append([]*analyze.Hop(nil), hops...), c.o.all, input, warnings)
			_, _, gotErr := got.renderSpill(&gotOut, c.o.format, sp, patched, hops, input, warnings)
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
				t.Fatalf("error %v, want %v", gotErr, wantErr)
			}
			if wantErr != nil {
				return
			}
			if gotOut.String() != wantOut.String() {
				t.Errorf("output differs: %d bytes, want %d", gotOut.Len(), wantOut.Len())
			}
			if want.html == "" {
				return
			}
			w, err := os.ReadFile(want.html)
			if err != nil {
				t.Fatal(err)
			}
			g, err := os.ReadFile(got.html)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(g, w) {
				t.Errorf("HTML differs: %d bytes, want %d", len(g), len(w))
			}
			if c.name == "html" {
				for _, s := range []string{"The table shows 2000 of", `negotiation(s), `} {
					if !bytes.Contains(g, []byte(s)) {
						t.Errorf("the page lacks %q: cut table, binned timeline not tested", s)
					}
				}
			}
		})
	}
}

func firstExchange(t *testing.T, recs []*analyze.Record) string {
	for _, r := range recs {
		if r.Type != analyze.TypeNegotiation {
			return r.ID
		}
	}
	t.Fatal("no exchange among the records")
	return ""
}
