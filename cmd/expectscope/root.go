package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/reassembly"
	"github.com/expectscope/expectscope/report"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

const exitCodesHelp = `Exit status:
  0  success (and no negotiation matched --fail-on)
  1  usage error (unknown flag, format, verdict or flag name, bad time)
  2  unreadable input or output (file missing, not a capture, write failed)
  3  findings: a negotiation matched --fail-on`

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "expectscope",
		Short:         "Explain every HTTP/1.1 Expect: 100-continue negotiation in packet captures",
		Long:          "Explain every HTTP/1.1 Expect: 100-continue negotiation in packet captures.\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{exitUsage, err}
	})
	memLimit := byteSize(defaultMemoryLimit)
	root.PersistentFlags().Var(&memLimit, "memory-limit", "soft memory limit of the Go runtime: the collector works harder as the heap nears it; 0 for none (without this flag: GOMEMLIMIT if set, else the default)")
	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		if f := cmd.Flags().Lookup("memory-limit"); f != nil && f.Changed {
			applyMemoryLimit(memLimit)
		}
	}
	root.AddCommand(newReadCmd(stdin, stdout, stderr))
	root.AddCommand(newReportCmd(stdout, stderr))
	root.AddCommand(newLiveCmd(stdin, stdout, stderr))
	return root
}

// outputOptions are the flags read and report share: what to select and
// how to render it.
type outputOptions struct {
	format  string
	summary bool
	ladder  string
	failOn  []string
	html    string

	verdicts, flags, servers, clients, hosts []string
	since, until                             string
}

// ladderAll is the value of a bare --ladder.
const ladderAll = "\x00all"

func (o *outputOptions) register(f *pflag.FlagSet) {
	f.StringVarP(&o.format, "format", "f", "", "output format: "+strings.Join(report.Formats, ", ")+" (default: table on a terminal, ndjson otherwise)")
	f.BoolVar(&o.summary, "summary", false, "print only the summary (verdicts, flags, per server, per client, waits, time lost, bytes in vain)")
	f.StringVar(&o.ladder, "ladder", "", "draw ladder diagrams: bare --ladder for every flagged or non-continued negotiation, --ladder=ID (or --ladder ID) for one")
	f.Lookup("ladder").NoOptDefVal = ladderAll
	f.StringVar(&o.html, "html", "", "also write a self-contained HTML report (summary, timeline, ladders, table) to this file")
	f.StringSliceVar(&o.failOn, "fail-on", nil, "exit 3 when a selected negotiation has one of these verdicts or flags")
	f.StringSliceVar(&o.verdicts, "verdict", nil, "select negotiations with one of these verdicts")
	f.StringSliceVar(&o.flags, "flag", nil, "select negotiations with one of these flags")
	f.StringSliceVar(&o.servers, "server", nil, "select by server endpoint: IP:PORT, IP or :PORT")
	f.StringSliceVar(&o.clients, "client", nil, "select by client: User-Agent family (curl, Go-http-client, .NET, Java, python, aws-sdk, node, browser, other), IP[:PORT], or a User-Agent substring")
	f.StringSliceVar(&o.hosts, "host", nil, "select by Host header (with or without port)")
	f.StringVar(&o.since, "since", "", "select requests at or after this time: RFC 3339, or an offset from the first request (1.5s, 2m, +12.5)")
	f.StringVar(&o.until, "until", "", "select requests before this time: RFC 3339, or an offset from the first request")
}

// resolveFormat picks the default format and checks the name.
func (o *outputOptions) resolveFormat(stdout io.Writer) (string, error) {
	format := o.format
	if format == "" {
		format = report.FormatNDJSON
		if isTerminal(stdout) {
			format = report.FormatTable
		}
	}
	if !slices.Contains(report.Formats, format) {
		return "", &exitError{exitUsage, fmt.Errorf("unknown --format %q (%s)", format, strings.Join(report.Formats, ", "))}
	}
	return format, nil
}

// takeLadderID handles "--ladder ID" written with a space: pflag reads a
// bare --ladder and leaves ID among the arguments. An argument that is
// not an existing file (nor -) is then taken as the id.
func (o *outputOptions) takeLadderID(args []string) []string {
	if o.ladder != ladderAll {
		return args
	}
	for i, a := range args {
		if a == "-" {
			continue
		}
		if _, err := os.Stat(a); err != nil {
			o.ladder = a
			return slices.Delete(slices.Clone(args), i, i+1)
		}
	}
	return args
}

// filter builds the record filter; start is the origin of offsets.
func (o *outputOptions) filter(start time.Time) (*report.Filter, error) {
	f := &report.Filter{Verdicts: o.verdicts, Flags: o.flags, Servers: o.servers, Clients: o.clients, Hosts: o.hosts}
	if err := f.Validate(); err != nil {
		return nil, &exitError{exitUsage, err}
	}
	var err error
	if f.Since, err = report.ParseTime(o.since, start); err != nil {
		return nil, &exitError{exitUsage, fmt.Errorf("--since: %w", err)}
	}
	if f.Until, err = report.ParseTime(o.until, start); err != nil {
		return nil, &exitError{exitUsage, fmt.Errorf("--until: %w", err)}
	}
	return f, nil
}

// validate checks what can be checked before reading any input.
func (o *outputOptions) validate() error {
	if err := (&report.Filter{Verdicts: o.verdicts, Flags: o.flags}).Validate(); err != nil {
		return &exitError{exitUsage, err}
	}
	for _, w := range o.failOn {
		w = strings.TrimSpace(w)
		if analyze.RuleOf(analyze.Flag(w)) == "" && !slices.Contains(analyze.Verdicts, analyze.Verdict(w)) {
			return &exitError{exitUsage, fmt.Errorf("--fail-on: %q is neither a verdict nor a flag", w)}
		}
	}
	return nil
}

// render selects, summarises and writes out; it returns the selected
// output (for --fail-on and --write-flagged).
func (o *outputOptions) render(w io.Writer, format string, all []*analyze.Record, hops []*analyze.Hop, showExchanges bool, input map[string]uint64, warnings []string) (*report.Output, error) {
	report.Sort(all)
	report.SortHops(hops)
	shown := all
	if !showExchanges {
		shown = nil
		for _, r := range all {
			if r.Type == analyze.TypeNegotiation {
				shown = append(shown, r)
			}
		}
	}
	out := &report.Output{Records: shown, Hops: hops}
	if len(all) > 0 {
		out.Start = all[0].HeadersEndAt
	}
	f, err := o.filter(out.Start)
	if err != nil {
		return nil, err
	}
	sel := f.Apply(out)
	sel.Summary = report.Tally(sel.Records)
	sel.Summary.Hops = len(sel.Hops)
	sel.Summary.Input = input
	sel.Summary.Warnings = warnings
	if err := writeHTMLFile(o.html, sel, all); err != nil {
		return sel, err
	}
	var werr error
	switch {
	case o.ladder != "":
		id := o.ladder
		if id == ladderAll {
			id = report.LadderAll
		}
		werr = report.WriteLadders(w, report.LadderSet{Records: sel.Records, All: all, Hops: sel.Hops}, id, format == report.FormatMarkdown)
		if werr != nil && id != report.LadderAll && !strings.HasPrefix(werr.Error(), "write") {
			return sel, &exitError{exitUsage, fmt.Errorf("--ladder: %w", werr)}
		}
	default:
		werr = report.Write(w, format, sel, o.summary)
	}
	if werr != nil {
		return sel, &exitError{exitInput, fmt.Errorf("writing output: %w", werr)}
	}
	return sel, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// readOptions are the flags of read.
type readOptions struct {
	outputOptions
	all          bool
	noWaitUnder  time.Duration
	maxHeader    int
	maxConns     int
	maxBuffered  int
	writeFlagged string
	progress     string
}

func newReadCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var o readOptions
	cmd := &cobra.Command{
		Use:   "read FILE... | read -",
		Short: "Read capture files (pcap, pcapng, gzip or zstd compressed; - for stdin)",
		Long: `Read packet captures and print every request that carried Expect, what
answered it and when, what the client did with its body, a verdict and flags
citing the RFC rule. Several files are merged into one capture by timestamp.

Filters (--verdict, --flag, --server, --client, --host, --since, --until)
select records before anything is rendered or summarised; --fail-on looks
at the selected records only. The table format ends with the summary;
--summary prints the summary alone; --ladder draws sequence diagrams.
Percentiles are nearest-rank: the value at rank ceil(p/100 x N).

` + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRead(cmd, args, &o, stdin, stdout, stderr)
		},
	}
	f := cmd.Flags()
	o.register(f)
	f.BoolVar(&o.all, "all", false, "also print exchanges without Expect (e.g. unsolicited 100s)")
	f.DurationVar(&o.noWaitUnder, "no-wait-under", 10*time.Millisecond, "a body sent this soon after the headers, before any answer, counts as not waiting")
	f.IntVar(&o.maxHeader, "max-header-bytes", 64<<10, "largest header block parsed; larger is a parse error")
	f.IntVar(&o.maxConns, "max-conns", 0, fmt.Sprintf("connections tracked at once; beyond it closed ones are forgotten first, then the least recently active open one is evicted (counted as evicted_conns, a warning at the end) and picked up again at its next message; 0 for one per %.1f KiB of the memory limit, from 1024 to %d (%d at the default limit, %d without a limit)",
		float64(reassembly.ConnBudget)/1024, reassembly.DefaultMaxConns, reassembly.MaxConnsFor(defaultMemoryLimit), reassembly.DefaultMaxConns))
	f.IntVar(&o.maxBuffered, "max-buffered-bytes", reassembly.DefaultMaxBufferedTotal, "out-of-order bytes held for all connections; beyond it holes become gaps")
	f.StringVar(&o.writeFlagged, "write-flagged", "", "write every packet of the connections with a flagged selected negotiation (and of their hops' other legs) to this pcap file (not with stdin)")
	f.StringVar(&o.progress, "progress", "auto", "progress bar on stderr while reading files: auto (when stderr is a terminal), always, never")
	return cmd
}

func runRead(cmd *cobra.Command, args []string, o *readOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	args = o.takeLadderID(args)
	if len(args) == 0 {
		return &exitError{exitUsage, fmt.Errorf("read: no capture file given")}
	}
	format, err := o.resolveFormat(stdout)
	if err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	if o.maxConns < 0 || o.maxBuffered <= 0 || o.maxHeader <= 0 {
		return &exitError{exitUsage, fmt.Errorf("--max-conns must not be negative, --max-buffered-bytes and --max-header-bytes must be positive")}
	}
	if o.maxConns == 0 {
		// The soft limit in force: --memory-limit, GOMEMLIMIT or the default.
		o.maxConns = reassembly.MaxConnsFor(debug.SetMemoryLimit(-1))
	}
	switch o.progress {
	case "auto", "always", "never":
	default:
		return &exitError{exitUsage, fmt.Errorf("unknown --progress %q (auto, always, never)", o.progress)}
	}
	if o.writeFlagged != "" && slices.Contains(args, "-") {
		return &exitError{exitUsage, fmt.Errorf("--write-flagged needs capture files: standard input cannot be read a second time to copy the packets")}
	}
	src, err := capture.Open(args, capture.Options{Stdin: stdin})
	if err != nil {
		return &exitError{exitInput, err}
	}
	defer src.Close()
	// A pipe streams: records come out while the capture runs.
	if o.streams(args, format) {
		return runReadStream(cmd.Context(), src, o, format, stdout, stderr)
	}
	sp, err := newSpill()
	if err != nil {
		return &exitError{exitInput, err}
	}
	defer sp.Close()
	// Records go to a temporary file as they are decided and come back
	// sorted; exchanges are kept for correlation and ladders (a hop's
	// upstream leg may carry no Expect) and printed only with --all.
	opt := pipeline.Options{
		Analyze: analyze.Config{
			All:            true, // upstream legs often carry no Expect: correlation needs them
			NoWaitUnder:    o.noWaitUnder,
			MaxHeaderBytes: o.maxHeader,
			Emit:           sp.Emit,
		},
		Reassembly: reassembly.Config{MaxConns: o.maxConns, MaxBufferedTotal: o.maxBuffered},
		Warn:       func(e error) { fmt.Fprintf(stderr, "expectscope: warning: %s\n", report.Escape(e.Error())) },
	}
	bar := startProgress(o.progress, stderr, args)
	if bar != nil {
		opt.Progress = bar.update
	}
	res, runErr := pipeline.Run(cmd.Context(), src, opt)
	if bar != nil {
		bar.finish(res)
	}
	warnEvicted(stderr, res, o.maxConns)
	var input map[string]uint64
	var warnings []string
	if res != nil {
		input = res.Counters()
		warnings = res.Warnings
	}
	if err := sp.finish(); err != nil {
		return &exitError{exitInput, err}
	}
	cands, err := sp.candidates()
	if err != nil {
		return &exitError{exitInput, fmt.Errorf("reading back spilled records: %w", err)}
	}
	hops := analyze.Correlate(cands)
	report.SortHops(hops)
	patched := make(map[string]*analyze.Record, len(cands))
	for _, r := range cands {
		patched[r.ID] = r
	}
	conns, failed, err := o.renderSpill(stdout, format, sp, patched, hops, input, warnings)
	if err != nil {
		return err
	}
	if runErr != nil {
		return &exitError{exitInput, runErr}
	}
	if o.writeFlagged != "" {
		n, err := writeFlagged(o.writeFlagged, args, conns)
		if err != nil {
			return &exitError{exitInput, fmt.Errorf("--write-flagged: %w", err)}
		}
		fmt.Fprintf(stderr, "expectscope: wrote %d packet(s) of flagged connections to %s\n", n, o.writeFlagged)
	}
	if failed {
		return &exitError{code: exitFindings}
	}
	return nil
}

// warnEvicted says, once the capture is read, that open connections were
// evicted at the --max-conns cap, what that costs and what to do: the
// count alone (evicted_conns) does not say that answers went missing.
func warnEvicted(stderr io.Writer, res *pipeline.Result, maxConns int) {
	if res == nil || res.Reassembly.Evicted == 0 {
		return
	}
	fmt.Fprintf(stderr, "expectscope: warning: %d open connection(s) evicted: more than --max-conns (%d) were open at once; "+
		"an exchange in flight on one is lost (its response counts in orphan_responses); "+
		"raise --max-conns, and --memory-limit with it (%.1f KiB a connection)\n",
		res.Reassembly.Evicted, maxConns, float64(reassembly.ConnBudget)/1024)
}

// renderSpill is render for records read back from a spill in report
// order: it selects, summarises and writes them one at a time. It returns
// the connections --write-flagged copies and whether a selected record
// matched --fail-on.
func (o *readOptions) renderSpill(stdout io.Writer, format string, sp *spill, patched map[string]*analyze.Record, hops []*analyze.Hop, input map[string]uint64, warnings []string) (map[analyze.Conn]bool, bool, error) {
	readErr := func(err error) error {
		return &exitError{exitInput, fmt.Errorf("reading back spilled records: %w", err)}
	}
	var start time.Time
	if err := sp.each(nil, func(r *analyze.Record) error { start = r.HeadersEndAt; return errStop }); err != nil {
		return nil, false, readErr(err)
	}
	f, err := o.filter(start)
	if err != nil {
		return nil, false, err
	}
	selected := func(r *analyze.Record) bool {
		return (o.all || r.Type == analyze.TypeNegotiation) && f.Match(r)
	}
	// The hops with a selected leg (report.Filter.Apply's choice), known
	// before the records are read: every leg is in patched.
	legs := map[string]bool{}
	var sel []*analyze.Hop
	for _, h := range hops {
		legs[h.Downstream.ID] = true
		legs[h.Upstream.ID] = true
		d, u := patched[h.Downstream.ID], patched[h.Upstream.ID]
		if d != nil && selected(d) || u != nil && selected(u) {
			sel = append(sel, h)
		}
	}
	if err := writeHTMLSpill(o.html, sp, patched, sel, selected, start, func(c *report.Counts) {
		c.Hops, c.Input, c.Warnings = len(sel), input, warnings
	}); err != nil {
		return nil, false, err
	}
	failSet := map[string]bool{}
	for _, w := range o.failOn {
		failSet[strings.TrimSpace(w)] = true
	}
	failed := false
	conns := map[analyze.Conn]bool{}
	flaggedIDs := map[string]bool{}
	bw := bufio.NewWriterSize(stdout, 64<<10)
	var rw *report.RecordWriter
	var lw *report.LadderWriter
	if o.ladder != "" {
		id := o.ladder
		if id == ladderAll {
			id = report.LadderAll
		}
		lw = report.NewLadderWriter(bw, sel, func(id string) *analyze.Record { return patched[id] }, selected, id, format == report.FormatMarkdown)
	} else if !o.summary {
		if rw, err = report.NewRecordWriter(bw, format, hops); err != nil {
			return nil, false, &exitError{exitInput, fmt.Errorf("writing output: %w", err)}
		}
		rw.Start = start
		if format == report.FormatTable {
			// A first pass sizes the columns, so that rows need not
			// all be kept until the end to size them.
			z := report.NewTableSizer(start)
			if err := sp.eachAhead(patched, func(r *analyze.Record) error {
				if selected(r) {
					z.Add(r)
				}
				return nil
			}); err != nil {
				return nil, false, readErr(err)
			}
			rw.Widths = z.Widths()
		}
	}
	tl := report.NewTallier()
	var werr error
	err = sp.eachAhead(patched, func(r *analyze.Record) error {
		if lw != nil {
			// Every record: --ladder=ID draws any of them.
			if werr = lw.See(r); werr != nil {
				return errStop
			}
		}
		if !selected(r) {
			return nil
		}
		tl.Add(r)
		if len(failSet) > 0 && !failed {
			failed = r.Type == analyze.TypeNegotiation && failSet[string(r.Verdict)] ||
				slices.ContainsFunc(r.Flags, func(fl analyze.Flag) bool { return failSet[string(fl)] })
		}
		if r.Type == analyze.TypeNegotiation && len(r.Flags) > 0 && o.writeFlagged != "" {
			conns[r.Conn] = true
			if legs[r.ID] {
				flaggedIDs[r.ID] = true
			}
		}
		if rw != nil {
			if werr = rw.Write(r); werr != nil {
				return errStop
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, readErr(err)
	}
	for _, h := range sel {
		if flaggedIDs[h.Downstream.ID] || flaggedIDs[h.Upstream.ID] {
			conns[analyze.Conn{Client: h.Downstream.Client, Server: h.Downstream.Server}] = true
			conns[analyze.Conn{Client: h.Upstream.Client, Server: h.Upstream.Server}] = true
		}
	}
	c := tl.Counts()
	c.Hops = len(sel)
	c.Input = input
	c.Warnings = warnings
	if werr == nil {
		switch {
		case lw != nil:
			if werr = lw.Close(); werr != nil && o.ladder != ladderAll {
				return nil, false, &exitError{exitUsage, fmt.Errorf("--ladder: %w", werr)}
			}
		case rw != nil:
			werr = rw.Close(sel, c)
		default:
			werr = report.Write(bw, format, &report.Output{Summary: c}, true)
		}
	}
	if werr == nil {
		werr = bw.Flush()
	}
	if werr != nil {
		return nil, false, &exitError{exitInput, fmt.Errorf("writing output: %w", werr)}
	}
	return conns, failed, nil
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
		if r.Type == analyze.TypeNegotiation && set[string(r.Verdict)] {
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
