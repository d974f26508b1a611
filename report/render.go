package report

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
)

// Output formats.
const (
	FormatTable    = "table"
	FormatMarkdown = "markdown"
	FormatCSV      = "csv"
	FormatJSON     = "json"
	FormatNDJSON   = "ndjson"
)

// Formats lists every output format.
var Formats = []string{FormatTable, FormatMarkdown, FormatCSV, FormatJSON, FormatNDJSON}

// Output is everything one run produced, in a deterministic order.
type Output struct {
	Records []*analyze.Record
	Hops    []*analyze.Hop
	Summary *Counts
	// Start is the origin of the time offsets printed in tables (zero:
	// the first record's headers end).
	Start time.Time
}

func (o *Output) start() time.Time {
	if !o.Start.IsZero() || len(o.Records) == 0 {
		return o.Start
	}
	return o.Records[0].HeadersEndAt
}

// Sort orders records by the time their request headers ended, then by id,
// so output does not depend on worker scheduling.
func Sort(recs []*analyze.Record) {
	slices.SortStableFunc(recs, func(a, b *analyze.Record) int {
		if c := a.HeadersEndAt.Compare(b.HeadersEndAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// SortHops orders hops by their downstream then upstream record id.
func SortHops(hops []*analyze.Hop) {
	slices.SortStableFunc(hops, func(a, b *analyze.Hop) int {
		if c := strings.Compare(a.Downstream.ID, b.Downstream.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Upstream.ID, b.Upstream.ID)
	})
}

// Write renders out in format. With summaryOnly only the summary is
// written (for json and ndjson: the summary object alone).
func Write(w io.Writer, format string, out *Output, summaryOnly bool) error {
	switch format {
	case FormatTable:
		if summaryOnly {
			return WriteSummaryTable(w, out.Summary)
		}
		return WriteTable(w, out)
	case FormatMarkdown:
		if summaryOnly {
			return WriteSummaryMarkdown(w, out.Summary)
		}
		return WriteMarkdown(w, out)
	case FormatCSV:
		if summaryOnly {
			return WriteSummaryCSV(w, out.Summary)
		}
		return WriteCSV(w, out)
	case FormatJSON:
		if summaryOnly {
			return writeJSONValue(w, out.Summary, " ")
		}
		return WriteJSON(w, out)
	case FormatNDJSON:
		if summaryOnly {
			return writeJSONValue(w, out.Summary, "")
		}
		return WriteNDJSON(w, out)
	}
	return fmt.Errorf("report: unknown format %q", format)
}

func writeJSONValue(w io.Writer, v any, indent string) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	return enc.Encode(v)
}

// WriteNDJSON writes one JSON object a line: records, hops, then the summary.
func WriteNDJSON(w io.Writer, out *Output) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var b []byte
	for _, r := range out.Records {
		var err error
		if b, err = AppendRecordJSON(b[:0], r); err != nil {
			return err
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	for _, h := range out.Hops {
		if err := enc.Encode(h); err != nil {
			return err
		}
	}
	if out.Summary != nil {
		var err error
		if b, err = AppendCountsJSON(b[:0], out.Summary); err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	return nil
}

// WriteJSON writes one JSON document.
func WriteJSON(w io.Writer, out *Output) error {
	doc := struct {
		Records []*analyze.Record `json:"records"`
		Hops    []*analyze.Hop    `json:"hops"`
		Summary *Counts           `json:"summary"`
	}{out.Records, out.Hops, out.Summary}
	if doc.Records == nil {
		doc.Records = []*analyze.Record{}
	}
	if doc.Hops == nil {
		doc.Hops = []*analyze.Hop{}
	}
	return writeJSONValue(w, doc, " ")
}

// fmtMs prints a duration in ms for people: "12.3 ms", "1.00 s", "-".
func fmtMs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmtMsV(*v)
}

func fmtMsV(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f s", v/1000)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// fmtPct prints "p50 / p90 / p99".
func fmtPct(p Percentiles) string {
	if p.N == 0 {
		return "-"
	}
	return fmtMs(p.P50) + " / " + fmtMs(p.P90) + " / " + fmtMs(p.P99)
}

func status(r *analyze.Record) string {
	var parts []string
	for _, i := range r.Interim {
		parts = append(parts, fmt.Sprint(i.Status))
	}
	if r.Final != nil {
		parts = append(parts, fmt.Sprint(r.Final.Status))
	} else {
		parts = append(parts, "-")
	}
	return strings.Join(parts, ",")
}

// section is one table of a report, rendered alike in every text format.
// Cells hold raw text: each format escapes them its own way.
type section struct {
	title  string
	header []string
	rows   [][]string
	// wire marks the columns that hold text from the wire.
	wire map[int]bool
	// multi is the 1-based column whose cells hold several lines
	// (flags), 0 for none.
	multi int
}

// style is what differs between the text formats.
type style int

const (
	styleTable style = iota
	styleMarkdown
	styleCSV
)

// Column limits of the table format (markdown and csv are not cut).
const (
	maxTarget    = 48
	maxHost      = 32
	maxUserAgent = 32
)

// recordSection is the table of records: one row each.
func recordSection(out *Output, st style) section {
	s := recordHeader(st)
	t0 := out.start()
	for _, r := range out.Records {
		s.rows = append(s.rows, recordRow(r, t0, st))
	}
	return s
}

// recordHeader is the table of records without rows.
func recordHeader(st style) section {
	s := section{
		header: []string{"id", "time", "client", "server", "host", "request", "user-agent", "status", "verdict", "100 wait", "client wait", "lost", "timer", "body", "flags (rule)"},
		wire:   map[int]bool{4: true, 5: true, 6: true},
		multi:  15,
	}
	if st == styleCSV {
		// Machine-readable: numbers without units, empty for none.
		s.header = []string{"id", "offset_s", "client", "server", "host", "request", "user_agent", "status", "verdict", "wait_100_ms", "client_wait_ms", "lost_ms", "timeout_guess_ms", "body_bytes", "flags", "diagnosis"}
		s.wire[15] = true
	}
	return s
}

// recordRow is the row of one record, times as offsets from t0.
func recordRow(r *analyze.Record, t0 time.Time, st style) []string {
	verdict := string(r.Verdict)
	if r.Type != analyze.TypeNegotiation {
		verdict = "(" + r.Type + ")"
	}
	var flags []string
	for _, f := range r.Flags {
		flags = append(flags, fmt.Sprintf("%s (%s)", f, analyze.RuleOf(f)))
	}
	target, host, ua := r.Request.Target, r.Request.Host, r.Request.UserAgent
	method := r.Request.Method
	if st == styleTable {
		target, host, ua = cut(target, maxTarget), cut(host, maxHost), cut(ua, maxUserAgent)
		method = cut(method, 12)
	}
	timer := "-"
	if r.TimeoutGuess != nil {
		timer = fmt.Sprintf("%d ms", *r.TimeoutGuess)
	}
	body := fmt.Sprint(r.BodyBytes)
	if r.BodyStartAt == nil {
		body = "-"
	}
	row := []string{
		r.ID,
		fmt.Sprintf("+%.6f", r.HeadersEndAt.Sub(t0).Seconds()),
		r.Conn.Client, r.Conn.Server, host,
		method + " " + target, ua,
		status(r), verdict,
		fmtMs(r.Wait100Ms), fmtMs(r.ClientWaitMs), fmtMs(r.LostMs), timer, body,
		strings.Join(flags, "\n"),
	}
	if st == styleCSV {
		num := func(v *float64) string {
			if v == nil {
				return ""
			}
			return strconv.FormatFloat(*v, 'f', -1, 64)
		}
		row[1] = fmt.Sprintf("%.6f", r.HeadersEndAt.Sub(t0).Seconds())
		row[9], row[10], row[11] = num(r.Wait100Ms), num(r.ClientWaitMs), num(r.LostMs)
		row[12] = ""
		if r.TimeoutGuess != nil {
			row[12] = strconv.Itoa(*r.TimeoutGuess)
		}
		if r.BodyStartAt == nil {
			row[13] = ""
		}
		row = append(row, r.Diagnosis)
	}
	return row
}

// cut escapes s and shortens the result to n runes: escaping first keeps
// every byte visible and never splits an escape.
func cut(s string, n int) string {
	return Truncate(Escape(s), n)
}

// cell renders one cell of s for a style: everything is escaped (wire
// columns of the table style were escaped by cut already, before they
// were shortened), then made safe for markdown or csv. The lines of the
// multi-line column are joined the style's way.
func (s *section) cell(st style, col int, v string) string {
	lines := []string{v}
	if col+1 == s.multi {
		lines = strings.Split(v, "\n")
	}
	for i, l := range lines {
		if st != styleTable || !s.wire[col] {
			l = Escape(l)
		}
		switch st {
		case styleMarkdown:
			l = MarkdownEscape(l)
		case styleCSV:
			l = CSVCell(l)
		}
		lines[i] = l
	}
	switch st {
	case styleMarkdown:
		return strings.Join(lines, "<br>")
	case styleCSV:
		return strings.Join(lines, "; ")
	}
	return strings.Join(lines, "\n")
}

// MarkdownEscape makes already Escape'd text safe inside a markdown table
// cell: the pipe would end the cell, and markdown punctuation and HTML
// would change what is shown. Newlines never reach it (Escape wrote
// them as \x0a).
func MarkdownEscape(s string) string {
	if !strings.ContainsAny(s, "|*_`[]<>#~") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '|', '*', '_', '`', '[', ']', '#', '~':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// CSVCell neutralises a cell a spreadsheet would take for a formula: a
// cell beginning with = + - @, a tab or a carriage return gets a leading
// single quote (OWASP's advice for CSV injection).
func CSVCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

// newTable makes a table with our look: headers as written, no wrapping
// of cells. A nil header is set later (a streaming table sets it after
// Start).
func newTable(w io.Writer, header []string, opts ...tablewriter.Option) *tablewriter.Table {
	t := tablewriter.NewTable(w, append([]tablewriter.Option{
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
	}, opts...)...)
	if header != nil {
		t.Header(header)
	}
	return t
}

func (s *section) writeTable(w io.Writer) error {
	if s.title != "" {
		fmt.Fprintf(w, "\n%s\n", s.title)
	}
	rows := make([][]string, len(s.rows))
	for r, row := range s.rows {
		rows[r] = make([]string, len(row))
		for i, v := range row {
			rows[r][i] = s.cell(styleTable, i, v)
		}
	}
	if b, ok := drawTable(nil, s.header, rows); ok {
		_, err := w.Write(b)
		return err
	}
	t := newTable(w, s.header)
	for _, cells := range rows {
		if err := t.Append(cells); err != nil {
			return err
		}
	}
	return t.Render()
}

// drawTable draws header and rows as newTable's table renders them, for
// tables of plain cells: every cell one line of printable ASCII, every
// row as wide as the header, a header not all blank, at least one row.
// false for any other (then
// tablewriter draws it). A tablewriter Table preallocates a cache of some
// ten thousand entries (a few hundred KiB touched for the first time)
// and measures every cell twice: for the half-dozen small summary tables
// of a report that was a millisecond or two after the capture was read,
// when nothing else runs.
func drawTable(b []byte, header []string, rows [][]string) ([]byte, bool) {
	if len(rows) == 0 || len(header) == 0 {
		return b, false
	}
	widths := make([]int, len(header))
	measure := func(cells []string) bool {
		if len(cells) != len(widths) {
			return false
		}
		for i, c := range cells {
			if !printableASCII(c) {
				return false
			}
			widths[i] = max(widths[i], len(strings.TrimSpace(c)))
		}
		return true
	}
	if !measure(header) || slices.Max(widths) == 0 {
		return b, false // tablewriter leaves out a blank header
	}
	for _, r := range rows {
		if !measure(r) {
			return b, false
		}
	}
	line := func(b []byte, left, mid, right string) []byte {
		b = append(b, left...)
		for i, w := range widths {
			if i > 0 {
				b = append(b, mid...)
			}
			for range w + 2 {
				b = append(b, "─"...)
			}
		}
		b = append(b, right...)
		return append(b, '\n')
	}
	b = line(b, "┌", "┬", "┐")
	b, _ = appendTableRow(b, header, widths)
	b = line(b, "├", "┼", "┤")
	for _, r := range rows {
		b, _ = appendTableRow(b, r, widths)
	}
	return line(b, "└", "┴", "┘"), true
}

func (s *section) writeMarkdown(w io.Writer) {
	if s.title != "" {
		fmt.Fprintf(w, "\n### %s\n\n", s.title)
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(s.header, " | "))
	seps := make([]string, len(s.header))
	for i := range seps {
		seps[i] = "---"
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, row := range s.rows {
		cells := make([]string, len(row))
		for i, v := range row {
			cells[i] = s.cell(styleMarkdown, i, v)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

func (s *section) csvRows(withTitle bool) [][]string {
	var rows [][]string
	head := slices.Clone(s.header)
	if withTitle {
		head = append([]string{"section"}, head...)
	}
	rows = append(rows, head)
	for _, row := range s.rows {
		cells := make([]string, 0, len(row)+1)
		if withTitle {
			cells = append(cells, s.title)
		}
		for i, v := range row {
			cells = append(cells, s.cell(styleCSV, i, v))
		}
		rows = append(rows, cells)
	}
	return rows
}

// WriteTable renders records as a table, the diagnoses, the hops, then
// the summary.
func WriteTable(w io.Writer, out *Output) error {
	if len(out.Records) == 0 {
		fmt.Fprintln(w, "No Expect negotiations found.")
	} else {
		fmt.Fprintf(w, "times are offsets in seconds from %s\n", out.start().UTC().Format(time.RFC3339Nano))
		s := recordSection(out, styleTable)
		if err := s.writeTable(w); err != nil {
			return err
		}
		for _, r := range out.Records {
			if r.Diagnosis != "" {
				fmt.Fprintf(w, "%s  %s\n", r.ID, Escape(r.Diagnosis))
			}
		}
	}
	if len(out.Hops) > 0 {
		s := intermediarySection(out.Hops, out.Records)
		if err := s.writeTable(w); err != nil {
			return err
		}
	}
	if out.Summary != nil {
		fmt.Fprintln(w)
		return WriteSummaryTable(w, out.Summary)
	}
	return nil
}

// WriteMarkdown renders records, diagnoses, hops and the summary as
// GitHub-flavoured markdown, for a ticket or a write-up.
func WriteMarkdown(w io.Writer, out *Output) error {
	fmt.Fprintln(w, "## Expect negotiations")
	fmt.Fprintln(w)
	if len(out.Records) == 0 {
		fmt.Fprintln(w, "No Expect negotiations found.")
	} else {
		fmt.Fprintf(w, "Times are offsets in seconds from %s.\n\n", out.start().UTC().Format(time.RFC3339Nano))
		s := recordSection(out, styleMarkdown)
		s.writeMarkdown(w)
		first := true
		for _, r := range out.Records {
			if r.Diagnosis != "" {
				if first {
					fmt.Fprintln(w)
					first = false
				}
				fmt.Fprintf(w, "- **%s**: %s\n", r.ID, MarkdownEscape(Escape(r.Diagnosis)))
			}
		}
	}
	if len(out.Hops) > 0 {
		s := intermediarySection(out.Hops, out.Records)
		s.writeMarkdown(w)
	}
	if out.Summary != nil {
		fmt.Fprintln(w)
		return WriteSummaryMarkdown(w, out.Summary)
	}
	return nil
}
