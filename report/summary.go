package report

import (
	"github.com/expectscope/expectscope/analyze"
)

// Counts is the tally of the capture's negotiations.
type Counts struct {
	Type         string         `json:"type"` // "summary"
	Negotiations int            `json:"negotiations"`
	Exchanges    int            `json:"exchanges,omitempty"`
	Hops         int            `json:"hops,omitempty"`
	Verdicts     map[string]int `json:"verdicts"`
	Flags        map[string]int `json:"flags"`
	// LostMs is the time clients waited in vain, summed.
	LostMs float64 `json:"lost_ms"`
	// WastedBytes are body bytes uploaded and then refused (final >= 400).
	WastedBytes int64 `json:"wasted_bytes"`
	// Input carries the pipeline's own counters (packets, gaps, errors).
	Input map[string]uint64 `json:"input,omitempty"`
	// Warnings are the problems met while reading, one line each.
	Warnings []string `json:"warnings,omitempty"`
}

// Tally counts records. Exchange records are counted apart.
func Tally(recs []*analyze.Record) *Counts {
	c := &Counts{Type: "summary", Verdicts: map[string]int{}, Flags: map[string]int{}}
	for _, r := range recs {
		for _, f := range r.Flags {
			c.Flags[string(f)]++
		}
		if r.Type != analyze.TypeNegotiation {
			c.Exchanges++
			continue
		}
		c.Negotiations++
		c.Verdicts[string(r.Verdict)]++
		if r.LostMs != nil {
			c.LostMs += *r.LostMs
		}
		if r.Final != nil && r.Final.Status >= 400 && r.BodyStartAt != nil {
			c.WastedBytes += r.BodyBytes
		}
	}
	return c
}
