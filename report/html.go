package report

import (
	"cmp"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

//go:embed html/report.html.tmpl html/style.css html/table.js
var htmlFS embed.FS

// Default limits of an HTML report: a capture of any size makes a page a
// browser still opens (about 3 MB at these limits).
const (
	DefaultMaxMarks   = 5000
	DefaultMaxRows    = 2000
	DefaultMaxLadders = 40
)

// HTMLOptions tune WriteHTML. The zero value is usable.
type HTMLOptions struct {
	// Title heads the page ("expectscope report" when empty).
	Title string
	// Inputs names what was read (capture or ndjson files), for the header.
	Inputs []string
	// All is every record known, exchanges included, to find the other
	// leg of a hop; nil means out.Records.
	All []*analyze.Record
	// MaxMarks bounds the marks of the timeline: above it negotiations are
	// binned by position and verdict, one mark a bin.
	MaxMarks int
	// MaxRows bounds the rows of the table of negotiations.
	MaxRows int
	// MaxLadders bounds the ladder diagrams drawn.
	MaxLadders int
}

var (
	htmlTmpl   *template.Template
	htmlStyle  template.CSS
	htmlScript template.JS
	htmlCSP    template.HTMLAttr
	htmlOnce   sync.Once
)

// parseHTML parses the page template, once, when a page is first
// written: every run of the command would pay for it otherwise.
func parseHTML() {
	css, err := htmlFS.ReadFile("html/style.css")
	if err != nil {
		panic(err)
	}
	js, err := htmlFS.ReadFile("html/table.js")
	if err != nil {
		panic(err)
	}
	htmlStyle, htmlScript = template.CSS(css), template.JS(js)
	// The page runs no script and applies no style but ours: even text
	// that escaped escaping could not load or run anything.
	hash := func(b []byte) string {
		h := sha256.Sum256(b)
		return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
	}
	htmlCSP = template.HTMLAttr(`content="default-src 'none'; img-src data:; style-src ` + hash(css) + "; script-src " + hash(js) + `"`)
	htmlTmpl = template.Must(template.New("report.html.tmpl").Funcs(template.FuncMap{
		"vclass": verdictClass,
	}).ParseFS(htmlFS, "html/report.html.tmpl"))
}

// WriteHTML writes out as one self-contained HTML page: the summary, a
// timeline of every negotiation's waits, ladder diagrams of the flagged
// negotiations and of each hop, and a table of the negotiations. The page
// loads nothing (no fonts, scripts or styles from elsewhere) and reads
// without script; its few lines of script only sort and filter the table.
// Text from the wire goes through Escape, then html/template.
func WriteHTML(w io.Writer, out *Output, opts HTMLOptions) error {
	byID := map[string]*analyze.Record{}
	for _, r := range opts.All {
		byID[r.ID] = r
	}
	for _, r := range out.Records {
		byID[r.ID] = r
	}
	b := NewHTMLBuilder(opts, out.Hops, func(id string) *analyze.Record { return byID[id] }, out.start())
	for b.NextPass() {
		for _, r := range out.Records {
			b.Add(r)
		}
	}
	c := out.Summary
	if c == nil {
		c = b.Counts()
		c.Hops = len(out.Hops)
	}
	return b.Write(w, c)
}

// htmlPage is what the template renders.
type htmlPage struct {
	Title          string
	Inputs         []string
	CSP            template.HTMLAttr
	Style          template.CSS
	Script         template.JS
	Start, End     string
	Span           string
	S              *Counts
	Cards          []card
	Bar            []barSeg
	Verdicts       []verdictRow
	Flags          []flagRow
	Servers        []groupRow
	Clients        []groupRow
	Timers         []timerRow
	Chart          *chart
	Ladders        []*ladder
	LaddersNeeded  int
	Hops           []hopRow
	Rows           []tableRow
	RowsTotal      int
	RowsNote       string
	Warnings       []string
	VerdictOptions []string
}

type card struct {
	Label, Value, Sub, ID string
	Small                 bool
}

type barSeg struct {
	Verdict, Class, Title string
	X, W                  string
}

type verdictRow struct {
	Verdict, Class, Meaning string
	Count                   int
	Pct                     string
}

type flagRow struct {
	Flag, Rule, Meaning string
	Count               int
}

type groupRow struct {
	Key, Endpoint, Host string
	N                   int
	Mix                 []mixItem
	Wait100, ClientWait string
	Lost                string
	Wasted              int64
}

type mixItem struct {
	Verdict, Class string
	N              int
}

type timerRow struct {
	Client, Timer, Median string
	Count                 int
	UserAgents            []string
}

type hopRow struct {
	Intermediary, Down, Up, Changes, Lost, Anchor string
	Wasted                                        int64
}

type tableRow struct {
	ID, Anchor                string
	Offset                    string
	OffsetV                   string
	Client, Server, Host      string
	Method, Target, UserAgent string
	Status                    string
	StatusV                   int
	Verdict, Class            string
	W100, CW, Lost            string
	W100V, CWV, LostV         string
	Body                      string
	BodyV                     int64
	Flags                     []flagRow
	Diagnosis                 string
	Ladder                    string // anchor of its ladder, "" if none drawn
}

// verdictMeaning is the verdict table of the design, for the reader.
var verdictMeaning = map[analyze.Verdict]string{
	analyze.Continued:       "100 arrived before any body byte; the body followed",
	analyze.Rejected:        "417 arrived before any body byte; the client withheld the body",
	analyze.FinalBeforeBody: "another final status arrived before any body byte; body withheld",
	analyze.TimedOut:        "the client waited, got nothing, and sent the body anyway",
	analyze.NoWait:          "the client sent the body at once, without waiting",
	analyze.Unanswered:      "no response and no body before the connection or capture ended",
	analyze.Incomplete:      "capture gaps or truncation make the outcome undecidable",
}

// verdictClass is the CSS class of a verdict; verdicts this build does
// not know (ndjson from a newer run) share one.
func verdictClass(v string) string {
	if knownVerdict(v) {
		return "v-" + v
	}
	return "v-other"
}

// wire makes text from the wire printable (Escape) and bounds its length;
// html/template escapes it for HTML afterwards.
func wire(s string, n int) string { return Truncate(Escape(s), n) }

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func numAttr(v *float64) string {
	if v == nil {
		return "-1"
	}
	return strconv.FormatFloat(*v, 'f', -1, 64)
}

// page is the page of the records added, with c their summary.
func (b *HTMLBuilder) page(c *Counts) *htmlPage {
	opts := b.opts
	p := &htmlPage{Title: opts.Title, CSP: htmlCSP, Style: htmlStyle, Script: htmlScript, S: c}
	for _, in := range opts.Inputs {
		p.Inputs = append(p.Inputs, wire(in, 200))
	}
	if b.negs > 0 {
		p.Start = b.first.UTC().Format(time.RFC3339Nano)
		p.End = b.last.UTC().Format(time.RFC3339Nano)
		p.Span = fmtMsV(float64(b.last.Sub(b.first)) / float64(time.Millisecond))
	}

	// Cards: the headline numbers.
	flagged := b.flagged
	p.Cards = []card{
		{ID: "card-negotiations", Label: "negotiations", Value: strconv.Itoa(c.Negotiations), Sub: fmt.Sprintf("%d flagged or not continued", flagged)},
		{ID: "card-lost", Label: "time lost waiting", Value: fmtSeconds(c.LostMs), Sub: "clients waiting in vain"},
		{ID: "card-wasted", Label: "uploaded in vain", Value: fmtBytes(c.WastedBytes), Sub: fmt.Sprintf("%d bytes refused after upload", c.WastedBytes)},
		{ID: "card-cw", Label: "client wait p50 / p90 / p99", Value: fmtPct(c.ClientWait), Small: true, Sub: fmt.Sprintf("headers end to first body byte, n=%d", c.ClientWait.N)},
		{ID: "card-w100", Label: "100 wait p50 / p90 / p99", Value: fmtPct(c.Wait100), Small: true, Sub: fmt.Sprintf("headers end to first 100, n=%d", c.Wait100.N)},
	}

	// Verdicts, in report order, unknown ones last.
	var vs []string
	for _, v := range analyze.Verdicts {
		if c.Verdicts[string(v)] > 0 {
			vs = append(vs, string(v))
		}
	}
	var other []string
	for k, n := range c.Verdicts {
		if n > 0 && !knownVerdict(k) {
			other = append(other, k)
		}
	}
	slices.Sort(other)
	vs = append(vs, other...)
	x := 0.0
	for _, v := range vs {
		n := c.Verdicts[v]
		pct := 100 * float64(n) / float64(max(c.Negotiations, 1))
		p.Verdicts = append(p.Verdicts, verdictRow{Verdict: wire(v, 40), Class: verdictClass(v), Count: n,
			Pct: f1(pct) + "%", Meaning: verdictMeaning[analyze.Verdict(v)]})
		p.Bar = append(p.Bar, barSeg{Verdict: wire(v, 40), Class: verdictClass(v), X: f1(x), W: f1(pct),
			Title: fmt.Sprintf("%s: %d (%s%%)", wire(v, 40), n, f1(pct))})
		x += pct
	}
	for _, v := range analyze.Verdicts {
		p.VerdictOptions = append(p.VerdictOptions, string(v))
	}
	p.VerdictOptions = append(p.VerdictOptions, other...)

	// Flags with their rule.
	known := map[string]bool{}
	for _, fi := range analyze.Flags {
		known[string(fi.Flag)] = true
		if n := c.Flags[string(fi.Flag)]; n > 0 {
			p.Flags = append(p.Flags, flagRow{Flag: string(fi.Flag), Rule: fi.Rule, Meaning: fi.Meaning, Count: n})
		}
	}
	var otherFlags []string
	for k, n := range c.Flags {
		if n > 0 && !known[k] {
			otherFlags = append(otherFlags, k)
		}
	}
	slices.Sort(otherFlags)
	for _, k := range otherFlags {
		p.Flags = append(p.Flags, flagRow{Flag: wire(k, 60), Rule: "?", Count: c.Flags[k]})
	}

	group := func(g *Group) groupRow {
		row := groupRow{Key: wire(g.Key, 80), Endpoint: wire(g.Endpoint, 60), Host: wire(g.Host, 80), N: g.Negotiations,
			Wait100: fmtPct(g.Wait100), ClientWait: fmtPct(g.ClientWait), Lost: fmtSeconds(g.LostMs), Wasted: g.WastedBytes}
		keys := make([]string, 0, len(g.Verdicts))
		for k := range g.Verdicts {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(verdictRank(a), verdictRank(b)) })
		for _, k := range keys {
			if n := g.Verdicts[k]; n > 0 {
				row.Mix = append(row.Mix, mixItem{Verdict: wire(k, 40), Class: verdictClass(k), N: n})
			}
		}
		return row
	}
	const maxGroups = 50
	for i, g := range c.Servers {
		if i == maxGroups {
			break
		}
		p.Servers = append(p.Servers, group(g))
	}
	for i, g := range c.Clients {
		if i == maxGroups {
			break
		}
		p.Clients = append(p.Clients, group(g))
	}
	for _, t := range c.Timeouts {
		timer := "unknown"
		if t.TimerMs > 0 {
			timer = fmtMsV(float64(t.TimerMs))
		}
		row := timerRow{Client: wire(t.Client, 40), Timer: timer, Count: t.Count, Median: fmtMs(t.MedianWait)}
		for i, ua := range t.UserAgents {
			if i == 10 {
				row.UserAgents = append(row.UserAgents, fmt.Sprintf("… %d more", len(t.UserAgents)-10))
				break
			}
			row.UserAgents = append(row.UserAgents, wire(ua, 100))
		}
		p.Timers = append(p.Timers, row)
	}
	for _, wmsg := range c.Warnings {
		p.Warnings = append(p.Warnings, wire(wmsg, 300))
	}

	p.Chart = b.chart
	p.Ladders, p.LaddersNeeded = b.ladders()
	drawn := map[string]string{}
	for _, l := range p.Ladders {
		drawn[l.RecordID] = l.Anchor
	}
	for _, h := range b.hops {
		row := hopRow{Intermediary: wire(h.Intermediary, 60),
			Down:    wire(h.Downstream.ID+" "+h.Downstream.Client+" → "+h.Downstream.Server, 120),
			Up:      wire(h.Upstream.ID+" "+h.Upstream.Client+" → "+h.Upstream.Server, 120),
			Changes: wire(strings.Join(h.Changes, ", "), 200), Lost: fmtMs(h.LostMs), Wasted: h.WastedBytes,
			Anchor: drawn[h.Downstream.ID]}
		if row.Changes == "" {
			row.Changes = "none"
		}
		p.Hops = append(p.Hops, row)
	}
	p.Rows, p.RowsTotal, p.RowsNote = b.rows(drawn)
	return p
}

func verdictRank(v string) int {
	for i, k := range analyze.Verdicts {
		if string(k) == v {
			return i
		}
	}
	return len(analyze.Verdicts)
}

// rows picks at most MaxRows records for the table: every flagged or
// not continued negotiation first, then the others, each in time order;
// the table shows the pick in time order. Add kept the first MaxRows of
// each kind, all a pick can take.
func (b *HTMLBuilder) rows(ladders map[string]string) ([]tableRow, int, string) {
	maxRows, t0 := b.opts.MaxRows, b.t0
	first, rest := b.rowsFlagged, b.rowsOther
	var pick []*analyze.Record
	note := ""
	if b.records <= maxRows {
		// Every record, in the order they came.
		pick = make([]*analyze.Record, 0, len(first)+len(rest))
		i, j := 0, 0
		for i < len(first) || j < len(rest) {
			if j == len(rest) || i < len(first) && b.rowsFlaggedAt[i] < b.rowsOtherAt[j] {
				pick = append(pick, first[i])
				i++
			} else {
				pick = append(pick, rest[j])
				j++
			}
		}
	} else {
		nf := min(b.flaggedRecords, maxRows)
		pick = append(slices.Clone(first[:nf]), rest[:min(len(rest), maxRows-nf)]...)
		slices.SortStableFunc(pick, func(a, b *analyze.Record) int { return a.HeadersEndAt.Compare(b.HeadersEndAt) })
		note = fmt.Sprintf("The table shows %d of %d records: ", len(pick), b.records)
		if nf < b.flaggedRecords {
			note += fmt.Sprintf("the first %d of the %d flagged or not continued ones. ", nf, b.flaggedRecords)
		} else {
			note += fmt.Sprintf("all %d flagged or not continued ones, then the earliest others. ", b.flaggedRecords)
		}
		note += "Run expectscope with --format csv or ndjson for all of them."
	}
	rows := make([]tableRow, 0, len(pick))
	for _, r := range pick {
		verdict := string(r.Verdict)
		if r.Type != analyze.TypeNegotiation {
			verdict = "(" + r.Type + ")"
		}
		off := r.HeadersEndAt.Sub(t0).Seconds()
		row := tableRow{
			ID: wire(r.ID, 40), Anchor: "r-" + r.ID,
			Offset: fmt.Sprintf("+%.3f s", off), OffsetV: strconv.FormatFloat(off, 'f', 6, 64),
			Client: wire(r.Conn.Client, 60), Server: wire(r.Conn.Server, 60), Host: wire(r.Request.Host, 80),
			Method: wire(r.Request.Method, 20), Target: wire(r.Request.Target, 160), UserAgent: wire(r.Request.UserAgent, 80),
			Status: status(r), Verdict: wire(verdict, 40), Class: verdictClass(string(r.Verdict)),
			W100: fmtMs(r.Wait100Ms), CW: fmtMs(r.ClientWaitMs), Lost: fmtMs(r.LostMs),
			W100V: numAttr(r.Wait100Ms), CWV: numAttr(r.ClientWaitMs), LostV: numAttr(r.LostMs),
			Body: "-", BodyV: -1, Diagnosis: wire(r.Diagnosis, 400), Ladder: ladders[r.ID],
		}
		if r.Final != nil {
			row.StatusV = r.Final.Status
		}
		if r.BodyStartAt != nil {
			row.Body = fmtBytes(r.BodyBytes)
			row.BodyV = r.BodyBytes
		}
		for _, f := range r.Flags {
			row.Flags = append(row.Flags, flagRow{Flag: wire(string(f), 60), Rule: analyze.RuleOf(f)})
		}
		rows = append(rows, row)
	}
	return rows, b.records, note
}

// ---- timeline chart ----

// chart is the timeline: x = capture time, y = wait on a log scale.
type chart struct {
	W, H           int
	L, T, R, B     string // plot box edges
	PlotW, PlotH   string
	NAY            string // the band of negotiations without a measured wait
	YTicks, XTicks []tick
	Timers         []tick
	Marks          []mark
	W100           []mark
	Binned         bool
	N              int
	Legend         []verdictRow
	XLabel         string
	Empty          bool
}

type tick struct {
	Pos, Label string
	Minor      bool
}

type mark struct {
	X, Y, R    string
	Class, ID  string
	Title      string
	X1, X2, Y1 string
	Count      int
}

// Known client expect timers, drawn as reference lines.
var knownTimers = []struct {
	ms    float64
	label string
}{
	{350, "350 ms .NET Framework"},
	{1000, "1 s curl, Go"},
	{2000, "2 s, 2.5 s"},
	{2500, ""}, // labelled with 2 s: too close to tell apart
	{5000, "5 s"},
}

const (
	chartW, chartH                 = 1240, 446
	chartL, chartR, chartT, chartB = 78, 1080, 16, 372
	chartYMin                      = 0.01 // ms, the floor of the log scale
	naBand                         = 16   // px below the plot for "not measured"
)

// chartWait is what a negotiation's mark shows: how long the client
// waited before it sent the body, or before the answer that made it
// withhold the body, or in vain. ok is false when nothing was measured.
func chartWait(r *analyze.Record) (ms float64, what string, ok bool) {
	switch {
	case r.ClientWaitMs != nil:
		return *r.ClientWaitMs, "client wait (headers end to first body byte)", true
	case r.Final != nil && !r.Final.At.Before(r.HeadersEndAt):
		return float64(r.Final.At.Sub(r.HeadersEndAt)) / float64(time.Millisecond), fmt.Sprintf("answered %d before any body", r.Final.Status), true
	case r.LostMs != nil:
		return *r.LostMs, "waited in vain", true
	}
	return 0, "", false
}

// chartScale places a negotiation on the chart.
type chartScale struct {
	first  time.Time // x origin
	x0, x1 float64   // seconds from first at the left and right edges
	lo, hi float64   // log10 of the waits at the bottom and top
}

func (s *chartScale) x(t time.Time) float64 {
	v := t.Sub(s.first).Seconds()
	return chartL + (v-s.x0)/(s.x1-s.x0)*(chartR-chartL)
}

func (s *chartScale) y(ms float64) float64 {
	v := math.Log10(max(ms, chartYMin))
	return chartB - (v-s.lo)/(s.hi-s.lo)*(chartB-chartT)
}

// yFor is where r's mark goes, and what it shows.
func (s *chartScale) yFor(r *analyze.Record) (float64, string) {
	if v, what, ok := chartWait(r); ok {
		return s.y(v), fmt.Sprintf("%s %s", what, fmtMsV(v))
	}
	return chartB + naBand, "no wait measured"
}

// newChart draws the chart's frame for the negotiations the first pass
// measured: n of them between first and last, the longest wait yMax,
// counts by verdict. Their marks come in the passes after.
func newChart(n int, first, last, t0 time.Time, yMax float64, counts map[string]int) (*chart, *chartScale) {
	c := &chart{W: chartW, H: chartH, L: f1(chartL), R: f1(chartR), T: f1(chartT), B: f1(chartB),
		PlotW: f1(chartR - chartL), PlotH: f1(chartB - chartT), NAY: f1(chartB + naBand), N: n}
	if n == 0 {
		c.Empty = true
		return c, nil
	}
	// X: capture time from the first negotiation.
	if !t0.IsZero() && t0.Before(first) {
		first = t0 // the table's origin: offsets agree
	}
	span := last.Sub(first).Seconds()
	if span <= 0 {
		span = 0.001
	}
	// Pad so marks do not sit on the axes; Y: log10 from the floor to the
	// decade above the largest wait.
	sc := &chartScale{first: first, x0: -span * 0.02, x1: span * 1.02,
		lo: math.Log10(chartYMin), hi: math.Ceil(math.Log10(yMax) + 0.05)}
	lo, hi := sc.lo, sc.hi
	for d := lo; d <= hi+1e-9; d++ {
		c.YTicks = append(c.YTicks, tick{Pos: f1(sc.y(math.Pow(10, d))), Label: fmtTick(math.Pow(10, d))})
		if d < hi {
			for _, m := range []float64{2, 5} {
				c.YTicks = append(c.YTicks, tick{Pos: f1(sc.y(m * math.Pow(10, d))), Minor: true})
			}
		}
	}
	c.YTicks[0].Label = "≤ " + c.YTicks[0].Label
	for _, kt := range knownTimers {
		if kt.ms <= math.Pow(10, hi) {
			c.Timers = append(c.Timers, tick{Pos: f1(sc.y(kt.ms)), Label: kt.label})
		}
	}
	step := niceStep(span / 8)
	unit, div := "s", 1.0
	if span < 2 {
		unit, div = "ms", 0.001
	}
	for v := 0.0; v <= span*1.02+1e-12; v += step {
		label := strconv.FormatFloat(v/div, 'f', -1, 64)
		if len(label) > 8 {
			label = strconv.FormatFloat(v/div, 'f', 2, 64)
		}
		c.XTicks = append(c.XTicks, tick{Pos: f1(sc.x(first.Add(time.Duration(v * float64(time.Second))))), Label: "+" + label + " " + unit})
	}
	c.XLabel = "capture time from " + first.UTC().Format(time.RFC3339Nano)

	// Legend: verdicts present.
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if d := cmp.Compare(verdictRank(a), verdictRank(b)); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		c.Legend = append(c.Legend, verdictRow{Verdict: wire(k, 40), Class: verdictClass(k), Count: counts[k]})
	}
	return c, sc
}

// addMark draws r as a mark of its own.
func (c *chart) addMark(sc *chartScale, r *analyze.Record) {
	y, what := sc.yFor(r)
	title := fmt.Sprintf("%s %s %s — %s, %s (%s)", wire(r.ID, 40), wire(r.Request.Method, 20), wire(r.Request.Target, 120),
		wire(string(r.Verdict), 40), what, status(r))
	if r.Request.Host != "" {
		title += "\nHost: " + wire(r.Request.Host, 80)
	}
	if r.Request.UserAgent != "" {
		title += "\nUser-Agent: " + wire(r.Request.UserAgent, 80)
	}
	if r.Wait100Ms != nil {
		title += "\n100 wait " + fmtMs(r.Wait100Ms)
	}
	x := sc.x(r.HeadersEndAt)
	c.Marks = append(c.Marks, mark{X: f1(x), Y: f1(y), R: "4", Class: verdictClass(string(r.Verdict)), ID: r.ID, Title: title, Count: 1})
	if r.Wait100Ms != nil {
		y100 := sc.y(*r.Wait100Ms)
		c.W100 = append(c.W100, mark{X1: f1(x - 5), X2: f1(x + 5), Y1: f1(y100), Class: verdictClass(string(r.Verdict)),
			Title: fmt.Sprintf("%s 100 wait %s", wire(r.ID, 40), fmtMs(r.Wait100Ms))})
	}
}

// chartBins gathers negotiations too many to draw one by one into bins
// of a pixel cell and a verdict, one mark a bin. A pass with more bins
// than marks allowed is given up (over) and tried again with coarser
// cells.
type chartBins struct {
	cell  float64
	bins  map[binKey]*chartBin
	order []binKey
	over  bool
}

type binKey struct {
	x, y    int
	verdict string
}

type chartBin struct {
	n        int
	sx, sy   float64
	lo, hi   float64
	measured bool
	verdict  string
	// the first negotiation in the bin, as its title names it
	exID, exMethod, exTarget string
}

func newChartBins(cell float64) *chartBins {
	return &chartBins{cell: cell, bins: map[binKey]*chartBin{}}
}

func (cb *chartBins) add(sc *chartScale, r *analyze.Record, maxMarks int) {
	if cb.over {
		return
	}
	x := sc.x(r.HeadersEndAt)
	y, _ := sc.yFor(r)
	k := binKey{int(x / cb.cell), int(y / cb.cell), string(r.Verdict)}
	b := cb.bins[k]
	if b == nil {
		if len(cb.bins) == maxMarks {
			cb.over = true
			cb.bins, cb.order = nil, nil
			return
		}
		// Copies: a bin must not keep its example record in memory.
		b = &chartBin{lo: math.Inf(1), hi: math.Inf(-1), verdict: strings.Clone(string(r.Verdict)),
			exID: strings.Clone(wire(r.ID, 40)), exMethod: strings.Clone(wire(r.Request.Method, 20)),
			exTarget: strings.Clone(wire(r.Request.Target, 120))}
		cb.bins[k] = b
		cb.order = append(cb.order, k)
	}
	b.n++
	b.sx += x
	b.sy += y
	if v, _, ok := chartWait(r); ok {
		b.measured = true
		b.lo, b.hi = min(b.lo, v), max(b.hi, v)
	}
}

// marks turns the bins into the chart's marks.
func (cb *chartBins) marks(c *chart) {
	c.Binned = true
	for _, k := range cb.order {
		b := cb.bins[k]
		wait := "no wait measured"
		if b.measured {
			wait = "wait " + fmtMsV(b.lo) + " – " + fmtMsV(b.hi)
		}
		title := fmt.Sprintf("%d negotiation(s), %s, %s\ne.g. %s %s %s", b.n, wire(b.verdict, 40), wait,
			b.exID, b.exMethod, b.exTarget)
		rad := math.Min(3+1.5*math.Log2(float64(b.n)), 12)
		c.Marks = append(c.Marks, mark{X: f1(b.sx / float64(b.n)), Y: f1(b.sy / float64(b.n)), R: f1(rad),
			Class: verdictClass(b.verdict), Title: title, Count: b.n})
	}
}

// fmtTick labels a wait on the y axis.
func fmtTick(ms float64) string {
	switch {
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'f', -1, 64) + " s"
	case ms >= 1:
		return strconv.FormatFloat(ms, 'f', -1, 64) + " ms"
	}
	return strconv.FormatFloat(ms*1000, 'f', -1, 64) + " µs"
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// ---- ladder diagrams ----

type ladder struct {
	RecordID, Anchor, RowAnchor string
	ID                          string
	Method, Target              string
	Host, UserAgent             string
	Verdict, Class              string
	Flags                       []flagRow
	Diagnosis                   string
	Facts                       []string
	Hop                         string
	W, H                        int
	Lanes                       []lane
	Rows                        []lrow
	Bottom                      string
}

type lane struct {
	X, Name, Addr string
}

type lrow struct {
	Y, TY, NY, Time string
	Self            bool
	X1, X2, LX      string
	Head            string // arrowhead polygon points
	Label, Note     string
	Kind            string
}

const (
	ladderW    = 980
	ladderTop  = 64
	ladderStep = 46
)

// ladders draws every negotiation NeedsLadder selects and every hop's
// downstream negotiation, up to MaxLadders; it returns the ladders and
// how many were wanted. A hop's upstream leg is drawn inside its hop's
// ladder when its downstream leg is among the records.
func (b *HTMLBuilder) ladders() ([]*ladder, int) {
	needed := b.ladderOthers
	var ls []*ladder
	for _, r := range b.ladderPicks {
		if h := b.up[r.ID]; h != nil {
			if b.downSeen[h.Downstream.ID] {
				continue
			}
			needed++
		}
		if len(ls) == b.opts.MaxLadders {
			continue // counted, not drawn
		}
		h := b.down[r.ID]
		var upRec *analyze.Record
		if h != nil {
			upRec = b.lookup(h.Upstream.ID)
		}
		ls = append(ls, svgLadder(r, h, upRec))
	}
	return ls, needed
}

func svgLadder(r *analyze.Record, h *analyze.Hop, upRec *analyze.Record) *ladder {
	l := &ladder{RecordID: r.ID, Anchor: "l-" + r.ID, RowAnchor: "r-" + r.ID, ID: wire(r.ID, 40),
		Method: wire(r.Request.Method, 20), Target: wire(r.Request.Target, 200),
		Host: wire(r.Request.Host, 100), UserAgent: wire(r.Request.UserAgent, 100),
		Verdict: wire(string(r.Verdict), 40), Class: verdictClass(string(r.Verdict)),
		Diagnosis: wire(r.Diagnosis, 500), W: ladderW}
	for _, f := range r.Flags {
		l.Flags = append(l.Flags, flagRow{Flag: wire(string(f), 60), Rule: analyze.RuleOf(f)})
	}
	facts := []string{"100 wait " + fmtMs(r.Wait100Ms), "client wait " + fmtMs(r.ClientWaitMs), "lost " + fmtMs(r.LostMs)}
	if r.TimeoutGuess != nil {
		facts = append(facts, fmt.Sprintf("timer guess %d ms", *r.TimeoutGuess))
	}
	if r.RTTMs != nil {
		facts = append(facts, "rtt "+fmtMs(r.RTTMs))
	}
	facts = append(facts, fmt.Sprintf("body %d bytes", r.BodyBytes))
	if r.AfterEarlyFinal != "" {
		facts = append(facts, "after the early final the client sent: "+wire(r.AfterEarlyFinal, 40))
	}
	if r.RetryOf != nil {
		facts = append(facts, "retry of "+wire(*r.RetryOf, 40))
	}
	if r.RetriedBy != nil {
		facts = append(facts, "retried by "+wire(*r.RetriedBy, 40))
	}
	l.Facts = facts

	var seq int
	var ev []event
	type laneName struct{ name, addr string }
	lanes := []laneName{{"client", r.Conn.Client}, {"server", r.Conn.Server}}
	if h != nil {
		proxy := h.Intermediary
		if proxy == "" {
			proxy = r.Conn.Server
		}
		server := h.Upstream.Server
		if upRec != nil {
			server = upRec.Conn.Server
		}
		lanes = []laneName{{"client", r.Conn.Client}, {"proxy", proxy}, {"origin", server}}
		ev = legEvents(r, 0, 1, &seq)
		if upRec != nil {
			ev = append(ev, legEvents(upRec, 1, 2, &seq)...)
		}
		changes := "none"
		if len(h.Changes) > 0 {
			changes = strings.Join(h.Changes, ", ")
		}
		l.Hop = wire(fmt.Sprintf("hop via %s to %s (upstream %s): %s", h.Intermediary, h.Upstream.Server, h.Upstream.ID, changes), 300)
		if upRec == nil {
			l.Hop += " — the upstream record is not in the input (read with --all to draw its leg)"
		}
	} else {
		ev = legEvents(r, 0, 1, &seq)
	}
	slices.SortStableFunc(ev, func(a, b event) int {
		switch {
		case a.at == nil && b.at == nil:
			return a.seq - b.seq
		case a.at == nil:
			return 1
		case b.at == nil:
			return -1
		}
		if c := a.at.Compare(*b.at); c != 0 {
			return c
		}
		return a.seq - b.seq
	})
	const left, right = 150.0, ladderW - 60.0
	laneX := make([]float64, len(lanes))
	for i := range lanes {
		laneX[i] = left + float64(i)*(right-left)/float64(len(lanes)-1)
		l.Lanes = append(l.Lanes, lane{X: f1(laneX[i]), Name: lanes[i].name, Addr: wire(lanes[i].addr, 60)})
	}
	t0 := r.HeadersEndAt
	maxLabel := int((right-left)/float64(len(lanes)-1)/7.2) - 2
	for i, e := range ev {
		y := float64(ladderTop + 30 + i*ladderStep)
		row := lrow{Y: f1(y), TY: f1(y - 7), NY: f1(y + 15)}
		if e.at != nil {
			row.Time = "+" + strconv.FormatFloat(float64(e.at.Sub(t0))/float64(time.Millisecond), 'f', 3, 64) + " ms"
		}
		row.Label = Truncate(e.label, maxLabel)
		row.Note = Truncate(e.note, maxLabel+12)
		if e.from == e.to {
			row.Self = true
			row.LX = f1(laneX[e.from] + 12)
			row.Kind = "note"
		} else {
			x1, x2 := laneX[e.from], laneX[e.to]
			dir := 1.0
			if x2 < x1 {
				dir = -1
			}
			tip := x2 - dir*2
			row.X1, row.X2 = f1(x1), f1(tip-dir*8)
			row.Head = fmt.Sprintf("%s,%s %s,%s %s,%s", f1(tip), f1(y), f1(tip-dir*10), f1(y-5), f1(tip-dir*10), f1(y+5))
			row.LX = f1((x1 + x2) / 2)
			row.Kind = arrowKind(e, dir > 0)
		}
		l.Rows = append(l.Rows, row)
	}
	l.H = ladderTop + 30 + len(ev)*ladderStep + 10
	l.Bottom = f1(float64(l.H - 6))
	return l
}

// arrowKind classes an arrow for its colour: requests and bodies go
// right, 1xx and final statuses come back.
func arrowKind(e event, right bool) string {
	if right {
		if strings.HasPrefix(e.label, "body") || strings.HasPrefix(e.label, "...") {
			return "a-body"
		}
		return "a-req"
	}
	switch {
	case strings.HasPrefix(e.label, "1"):
		return "a-1xx"
	case strings.HasPrefix(e.label, "2") || strings.HasPrefix(e.label, "3"):
		return "a-ok"
	}
	return "a-err"
}
