package report

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
)

// Output is everything one run produced, in a deterministic order.
type Output struct {
	Records []*analyze.Record
	Hops    []*analyze.Hop
	Summary *Counts
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

// WriteNDJSON writes one JSON object a line: records, hops, then the summary.
func WriteNDJSON(w io.Writer, out *Output) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range out.Records {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	for _, h := range out.Hops {
		if err := enc.Encode(h); err != nil {
			return err
		}
	}
	if out.Summary != nil {
		return enc.Encode(out.Summary)
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
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	return enc.Encode(doc)
}

func fmtMs(v *float64) string {
	if v == nil {
		return "-"
	}
	if *v >= 1000 {
		return fmt.Sprintf("%.2f s", *v/1000)
	}
	return fmt.Sprintf("%.1f ms", *v)
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

// newTable makes a table with our look: headers as written, no wrapping of cells.
func newTable(w io.Writer, header []string) *tablewriter.Table {
	return tablewriter.NewTable(w,
		tablewriter.WithHeader(header),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
	)
}

// WriteTable renders records as a table followed by the counts.
func WriteTable(w io.Writer, out *Output) error {
	if len(out.Records) == 0 {
		fmt.Fprintln(w, "No Expect negotiations found.")
	} else {
		t := newTable(w, []string{"time", "client", "server", "method", "target", "status", "verdict", "100 wait", "client wait", "flags (rule)"})
		var t0 time.Time
		if len(out.Records) > 0 {
			t0 = out.Records[0].HeadersEndAt
		}
		for _, r := range out.Records {
			verdict := string(r.Verdict)
			if r.Type != analyze.TypeNegotiation {
				verdict = "(" + r.Type + ")"
			}
			var flags []string
			for _, f := range r.Flags {
				flags = append(flags, fmt.Sprintf("%s (%s)", f, analyze.RuleOf(f)))
			}
			if err := t.Append([]string{
				fmt.Sprintf("+%.6f", r.HeadersEndAt.Sub(t0).Seconds()),
				r.Conn.Client, r.Conn.Server,
				Escape(Truncate(r.Request.Method, 12)),
				Escape(Truncate(r.Request.Target, 40)),
				status(r), verdict,
				fmtMs(r.Wait100Ms), fmtMs(r.ClientWaitMs),
				strings.Join(flags, "\n"),
			}); err != nil {
				return err
			}
		}
		if err := t.Render(); err != nil {
			return err
		}
		for _, r := range out.Records {
			if r.Diagnosis != "" {
				fmt.Fprintf(w, "%s  %s\n", r.ID, Escape(r.Diagnosis))
			}
		}
	}
	if out.Summary != nil {
		return WriteCounts(w, out.Summary)
	}
	return nil
}

// WriteCounts renders the tally: verdicts, then flags with their rule.
func WriteCounts(w io.Writer, c *Counts) error {
	fmt.Fprintf(w, "\n%d negotiation(s)", c.Negotiations)
	if c.Exchanges > 0 {
		fmt.Fprintf(w, ", %d other exchange(s)", c.Exchanges)
	}
	fmt.Fprintf(w, "; time lost waiting %.3f s; body bytes uploaded then refused %d\n", c.LostMs/1000, c.WastedBytes)
	if c.Negotiations > 0 {
		t := newTable(w, []string{"verdict", "count"})
		for _, v := range analyze.Verdicts {
			if n := c.Verdicts[string(v)]; n > 0 {
				t.Append([]string{string(v), fmt.Sprint(n)})
			}
		}
		if err := t.Render(); err != nil {
			return err
		}
	}
	if len(c.Flags) > 0 {
		t := newTable(w, []string{"flag", "count", "rule"})
		for _, fi := range analyze.Flags {
			if n := c.Flags[string(fi.Flag)]; n > 0 {
				t.Append([]string{string(fi.Flag), fmt.Sprint(n), fi.Rule})
			}
		}
		if err := t.Render(); err != nil {
			return err
		}
	}
	for _, warn := range c.Warnings {
		fmt.Fprintf(w, "warning: %s\n", Escape(warn))
	}
	return nil
}
