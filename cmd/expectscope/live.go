package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/reassembly"
	"github.com/expectscope/expectscope/report"
	"github.com/spf13/cobra"
)

// liveOptions are the flags of live.
type liveOptions struct {
	iface       string
	port        uint16
	hosts       []string
	bpfDDD      string
	filter      string
	idle        time.Duration
	duration    time.Duration
	format      string
	write       string
	fanout      int
	bufferMiB   int
	all         bool
	noWaitUnder time.Duration
}

func newLiveCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var o liveOptions
	cmd := &cobra.Command{
		Use:   "live -i IFACE [--port N] [--host H]",
		Short: "Watch a live interface and print each negotiation as soon as it is decided",
		Long: `Sniff a network interface (AF_PACKET, pure Go; the libpcap build also takes
--filter EXPR) and print every Expect negotiation as soon as it is decided:
its final response came, or the client gave up waiting and sent the body.
Connections idle longer than --idle (capture time) are flushed. --duration,
Ctrl-C (SIGINT) and SIGTERM end the capture cleanly: what is still open is
flushed, then the summary is printed, with the kernel's drop counters.

On a loopback interface every packet passes twice (leaving and arriving);
each is captured once. Several processes share a busy interface with
--fanout ID (PACKET_FANOUT by flow hash: a connection stays in one process);
merge their ndjson with expectscope report.

Live capture needs CAP_NET_RAW: run as root, or once
  sudo setcap cap_net_raw+ep $(which expectscope)

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLive(cmd.Context(), &o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.iface, "interface", "i", "", "interface to capture on (required), e.g. eth0 or lo, or any for every interface (frames saved by -w as tcpdump -i any saves them: Linux cooked v2)")
	f.Uint16Var(&o.port, "port", 0, "capture only TCP to or from this port (kernel filter)")
	f.StringSliceVar(&o.hosts, "host", nil, "capture only TCP to or from this address (or name; repeatable)")
	f.StringVar(&o.bpfDDD, "bpf-ddd", "", "kernel filter from a file holding the output of: tcpdump -i IFACE -ddd EXPR (replaces --port/--host)")
	f.StringVar(&o.filter, "filter", "", "pcap filter expression (libpcap build only: go build -tags libpcap)")
	f.DurationVar(&o.idle, "idle", 30*time.Second, "flush a connection after this much capture time without a packet")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until SIGINT or SIGTERM)")
	f.StringVarP(&o.format, "format", "f", "", "output format: table or ndjson (default: table on a terminal, ndjson otherwise)")
	f.StringVarP(&o.write, "write", "w", "", "also save the captured packets to this pcap file")
	f.IntVar(&o.fanout, "fanout", 0, "join PACKET_FANOUT group ID (1-65535) with other expectscope processes on the same interface")
	f.IntVar(&o.bufferMiB, "buffer", 64, "kernel socket buffer in MiB")
	f.BoolVar(&o.all, "all", false, "also print exchanges without Expect")
	f.DurationVar(&o.noWaitUnder, "no-wait-under", 10*time.Millisecond, "a body sent this soon after the headers, before any answer, counts as not waiting")
	return cmd
}

// liveSpec turns the flags into capture options.
func (o *liveOptions) liveSpec(ctx context.Context) (capture.LiveOptions, error) {
	lo := capture.LiveOptions{Interface: o.iface, Fanout: o.fanout, BufferBytes: o.bufferMiB << 20, Expr: o.filter}
	if o.iface == "" {
		return lo, &exitError{exitUsage, errors.New("live: -i IFACE is required")}
	}
	if o.fanout < 0 || o.fanout > 0xffff {
		return lo, &exitError{exitUsage, fmt.Errorf("--fanout %d: want an id from 1 to 65535", o.fanout)}
	}
	if o.bpfDDD != "" {
		if o.port != 0 || len(o.hosts) > 0 || o.filter != "" {
			return lo, &exitError{exitUsage, errors.New("--bpf-ddd replaces --port, --host and --filter: give one or the other")}
		}
		fh, err := os.Open(o.bpfDDD)
		if err != nil {
			return lo, &exitError{exitInput, err}
		}
		defer fh.Close()
		prog, err := capture.ParseDDD(fh)
		if err != nil {
			return lo, &exitError{exitUsage, fmt.Errorf("--bpf-ddd %s: %w", o.bpfDDD, err)}
		}
		lo.Program = prog
		return lo, nil
	}
	if o.filter != "" && (o.port != 0 || len(o.hosts) > 0) {
		return lo, &exitError{exitUsage, errors.New("--filter replaces --port and --host: write them into the expression")}
	}
	lo.Filter.Port = o.port
	for _, h := range o.hosts {
		if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			lo.Filter.Hosts = append(lo.Filter.Hosts, a.Unmap())
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		if err != nil || len(addrs) == 0 {
			return lo, &exitError{exitUsage, fmt.Errorf("--host %q: not an address, and it does not resolve: %v", h, err)}
		}
		for _, a := range addrs {
			lo.Filter.Hosts = append(lo.Filter.Hosts, a.Unmap())
		}
	}
	return lo, nil
}

func runLive(ctx context.Context, o *liveOptions, stdout, stderr io.Writer) error {
	format := o.format
	if format == "" {
		format = report.FormatNDJSON
		if isTerminal(stdout) {
			format = report.FormatTable
		}
	}
	if format != report.FormatTable && format != report.FormatNDJSON {
		return &exitError{exitUsage, fmt.Errorf("live: --format %q cannot stream (table, ndjson)", format)}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	spec, err := o.liveSpec(ctx)
	if err != nil {
		return err
	}
	warn := func(e error) { fmt.Fprintf(stderr, "expectscope: warning: %s\n", report.Escape(e.Error())) }
	spec.Warn = warn
	var save *os.File
	if o.write != "" {
		if save, err = os.Create(o.write); err != nil {
			return &exitError{exitInput, fmt.Errorf("-w: %w", err)}
		}
		defer save.Close()
		spec.Save = save
	}
	src, err := capture.OpenLive(spec)
	if err != nil {
		if save != nil {
			save.Close()
			os.Remove(o.write)
		}
		return &exitError{exitInput, liveOpenError(err)}
	}
	defer src.Close()

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			src.Stop()
		case <-stopped:
		}
	}()

	fmt.Fprintf(stderr, "expectscope: capturing on %s (%s)\n", o.iface, describeFilter(o, spec))
	st := newRecordStream(stdout, format, o.all)
	defer st.Close()
	opt := pipeline.Options{
		Analyze: analyze.Config{
			All:         true, // exchanges feed the correlation of hops
			NoWaitUnder: o.noWaitUnder,
			Emit:        st.Emit,
		},
		Reassembly: reassembly.Config{IdleTimeout: o.idle},
		Warn:       warn,
		// One worker: the sharded pipeline hands segments over in batches,
		// which would hold records back while traffic is light. A busy
		// interface is spread over processes with --fanout instead.
		Workers: 1,
	}
	// The source stops on ctx; the pipeline must drain and flush, so it
	// runs on a context that is never cancelled.
	res, runErr := pipeline.Run(context.WithoutCancel(ctx), src, opt)
	if err := src.Close(); err != nil && o.write != "" {
		warn(fmt.Errorf("-w %s: %w", o.write, err))
	}
	var input map[string]uint64
	var warnings []string
	if res != nil {
		input = res.Counters()
		warnings = res.Warnings
	}
	if input == nil {
		input = map[string]uint64{}
	}
	ls := src.LiveStats()
	input["kernel_packets"] = ls.KernelPackets
	input["kernel_drops"] = ls.KernelDrops
	input["loopback_duplicates"] = ls.LoopbackDups
	if err := st.Finish(input, warnings); err != nil {
		return &exitError{exitInput, fmt.Errorf("writing output: %w", err)}
	}
	if runErr != nil && !errors.Is(runErr, pipeline.ErrNoInput) {
		return &exitError{exitInput, runErr}
	}
	return nil
}

// liveOpenError words the errors an operator meets first.
func liveOpenError(err error) error {
	switch {
	case errors.Is(err, capture.ErrPermission):
		return fmt.Errorf("%w to open a packet socket: run as root, or grant it once with\n  sudo setcap cap_net_raw+ep $(which expectscope)", err)
	}
	return err
}

func describeFilter(o *liveOptions, spec capture.LiveOptions) string {
	switch {
	case o.bpfDDD != "":
		return fmt.Sprintf("filter from %s, %d instructions", o.bpfDDD, len(spec.Program))
	case o.filter != "":
		return "filter " + o.filter
	}
	s := "tcp"
	if o.port != 0 {
		s += fmt.Sprintf(" and port %d", o.port)
	}
	if len(spec.Filter.Hosts) > 0 {
		var hs []string
		for _, h := range spec.Filter.Hosts {
			hs = append(hs, h.String())
		}
		s += " and host " + strings.Join(hs, " or ")
	}
	if o.fanout != 0 {
		s += fmt.Sprintf(", fanout group %d", o.fanout)
	}
	return s
}

// recordStream writes records as the analysis decides them, one line
// each (an ndjson object or a table line), and keeps them for the hops
// and the summary at the end. It is safe for concurrent use: sharded
// pipelines may emit from several goroutines.
//
// To stream a command's output: st := newRecordStream(w, format, all);
// defer st.Close(); optionally st.Match = filter.Match; set
// analyze.Config{All: true, Emit: st.Emit}; run the pipeline; then
// st.Finish(res.Counters(), res.Warnings).
//
// Records are printed as they come and spilled to a temporary file (see
// spill): at the end they are correlated (hops can add flags) and
// summarised from there, so the stream holds no record in memory.
type recordStream struct {
	mu     sync.Mutex
	w      io.Writer
	format string
	all    bool
	// Match, when set, selects the records printed and summarised.
	Match func(*analyze.Record) bool
	// FailOn lists the verdicts and flags Failed looks for.
	FailOn  []string
	enc     *json.Encoder
	line    []byte // a record's ndjson line
	sp      *spill // every record, for correlation and the summary
	emitted int
	printed int
	failed  bool
	header  bool
	err     error
	flusher interface{ Flush() error }
}

// newRecordStream returns a stream writing format (table or ndjson) to w.
// With all false, exchanges (records without Expect) are kept for
// correlation but neither printed nor summarised. If w has a
// Flush() error method it is called after every record.
func newRecordStream(w io.Writer, format string, all bool) *recordStream {
	s := &recordStream{w: w, format: format, all: all, enc: json.NewEncoder(w)}
	s.enc.SetEscapeHTML(false)
	if f, ok := w.(interface{ Flush() error }); ok {
		s.flusher = f
	}
	s.sp, s.err = newSpill()
	return s
}

// Close removes the temporary file.
func (s *recordStream) Close() {
	if s.sp != nil {
		s.sp.Close()
	}
}

func (s *recordStream) shows(r *analyze.Record) bool {
	return (s.all || r.Type == analyze.TypeNegotiation) && (s.Match == nil || s.Match(r))
}

// Emit writes one record at once; use it as analyze.Config.Emit.
func (s *recordStream) Emit(r *analyze.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sp != nil {
		s.sp.Emit(r)
	}
	s.emitted++
	if !s.shows(r) {
		return
	}
	s.printed++
	if s.err != nil {
		return
	}
	switch s.format {
	case report.FormatNDJSON:
		if s.line, s.err = report.AppendRecordJSON(s.line[:0], r); s.err == nil {
			_, s.err = s.w.Write(append(s.line, '\n'))
		}
	default:
		if !s.header {
			s.header = true
			_, s.err = fmt.Fprintln(s.w, "TIME             CLIENT -> SERVER                            REQUEST                                  VERDICT            FINAL  WAIT100  FLAGS")
		}
		if s.err == nil {
			_, s.err = fmt.Fprintln(s.w, tableLine(r))
		}
	}
	if s.err == nil && s.flusher != nil {
		s.err = s.flusher.Flush()
	}
}

// tableLine renders one record on one line; wire text is escaped.
func tableLine(r *analyze.Record) string {
	status := "-"
	if r.Final != nil {
		status = fmt.Sprint(r.Final.Status)
	}
	wait := "-"
	if r.Wait100Ms != nil {
		wait = fmt.Sprintf("%.1fms", *r.Wait100Ms)
	}
	var flags []string
	for _, f := range r.Flags {
		flags = append(flags, string(f))
	}
	verdict := string(r.Verdict)
	if r.Type != analyze.TypeNegotiation {
		verdict = "(" + r.Type + ")"
	}
	ends := report.Escape(r.Conn.Client) + " -> " + report.Escape(r.Conn.Server)
	req := report.Truncate(report.Escape(r.Request.Method+" "+r.Request.Target), 40)
	line := fmt.Sprintf("%-16s %-43s %-40s %-18s %-6s %-8s %s",
		r.HeadersEndAt.Local().Format("15:04:05.000000"), ends, req, verdict, status, wait, strings.Join(flags, ","))
	if r.Diagnosis != "" && r.Verdict != analyze.Continued {
		line += "  # " + report.Escape(r.Diagnosis)
	}
	return strings.TrimRight(line, " ")
}

// Finish correlates every record emitted, then writes the hops (ndjson
// only) and the summary of the selected records: an ndjson summary
// object, or the summary tables. Correlation can add flags to records
// already printed: the summary and Failed count them.
func (s *recordStream) Finish(input map[string]uint64, warnings []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if err := s.sp.finish(); err != nil {
		return err
	}
	cands, err := s.sp.candidates()
	if err != nil {
		return err
	}
	hops := analyze.Correlate(cands)
	patched := make(map[string]*analyze.Record, len(cands))
	for _, r := range cands {
		patched[r.ID] = r
	}
	fail := map[string]bool{}
	for _, w := range s.FailOn {
		fail[strings.TrimSpace(w)] = true
	}
	tl := report.NewTallier()
	// Shown or not was decided on the record as it came, before
	// correlation (as printed); the summary counts it as correlated.
	if err := s.sp.each(nil, func(r *analyze.Record) error {
		if s.shows(r) {
			if p := patched[r.ID]; p != nil {
				r = p
			}
			tl.Add(r)
			if !s.failed && len(fail) > 0 {
				s.failed = r.Type == analyze.TypeNegotiation && fail[string(r.Verdict)] ||
					slices.ContainsFunc(r.Flags, func(f analyze.Flag) bool { return fail[string(f)] })
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reading back spilled records: %w", err)
	}
	c := tl.Counts()
	c.Hops = len(hops)
	c.Input = input
	c.Warnings = warnings
	if s.format == report.FormatNDJSON {
		report.SortHops(hops)
		for _, h := range hops {
			if err = s.enc.Encode(h); err != nil {
				return err
			}
		}
		err = s.enc.Encode(c)
	} else {
		if s.printed > 0 {
			fmt.Fprintln(s.w)
		}
		err = report.WriteCounts(s.w, c)
	}
	if err == nil && s.flusher != nil {
		err = s.flusher.Flush()
	}
	return err
}

// Counts returns how many records were emitted and how many printed.
func (s *recordStream) Counts() (emitted, printed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emitted, s.printed
}

// Failed reports whether a selected record had a verdict or flag of
// FailOn; it is known after Finish.
func (s *recordStream) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// streams reports whether read should stream: standard input alone, a
// format that can stream, and nothing that needs every record first
// (ladders, the HTML report, --summary alone, --since/--until offsets
// from the first record).
func (o *readOptions) streams(args []string, format string) bool {
	return len(args) == 1 && args[0] == "-" &&
		(format == report.FormatNDJSON || format == report.FormatTable) &&
		o.ladder == "" && o.html == "" && !o.summary && o.since == "" && o.until == ""
}

// runReadStream is read for a pipe (tcpdump -U -w - | expectscope read -):
// each record is written as soon as it is decided, not at end of input;
// hops and the summary follow at the end. It honours the record filters
// and --fail-on.
func runReadStream(ctx context.Context, src capture.Source, o *readOptions, format string, stdout, stderr io.Writer) error {
	f, err := o.filter(time.Time{})
	if err != nil {
		return err
	}
	st := newRecordStream(stdout, format, o.all)
	defer st.Close()
	st.Match = f.Match
	st.FailOn = o.failOn
	warn := func(e error) { fmt.Fprintf(stderr, "expectscope: warning: %s\n", report.Escape(e.Error())) }
	opt := pipeline.Options{
		Analyze: analyze.Config{
			All:            true, // upstream legs often carry no Expect: correlation needs them
			NoWaitUnder:    o.noWaitUnder,
			MaxHeaderBytes: o.maxHeader,
			Emit:           st.Emit,
		},
		Reassembly: reassembly.Config{MaxConns: o.maxConns, MaxBufferedTotal: o.maxBuffered},
		Warn:       warn,
		Workers:    1, // batches of the sharded pipeline would hold records back
	}
	res, runErr := pipeline.Run(ctx, src, opt)
	warnEvicted(stderr, res, o.maxConns)
	var input map[string]uint64
	var warnings []string
	if res != nil {
		input = res.Counters()
		warnings = res.Warnings
	}
	if err := st.Finish(input, warnings); err != nil {
		return &exitError{exitInput, fmt.Errorf("writing output: %w", err)}
	}
	if runErr != nil {
		return &exitError{exitInput, runErr}
	}
	if st.Failed() {
		return &exitError{code: exitFindings}
	}
	return nil
}
