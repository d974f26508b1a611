package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/expectscope/expectscope/analyze"
	"github.com/spf13/cobra"
)

// maxNDJSONLine bounds one ndjson line.
const maxNDJSONLine = 16 << 20

func newReportCmd(stdout, stderr io.Writer) *cobra.Command {
	var o outputOptions
	var all bool
	cmd := &cobra.Command{
		Use:   "report FILE.ndjson...",
		Short: "Merge ndjson written by read (several runs or hosts) into one report",
		Long: `Read the ndjson that read writes (--format ndjson), from one run or many
(several sensors, batch jobs, files carried by a log pipeline), and render
it like read does: any --format, --summary, --ladder, filters, --fail-on.
Negotiation, exchange and hop lines are merged; summary lines are ignored
and the summary is computed anew from the merged records. "-" reads
standard input.

` + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			args = o.takeLadderID(args)
			if len(args) == 0 {
				return &exitError{exitUsage, fmt.Errorf("report: no ndjson file given")}
			}
			format, err := o.resolveFormat(stdout)
			if err != nil {
				return err
			}
			if err := o.validate(); err != nil {
				return err
			}
			var recs []*analyze.Record
			var hops []*analyze.Hop
			seen := map[string]bool{}
			for i, path := range args {
				var fr []*analyze.Record
				var fh []*analyze.Hop
				if err := readNDJSON(path, cmd.InOrStdin(), &fr, &fh); err != nil {
					return &exitError{exitInput, err}
				}
				renameClashes(i+1, fr, fh, seen)
				recs = append(recs, fr...)
				hops = append(hops, fh...)
			}
			if len(hops) == 0 {
				// Runs that wrote no hop lines: correlate what was merged
				// (legs captured by different sensors meet here).
				hops = analyze.Correlate(recs)
			}
			sel, err := o.render(stdout, format, recs, hops, all, nil, nil)
			if err != nil {
				return err
			}
			if matchesFailOn(sel.Records, o.failOn) {
				return &exitError{code: exitFindings}
			}
			return nil
		},
	}
	o.register(cmd.Flags())
	cmd.Flags().BoolVar(&all, "all", false, "also print exchange records (requests without Expect)")
	return cmd
}

// readNDJSON appends the records and hops of one ndjson file. Blank
// lines and lines of other types (summary) are skipped; a line that is
// not JSON is an error naming the file and line.
func readNDJSON(path string, stdin io.Reader, recs *[]*analyze.Record, hops *[]*analyze.Hop) error {
	var r io.Reader
	if path == "-" {
		r = stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxNDJSONLine)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b, &head); err != nil {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
		switch head.Type {
		case analyze.TypeNegotiation, analyze.TypeExchange:
			rec := new(analyze.Record)
			if err := json.Unmarshal(b, rec); err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
			*recs = append(*recs, rec)
		case analyze.TypeHop:
			h := new(analyze.Hop)
			if err := json.Unmarshal(b, h); err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
			*hops = append(*hops, h)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// renameClashes keeps record ids unique across merged runs: each run
// numbers its records from 1, so when a file reuses an id already read,
// every id of that file is prefixed with the file's 1-based position
// ("2/1-1"), links (retry_of, retried_by, hops) included.
func renameClashes(file int, recs []*analyze.Record, hops []*analyze.Hop, seen map[string]bool) {
	clash := false
	for _, r := range recs {
		if seen[r.ID] {
			clash = true
			break
		}
	}
	if clash {
		re := func(id string) string { return fmt.Sprintf("%d/%s", file, id) }
		for _, r := range recs {
			r.ID = re(r.ID)
			if r.RetryOf != nil {
				v := re(*r.RetryOf)
				r.RetryOf = &v
			}
			if r.RetriedBy != nil {
				v := re(*r.RetriedBy)
				r.RetriedBy = &v
			}
		}
		for _, h := range hops {
			h.Downstream.ID, h.Upstream.ID = re(h.Downstream.ID), re(h.Upstream.ID)
		}
	}
	for _, r := range recs {
		seen[r.ID] = true
	}
}
