package report

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/pkg/twwidth"
	"github.com/olekukonko/tablewriter/tw"
)

// RecordWriter renders records one at a time, in the order given, as
// Write would render an Output holding them all: the same bytes, without
// keeping the records. Records must come in report order (Sort); Start
// must be set before the first Write when it differs from the first
// record's headers end.
//
// csv, ndjson, json and markdown keep only the few records that are the
// downstream leg of a hop (for the Intermediaries table) and, for
// markdown, spool the diagnoses to a temporary file to print them after
// the table. ndjson and json also hold up to encodeBatch records, to
// encode them on every core: a record must not change once written. The
// table format spools the diagnoses and needs its columns' widths: given
// them (Widths, from a TableSizer's first pass) it writes each row as it
// comes, else it keeps every row's cells (not the records) to the end.
type RecordWriter struct {
	w      io.Writer
	format string
	// Start is the origin of the time offsets (zero: the first record's
	// headers end).
	Start time.Time

	n       int
	sec     section
	pending []*analyze.Record // ndjson, json: records to encode (encodeBatch)
	bufs    []bytes.Buffer
	cw      *csv.Writer
	hopDown map[string]bool
	legs    []*analyze.Record
	cells   [][]string // table format: every row, rendered (without Widths)
	// Widths, for the table format, are the columns' widths from a
	// TableSizer that saw the same records: rows are then written as
	// they come instead of being kept to size the columns at the end.
	Widths []int
	table  *tablewriter.Table // the streaming table, once started
	rows   int                // rows streamed
	line   []byte             // a row rendered by appendTableRow
	diag   *os.File           // markdown: diagnoses, written after the table
	diagW  *bufio.Writer
	err    error
}

// NewRecordWriter starts rendering records in format to w. hops are the
// hops of the run (their downstream records are kept to name the request
// in the Intermediaries table).
func NewRecordWriter(w io.Writer, format string, hops []*analyze.Hop) (*RecordWriter, error) {
	rw := &RecordWriter{w: w, format: format, hopDown: map[string]bool{}}
	for _, h := range hops {
		rw.hopDown[h.Downstream.ID] = true
	}
	switch format {
	case FormatNDJSON:
	case FormatJSON:
		if _, err := io.WriteString(w, "{\n \"records\": ["); err != nil {
			return nil, err
		}
	case FormatCSV:
		rw.cw = csv.NewWriter(w)
		rw.sec = recordHeader(styleCSV)
		head := append([]string{rw.sec.header[0], "at"}, rw.sec.header[1:]...)
		if err := rw.cw.Write(head); err != nil {
			return nil, err
		}
	case FormatMarkdown:
		rw.sec = recordHeader(styleMarkdown)
		if _, err := fmt.Fprint(w, "## Expect negotiations\n\n"); err != nil {
			return nil, err
		}
	case FormatTable:
		rw.sec = recordHeader(styleTable)
	default:
		return nil, fmt.Errorf("report: unknown format %q", format)
	}
	return rw, nil
}

func (rw *RecordWriter) start(r *analyze.Record) time.Time {
	if rw.Start.IsZero() {
		rw.Start = r.HeadersEndAt
	}
	return rw.Start
}

// jsonIndented writes v as WriteJSON would at depth (prefix of that
// many spaces), without the trailing newline.
func jsonIndented(w io.Writer, v any, prefix string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent(prefix, " ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return err
}

// Write renders one record.
func (rw *RecordWriter) Write(r *analyze.Record) error {
	if rw.err != nil {
		return rw.err
	}
	if rw.hopDown[r.ID] {
		rw.legs = append(rw.legs, r)
	}
	t0 := rw.start(r)
	rw.n++
	switch rw.format {
	case FormatNDJSON, FormatJSON:
		rw.pending = append(rw.pending, r)
		if len(rw.pending) == encodeBatch {
			rw.err = rw.encodePending()
		}
	case FormatCSV:
		row := recordRow(r, t0, styleCSV)
		cells := make([]string, 0, len(row)+1)
		cells = append(cells, rw.sec.cell(styleCSV, 0, row[0]), r.HeadersEndAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
		for i := 1; i < len(row); i++ {
			cells = append(cells, rw.sec.cell(styleCSV, i, row[i]))
		}
		rw.err = rw.cw.Write(cells)
	case FormatMarkdown:
		if rw.n == 1 {
			fmt.Fprintf(rw.w, "Times are offsets in seconds from %s.\n\n", t0.UTC().Format(time.RFC3339Nano))
			fmt.Fprintf(rw.w, "| %s |\n", strings.Join(rw.sec.header, " | "))
			seps := make([]string, len(rw.sec.header))
			for i := range seps {
				seps[i] = "---"
			}
			fmt.Fprintf(rw.w, "|%s|\n", strings.Join(seps, "|"))
		}
		row := recordRow(r, t0, styleMarkdown)
		for i, v := range row {
			row[i] = rw.sec.cell(styleMarkdown, i, v)
		}
		_, rw.err = fmt.Fprintf(rw.w, "| %s |\n", strings.Join(row, " | "))
		if rw.err == nil && r.Diagnosis != "" {
			rw.err = rw.spoolDiagnosis(r)
		}
	case FormatTable:
		row := recordRow(r, t0, styleTable)
		for i, v := range row {
			row[i] = rw.sec.cell(styleTable, i, v)
		}
		if rw.Widths == nil {
			rw.cells = append(rw.cells, row)
		} else if rw.err = rw.streamRow(row); rw.err != nil {
			return rw.err
		}
		if r.Diagnosis != "" {
			rw.err = rw.spoolDiagnosis(r)
		}
	}
	return rw.err
}

// encodeBatch is how many records the JSON formats encode at once.
const encodeBatch = 512

// encodePending writes the pending records in order, encoded by up to
// GOMAXPROCS goroutines at once (a part of the batch each): encoding
// records is most of what is left to do once the capture is read.
func (rw *RecordWriter) encodePending() error {
	recs := rw.pending
	rw.pending = rw.pending[:0]
	if len(recs) == 0 {
		return nil
	}
	first := rw.n - len(recs) // records written before this batch
	parts := min(runtime.GOMAXPROCS(0), (len(recs)+63)/64)
	if len(rw.bufs) < parts {
		rw.bufs = make([]bytes.Buffer, parts)
	}
	errs := make([]error, parts)
	encode := func(p int) {
		lo, hi := p*len(recs)/parts, (p+1)*len(recs)/parts
		buf := &rw.bufs[p]
		buf.Reset()
		if rw.format == FormatNDJSON {
			for _, r := range recs[lo:hi] {
				b, err := AppendRecordJSON(buf.AvailableBuffer(), r)
				if errs[p] = err; err != nil {
					return
				}
				buf.Write(append(b, '\n'))
			}
			return
		}
		var compact []byte
		for i, r := range recs[lo:hi] {
			if first+lo+i == 0 {
				buf.WriteString("\n  ")
			} else {
				buf.WriteString(",\n  ")
			}
			if compact, errs[p] = AppendRecordJSON(compact[:0], r); errs[p] != nil {
				return
			}
			buf.Write(appendIndented(buf.AvailableBuffer(), compact, "  ", " "))
		}
	}
	var wg sync.WaitGroup
	for p := 1; p < parts; p++ {
		wg.Go(func() { encode(p) })
	}
	encode(0)
	wg.Wait()
	for p := range parts {
		if errs[p] != nil {
			return errs[p]
		}
		if _, err := rw.w.Write(rw.bufs[p].Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// streamRow writes one row of the table format with the widths given.
func (rw *RecordWriter) streamRow(row []string) error {
	if rw.table == nil {
		fmt.Fprintf(rw.w, "times are offsets in seconds from %s\n", rw.Start.UTC().Format(time.RFC3339Nano))
		widths := tw.NewMapper[int, int]()
		for i, w := range rw.Widths {
			widths.Set(i, w+2) // the cell's padding
		}
		rw.table = newTable(rw.w, nil, tablewriter.WithStreaming(tw.StreamConfig{Enable: true}),
			tablewriter.WithWidths(tw.CellWidth{PerColumn: widths}))
		if err := rw.table.Start(); err != nil {
			return err
		}
		rw.table.Header(rw.sec.header)
	}
	// The first row goes through tablewriter, which draws the header
	// before it; the others are drawn here as tablewriter would (a
	// tenth of the time: tablewriter measured and cached every cell's
	// width again). TestAppendTableRow compares the two.
	rw.rows++
	if rw.rows > 1 && !slowTableRows {
		var ok bool
		if rw.line, ok = appendTableRow(rw.line[:0], row, rw.Widths); ok {
			_, err := rw.w.Write(rw.line)
			return err
		}
	}
	return rw.table.Append(row)
}

// slowTableRows sends every streamed row through tablewriter (tests).
var slowTableRows = false

// appendTableRow draws row as tablewriter's streaming table with
// WrapNone, left alignment, one space of padding and columns of widths
// does: each cell trimmed, then cut into lines, the row as tall as its
// tallest cell.
// false when a cell does not fit its column (tablewriter then draws it).
func appendTableRow(b []byte, row []string, widths []int) ([]byte, bool) {
	if len(row) != len(widths) {
		return b, false
	}
	height := 1
	for _, c := range row {
		height = max(height, strings.Count(strings.TrimSpace(c), "\n")+1)
	}
	for k := range height {
		b = append(b, "│"...)
		for i, c := range row {
			line := lineAt(strings.TrimSpace(c), k)
			w := textWidth(line)
			if w > widths[i] {
				return b, false
			}
			b = append(b, ' ')
			b = append(b, line...)
			for range widths[i] - w + 1 {
				b = append(b, ' ')
			}
			b = append(b, "│"...)
		}
		b = append(b, '\n')
	}
	return b, true
}

// lineAt is the k-th line of s, or "" past its last.
func lineAt(s string, k int) string {
	for ; k > 0; k-- {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// textWidth is twwidth.Width, without its cache for printable ASCII.
func textWidth(s string) int {
	if printableASCII(s) {
		return len(s)
	}
	return twwidth.Width(s)
}

// printableASCII reports whether s is printable ASCII only: one column
// per byte.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// TableSizer finds the widths of the table format's columns, seeing the
// records a RecordWriter will write (a first pass), so that the writer
// need not keep every row to size them (RecordWriter.Widths).
type TableSizer struct {
	start time.Time
	sec   section
	w     []int
}

// NewTableSizer sizes the columns of records timed from start (the
// RecordWriter's Start).
func NewTableSizer(start time.Time) *TableSizer {
	z := &TableSizer{start: start, sec: recordHeader(styleTable)}
	for _, h := range z.sec.header {
		z.w = append(z.w, cellWidth(h))
	}
	return z
}

// Add widens the columns to r's row.
func (z *TableSizer) Add(r *analyze.Record) {
	for i, v := range recordRow(r, z.start, styleTable) {
		z.w[i] = max(z.w[i], cellWidth(z.sec.cell(styleTable, i, v)))
	}
}

// Widths are the columns' widths, for RecordWriter.Widths.
func (z *TableSizer) Widths() []int { return slices.Clone(z.w) }

// cellWidth is the width tablewriter gives a cell: its widest line once
// trimmed, in terminal columns.
func cellWidth(s string) int {
	w := 0
	for line := range strings.SplitSeq(s, "\n") {
		w = max(w, textWidth(strings.TrimSpace(line)))
	}
	return w
}

func (rw *RecordWriter) spoolDiagnosis(r *analyze.Record) error {
	if rw.diag == nil {
		f, err := os.CreateTemp("", "expectscope-diag-*")
		if err != nil {
			return err
		}
		os.Remove(f.Name()) // unlinked: gone when closed, whatever happens
		rw.diag = f
		rw.diagW = bufio.NewWriter(f)
		if rw.format == FormatMarkdown {
			rw.diagW.WriteString("\n")
		}
	}
	var err error
	if rw.format == FormatMarkdown {
		_, err = fmt.Fprintf(rw.diagW, "- **%s**: %s\n", r.ID, MarkdownEscape(Escape(r.Diagnosis)))
	} else {
		_, err = fmt.Fprintf(rw.diagW, "%s  %s\n", r.ID, Escape(r.Diagnosis))
	}
	return err
}

// copyDiagnoses writes the spooled diagnoses out.
func (rw *RecordWriter) copyDiagnoses() error {
	if rw.diag == nil {
		return nil
	}
	if err := rw.diagW.Flush(); err != nil {
		return err
	}
	if _, err := rw.diag.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(rw.w, rw.diag)
	return err
}

// Close writes what follows the records: diagnoses, hops and summary
// (nil: none) as Write does for the format. hops are the selected hops.
func (rw *RecordWriter) Close(hops []*analyze.Hop, summary *Counts) error {
	if rw.diag != nil {
		defer rw.diag.Close()
	}
	if rw.err == nil {
		rw.err = rw.encodePending()
	}
	if rw.err != nil {
		return rw.err
	}
	switch rw.format {
	case FormatNDJSON:
		return WriteNDJSON(rw.w, &Output{Hops: hops, Summary: summary})
	case FormatJSON:
		end := "\n ],\n"
		if rw.n == 0 {
			end = "],\n"
		}
		if _, err := io.WriteString(rw.w, end+" \"hops\": "); err != nil {
			return err
		}
		if len(hops) == 0 {
			io.WriteString(rw.w, "[]")
		} else {
			for i, h := range hops {
				sep := ",\n  "
				if i == 0 {
					sep = "[\n  "
				}
				io.WriteString(rw.w, sep)
				if err := jsonIndented(rw.w, h, "  "); err != nil {
					return err
				}
			}
			io.WriteString(rw.w, "\n ]")
		}
		io.WriteString(rw.w, ",\n \"summary\": ")
		compact, err := AppendCountsJSON(nil, summary)
		if err != nil {
			return err
		}
		if _, err := rw.w.Write(appendIndented(nil, compact, " ", " ")); err != nil {
			return err
		}
		_, err = io.WriteString(rw.w, "\n}\n")
		return err
	case FormatCSV:
		if len(hops) > 0 {
			hs := intermediarySection(hops, rw.legs)
			rw.cw.Write(nil)
			if err := rw.cw.WriteAll(hs.csvRows(true)); err != nil {
				return err
			}
		}
		rw.cw.Flush()
		return rw.cw.Error()
	case FormatMarkdown:
		if rw.n == 0 {
			fmt.Fprintln(rw.w, "No Expect negotiations found.")
		}
		if err := rw.copyDiagnoses(); err != nil {
			return err
		}
		if len(hops) > 0 {
			s := intermediarySection(hops, rw.legs)
			s.writeMarkdown(rw.w)
		}
		if summary != nil {
			fmt.Fprintln(rw.w)
			return WriteSummaryMarkdown(rw.w, summary)
		}
		return nil
	case FormatTable:
		if rw.n == 0 {
			fmt.Fprintln(rw.w, "No Expect negotiations found.")
		} else if rw.table != nil {
			if err := rw.table.Close(); err != nil {
				return err
			}
			if err := rw.copyDiagnoses(); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(rw.w, "times are offsets in seconds from %s\n", rw.Start.UTC().Format(time.RFC3339Nano))
			t := newTable(rw.w, rw.sec.header)
			for i, row := range rw.cells {
				if err := t.Append(row); err != nil {
					return err
				}
				rw.cells[i] = nil
			}
			rw.cells = nil
			if err := t.Render(); err != nil {
				return err
			}
			if err := rw.copyDiagnoses(); err != nil {
				return err
			}
		}
		if len(hops) > 0 {
			s := intermediarySection(hops, rw.legs)
			if err := s.writeTable(rw.w); err != nil {
				return err
			}
		}
		if summary != nil {
			fmt.Fprintln(rw.w)
			return WriteSummaryTable(rw.w, summary)
		}
		return nil
	}
	return nil
}
