package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/report"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "expectscope",
		Short:         "Explain every HTTP/1.1 Expect: 100-continue negotiation in packet captures",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newReadCmd(stdin, stdout, stderr))
	return root
}

// readOptions are the flags of read.
type readOptions struct {
	format      string
	all         bool
	noWaitUnder time.Duration
	maxHeader   int
	failOn      []string
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newReadCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var o readOptions
	cmd := &cobra.Command{
		Use:   "read FILE... | read -",
		Short: "Read capture files (pcap, pcapng, gzip or zstd compressed; - for stdin)",
		Long: `Read packet captures and print every request that carried Expect, what
answered it and when, what the client did with its body, a verdict and flags
citing the RFC rule. Several files are merged into one capture by timestamp.

Exit status: 0 ok, 1 usage, 2 unreadable input, 3 findings matched --fail-on.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRead(cmd, args, &o, stdin, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.format, "format", "f", "", "output format: table, ndjson, json (default: table on a terminal, ndjson otherwise)")
	f.BoolVar(&o.all, "all", false, "also print exchanges without Expect (e.g. unsolicited 100s)")
	f.DurationVar(&o.noWaitUnder, "no-wait-under", 10*time.Millisecond, "a body sent this soon after the headers, before any answer, counts as not waiting")
	f.IntVar(&o.maxHeader, "max-header-bytes", 64<<10, "largest header block parsed; larger is a parse error")
	f.StringSliceVar(&o.failOn, "fail-on", nil, "exit 3 when a negotiation has one of these verdicts or flags")
	return cmd
}

func runRead(cmd *cobra.Command, args []string, o *readOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	format := o.format
	if format == "" {
		format = "ndjson"
		if isTerminal(stdout) {
			format = "table"
		}
	}
	switch format {
	case "table", "ndjson", "json":
	default:
		return &exitError{exitUsage, fmt.Errorf("unknown --format %q (table, ndjson, json)", format)}
	}
	src, err := capture.Open(args, capture.Options{Stdin: stdin})
	if err != nil {
		return &exitError{exitInput, err}
	}
	defer src.Close()
	var recs []*analyze.Record
	opt := pipeline.Options{
		Analyze: analyze.Config{
			All:            true, // upstream legs often carry no Expect: correlation needs them
			NoWaitUnder:    o.noWaitUnder,
			MaxHeaderBytes: o.maxHeader,
			Emit:           func(r *analyze.Record) { recs = append(recs, r) },
		},
		Warn: func(e error) { fmt.Fprintf(stderr, "expectscope: warning: %s\n", report.Escape(e.Error())) },
	}
	res, runErr := pipeline.Run(cmd.Context(), src, opt)
	hops := analyze.Correlate(recs)
	if !o.all {
		recs = slices.DeleteFunc(recs, func(r *analyze.Record) bool { return r.Type == analyze.TypeExchange })
	}
	report.Sort(recs)
	out := &report.Output{Records: recs, Hops: hops, Summary: report.Tally(recs)}
	if res != nil {
		out.Summary.Input = res.Counters()
		out.Summary.Warnings = res.Warnings
	}
	var werr error
	switch format {
	case "table":
		werr = report.WriteTable(stdout, out)
	case "json":
		werr = report.WriteJSON(stdout, out)
	default:
		werr = report.WriteNDJSON(stdout, out)
	}
	if runErr != nil {
		return &exitError{exitInput, runErr}
	}
	if werr != nil {
		return &exitError{exitInput, fmt.Errorf("writing output: %w", werr)}
	}
	if matchesFailOn(recs, o.failOn) {
		return &exitError{code: exitFindings}
	}
	return nil
}

// matchesFailOn reports whether any negotiation has a listed verdict or flag.
func matchesFailOn(recs []*analyze.Record, want []string) bool {
	if len(want) == 0 {
		return false
	}
	set := map[string]bool{}
	for _, w := range want {
		set[strings.TrimSpace(w)] = true
	}
	for _, r := range recs {
		if set[string(r.Verdict)] {
			return true
		}
		for _, f := range r.Flags {
			if set[string(f)] {
				return true
			}
		}
	}
	return false
}
