package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/expectscope/expectscope/analyze"
)

// verdictMix prints a group's verdicts in report order: "continued 3, rejected 1".
func verdictMix(m map[string]int) string {
	var parts []string
	for _, v := range analyze.Verdicts {
		if n := m[string(v)]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", v, n))
		}
	}
	// Verdicts this build does not know (ndjson from a newer run).
	var other []string
	for k, n := range m {
		if n > 0 && !knownVerdict(k) {
			other = append(other, fmt.Sprintf("%s %d", k, n))
		}
	}
	sort.Strings(other)
	return strings.Join(append(parts, other...), ", ")
}

func knownVerdict(v string) bool {
	for _, k := range analyze.Verdicts {
		if string(k) == v {
			return true
		}
	}
	return false
}

// headline is the one-line total of a summary.
func headline(c *Counts) string {
	s := fmt.Sprintf("%d negotiation(s)", c.Negotiations)
	if c.Exchanges > 0 {
		s += fmt.Sprintf(", %d other exchange(s)", c.Exchanges)
	}
	if c.Hops > 0 {
		s += fmt.Sprintf(", %d hop(s)", c.Hops)
	}
	s += fmt.Sprintf("; time lost waiting %s; bytes uploaded in vain %d", fmtSeconds(c.LostMs), c.WastedBytes)
	s += fmt.Sprintf("; 100 wait p50/p90/p99 %s; client wait p50/p90/p99 %s", fmtPct(c.Wait100), fmtPct(c.ClientWait))
	return s
}

func fmtSeconds(ms float64) string { return fmt.Sprintf("%.3f s", ms/1000) }

// summarySections lays the summary out as tables, the same for every
// text format. No column is marked wire: wire means escaped in advance
// (by cut), and the Host and User-Agent values here are raw, so cell
// escapes them in every style.
func summarySections(c *Counts) []section {
	var out []section
	if c.Negotiations > 0 {
		s := section{title: "Verdicts", header: []string{"verdict", "count"}}
		for _, v := range analyze.Verdicts {
			if n := c.Verdicts[string(v)]; n > 0 {
				s.rows = append(s.rows, []string{string(v), fmt.Sprint(n)})
			}
		}
		for k, n := range c.Verdicts {
			if !knownVerdict(k) && n > 0 {
				s.rows = append(s.rows, []string{k, fmt.Sprint(n)})
			}
		}
		out = append(out, s)
	}
	if len(c.Flags) > 0 {
		s := section{title: "Flags", header: []string{"flag", "count", "rule"}}
		known := map[string]bool{}
		for _, fi := range analyze.Flags {
			known[string(fi.Flag)] = true
			if n := c.Flags[string(fi.Flag)]; n > 0 {
				s.rows = append(s.rows, []string{string(fi.Flag), fmt.Sprint(n), fi.Rule})
			}
		}
		var other []string
		for k := range c.Flags {
			if !known[k] {
				other = append(other, k)
			}
		}
		sort.Strings(other)
		for _, k := range other {
			s.rows = append(s.rows, []string{k, fmt.Sprint(c.Flags[k]), "?"})
		}
		out = append(out, s)
	}
	groupRows := func(title, first string, gs []*Group, wire map[int]bool, key func(*Group) []string) section {
		header := append(strings.Fields(first), "negotiations", "verdicts", "100 wait p50 / p90 / p99", "client wait p50 / p90 / p99", "lost", "bytes in vain")
		s := section{title: title, header: header, wire: wire}
		for _, g := range gs {
			row := append(key(g), fmt.Sprint(g.Negotiations), verdictMix(g.Verdicts), fmtPct(g.Wait100), fmtPct(g.ClientWait), fmtSeconds(g.LostMs), fmt.Sprint(g.WastedBytes))
			s.rows = append(s.rows, row)
		}
		return s
	}
	if len(c.Servers) > 0 {
		out = append(out, groupRows("Servers", "server host", c.Servers, nil, func(g *Group) []string {
			return []string{g.Endpoint, g.Host}
		}))
	}
	if len(c.Clients) > 0 {
		out = append(out, groupRows("Clients", "client", c.Clients, nil, func(g *Group) []string {
			return []string{g.Key}
		}))
	}
	if len(c.Timeouts) > 0 {
		s := section{title: "Client timers that fired", header: []string{"client", "timer", "count", "median wait", "user-agents"}, multi: 5}
		for _, t := range c.Timeouts {
			timer := "unknown"
			if t.TimerMs > 0 {
				timer = fmt.Sprintf("%d ms", t.TimerMs)
			}
			s.rows = append(s.rows, []string{t.Client, timer, fmt.Sprint(t.Count), fmtMs(t.MedianWait), strings.Join(t.UserAgents, "\n")})
		}
		out = append(out, s)
	}
	if len(c.Input) > 0 {
		s := section{title: "Input", header: []string{"counter", "value"}}
		keys := make([]string, 0, len(c.Input))
		for k := range c.Input {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if v := c.Input[k]; v > 0 {
				s.rows = append(s.rows, []string{k, fmt.Sprint(v)})
			}
		}
		out = append(out, s)
	}
	return out
}

// WriteSummaryTable renders the summary as text tables.
func WriteSummaryTable(w io.Writer, c *Counts) error {
	if c == nil {
		return nil
	}
	fmt.Fprintf(w, "Summary: %s\n", headline(c))
	for _, s := range summarySections(c) {
		if err := s.writeTable(w); err != nil {
			return err
		}
	}
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "warning: %s\n", Escape(warn))
	}
	return nil
}

// WriteCounts is WriteSummaryTable under its first name.
func WriteCounts(w io.Writer, c *Counts) error { return WriteSummaryTable(w, c) }

// WriteSummaryMarkdown renders the summary as markdown.
func WriteSummaryMarkdown(w io.Writer, c *Counts) error {
	if c == nil {
		return nil
	}
	fmt.Fprintln(w, "## Summary")
	fmt.Fprintln(w)
	fmt.Fprintln(w, MarkdownEscape(headline(c)))
	for _, s := range summarySections(c) {
		s.writeMarkdown(w)
	}
	if len(c.Warnings) > 0 {
		fmt.Fprintln(w)
		for _, warn := range c.Warnings {
			fmt.Fprintf(w, "- warning: %s\n", MarkdownEscape(Escape(warn)))
		}
	}
	return nil
}

// WriteSummaryCSV renders the summary as CSV: one block per table, each
// row led by the table's name, blocks separated by an empty line; the
// first block is the totals.
func WriteSummaryCSV(w io.Writer, c *Counts) error {
	if c == nil {
		return nil
	}
	cw := csv.NewWriter(w)
	totals := section{title: "Totals", header: []string{"negotiations", "exchanges", "hops", "lost_ms", "wasted_bytes",
		"wait_100_p50_ms", "wait_100_p90_ms", "wait_100_p99_ms", "client_wait_p50_ms", "client_wait_p90_ms", "client_wait_p99_ms"}}
	num := func(v *float64) string {
		if v == nil {
			return ""
		}
		return fmt.Sprint(*v)
	}
	totals.rows = [][]string{{fmt.Sprint(c.Negotiations), fmt.Sprint(c.Exchanges), fmt.Sprint(c.Hops),
		fmt.Sprint(c.LostMs), fmt.Sprint(c.WastedBytes),
		num(c.Wait100.P50), num(c.Wait100.P90), num(c.Wait100.P99),
		num(c.ClientWait.P50), num(c.ClientWait.P90), num(c.ClientWait.P99)}}
	sections := append([]section{totals}, summarySections(c)...)
	if len(c.Warnings) > 0 {
		s := section{title: "Warnings", header: []string{"warning"}, wire: map[int]bool{0: true}}
		for _, warn := range c.Warnings {
			s.rows = append(s.rows, []string{warn})
		}
		sections = append(sections, s)
	}
	for i, s := range sections {
		if i > 0 {
			if err := cw.Write(nil); err != nil {
				return err
			}
		}
		if err := cw.WriteAll(s.csvRows(true)); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteCSV renders one row a record (with its diagnosis), then the hops
// and the summary as further blocks separated by an empty line.
func WriteCSV(w io.Writer, out *Output) error {
	cw := csv.NewWriter(w)
	s := recordSection(out, styleCSV)
	s.header = append([]string{s.header[0], "at"}, s.header[1:]...)
	rows := s.csvRows(false)
	for i, r := range out.Records {
		row := rows[i+1]
		rows[i+1] = append([]string{row[0], r.HeadersEndAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00")}, row[1:]...)
	}
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	if len(out.Hops) > 0 {
		hs := intermediarySection(out.Hops, out.Records)
		cw.Write(nil)
		if err := cw.WriteAll(hs.csvRows(true)); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return nil
}
