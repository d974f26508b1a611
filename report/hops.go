package report

import (
	"fmt"
	"io"
	"strings"

	"github.com/expectscope/expectscope/analyze"
)

// WriteHops writes the "Intermediaries" table: one row per hop with the
// proxy endpoint, the request, the downstream and upstream legs, what the
// proxy changed, and what it cost the client (body bytes uploaded in vain,
// time lost). recs (all records of the run, exchanges included) give the
// request line; a hop whose legs are not among them still prints. A hop
// without an upstream leg (a 417 the proxy answered itself) says so and
// what proves it.
func WriteHops(w io.Writer, hops []*analyze.Hop, recs []*analyze.Record) error {
	if len(hops) == 0 {
		return nil
	}
	s := intermediarySection(hops, recs)
	return s.writeTable(w)
}

// intermediarySection builds the rows of WriteHops.
func intermediarySection(hops []*analyze.Hop, recs []*analyze.Record) section {
	byID := make(map[string]*analyze.Record, len(recs))
	for _, r := range recs {
		byID[r.ID] = r
	}
	s := section{
		title:  "Intermediaries",
		header: []string{"proxy", "request", "downstream", "upstream", "what changed", "uploaded in vain", "time lost"},
		wire:   map[int]bool{1: true},
		multi:  5,
	}
	for _, h := range hops {
		req := "-"
		if r := byID[h.Downstream.ID]; r != nil {
			req = cut(r.Request.Method+" "+r.Request.Target, maxTarget)
		}
		down := fmt.Sprintf("%s %s", h.Downstream.ID, h.Downstream.Client)
		up := "none (the proxy answered itself)"
		if h.HasUpstream() {
			up = fmt.Sprintf("%s %s -> %s", h.Upstream.ID, h.Upstream.Client, h.Upstream.Server)
		} else if h.AttributedBy != "" {
			up += "; " + h.AttributedBy
		}
		changes := "none"
		if len(h.Changes) > 0 {
			changes = strings.Join(h.Changes, "\n")
		}
		wasted := "-"
		if h.WastedBytes > 0 {
			wasted = fmt.Sprintf("%d bytes", h.WastedBytes)
		}
		s.rows = append(s.rows, []string{h.Intermediary, req, down, up, changes, wasted, fmtMs(h.LostMs)})
	}
	return s
}
