package report

import (
	"bufio"
	"io"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// HTMLBuilder builds the page of WriteHTML from records given one at a
// time, in report order, in as many passes over them as it asks for
// (NextPass), holding a bounded number of them however many there are:
// the first pass measures (time span, longest wait, counts) and keeps
// the records the table and the ladders can show, at most MaxRows of
// each kind and MaxLadders; the next draws the timeline, and while its
// bins are more than MaxMarks, another pass bins again coarser.
//
//	b := NewHTMLBuilder(opts, hops, lookup, start)
//	for b.NextPass() {
//		for each record r { b.Add(r) }
//	}
//	b.Write(w, summary)
type HTMLBuilder struct {
	opts   HTMLOptions
	hops   []*analyze.Hop
	lookup func(id string) *analyze.Record
	t0     time.Time
	pass   int // passes begun

	// The first pass.
	tally       *Tallier
	records     int
	negs        int
	first, last time.Time
	yMax        float64
	verdicts    map[string]int
	flagged     int
	// The table: the first MaxRows flagged records and the first MaxRows
	// others, with their positions among the records.
	rowsFlagged, rowsOther     []*analyze.Record
	rowsFlaggedAt, rowsOtherAt []int
	flaggedRecords             int
	// Ladders: the records that want one in order, the upstream legs of
	// hops among them decided at the end (drawn inside their hop's ladder
	// if its downstream leg came too); others after MaxLadders are only
	// counted.
	down, up     map[string]*analyze.Hop
	downSeen     map[string]bool
	ladderPicks  []*analyze.Record
	ladderOthers int

	// The passes after.
	chart *chart
	scale *chartScale
	bins  *chartBins
}

// NewHTMLBuilder starts a page with opts (defaults as WriteHTML's), the
// selected hops, a lookup of any record by id (at least every hop's
// legs) and the time the table's offsets count from (the first record's,
// before any filter).
func NewHTMLBuilder(opts HTMLOptions, hops []*analyze.Hop, lookup func(id string) *analyze.Record, start time.Time) *HTMLBuilder {
	if opts.MaxMarks <= 0 {
		opts.MaxMarks = DefaultMaxMarks
	}
	if opts.MaxRows <= 0 {
		opts.MaxRows = DefaultMaxRows
	}
	if opts.MaxLadders <= 0 {
		opts.MaxLadders = DefaultMaxLadders
	}
	if opts.Title == "" {
		opts.Title = "expectscope report"
	}
	b := &HTMLBuilder{opts: opts, hops: hops, lookup: lookup, t0: start, tally: NewTallier(),
		yMax: 1000, verdicts: map[string]int{},
		down: map[string]*analyze.Hop{}, up: map[string]*analyze.Hop{}, downSeen: map[string]bool{}}
	for _, h := range hops {
		b.down[h.Downstream.ID] = h
		b.up[h.Upstream.ID] = h
	}
	return b
}

// NextPass reports whether the builder wants (another) pass over the
// records, and readies it.
func (b *HTMLBuilder) NextPass() bool {
	switch {
	case b.pass == 0: // measure
	case b.pass == 1: // the timeline's marks, one by one or binned
		b.chart, b.scale = newChart(b.negs, b.first, b.last, b.t0, b.yMax, b.verdicts)
		if b.negs == 0 {
			return false
		}
		if b.negs > b.opts.MaxMarks {
			b.bins = newChartBins(3)
		}
	case b.bins != nil && b.bins.over: // more bins than marks: coarser
		b.bins = newChartBins(b.bins.cell * 1.5)
	default:
		if b.bins != nil {
			b.bins.marks(b.chart)
			b.bins = nil
		}
		return false
	}
	b.pass++
	return true
}

// Add takes the next record of the pass, in report order.
func (b *HTMLBuilder) Add(r *analyze.Record) {
	if b.pass > 1 {
		if r.Type != analyze.TypeNegotiation {
			return
		}
		if b.bins != nil {
			b.bins.add(b.scale, r, b.opts.MaxMarks)
		} else {
			b.chart.addMark(b.scale, r)
		}
		return
	}
	b.tally.Add(r)
	need := NeedsLadder(r)
	if need {
		if len(b.rowsFlagged) < b.opts.MaxRows {
			b.rowsFlagged = append(b.rowsFlagged, r)
			b.rowsFlaggedAt = append(b.rowsFlaggedAt, b.records)
		}
		b.flaggedRecords++
	} else if len(b.rowsOther) < b.opts.MaxRows {
		b.rowsOther = append(b.rowsOther, r)
		b.rowsOtherAt = append(b.rowsOtherAt, b.records)
	}
	b.records++
	if b.down[r.ID] != nil {
		b.downSeen[r.ID] = true
	}
	if need || b.down[r.ID] != nil {
		switch {
		case b.up[r.ID] != nil:
			b.ladderPicks = append(b.ladderPicks, r) // decided at the end
		case b.ladderOthers < b.opts.MaxLadders:
			b.ladderPicks = append(b.ladderPicks, r)
			b.ladderOthers++
		default:
			b.ladderOthers++
		}
	}
	if r.Type != analyze.TypeNegotiation {
		return
	}
	if b.negs == 0 || r.HeadersEndAt.Before(b.first) {
		b.first = r.HeadersEndAt
	}
	if b.negs == 0 || r.HeadersEndAt.After(b.last) {
		b.last = r.HeadersEndAt
	}
	b.negs++
	if v, _, ok := chartWait(r); ok && v > b.yMax {
		b.yMax = v
	}
	b.verdicts[string(r.Verdict)]++
	if need {
		b.flagged++
	}
}

// Counts is the summary of the records of the first pass, as Tally
// gives it.
func (b *HTMLBuilder) Counts() *Counts { return b.tally.Counts() }

// Write writes the page, with c as its summary, once the passes are done.
func (b *HTMLBuilder) Write(w io.Writer, c *Counts) error {
	htmlOnce.Do(parseHTML)
	if b.chart == nil { // no pass after the first
		b.chart, _ = newChart(b.negs, b.first, b.last, b.t0, b.yMax, b.verdicts)
	}
	p := b.page(c)
	bw := bufio.NewWriterSize(w, 64<<10)
	if err := htmlTmpl.Execute(bw, p); err != nil {
		return err
	}
	return bw.Flush()
}
