// Package pipeline wires a capture source through reassembly into the
// analysis: capture -> reassembly -> analyze, one direction, no callbacks
// back. The command line and the tests share it, for files and live.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/reassembly"
)

// Options configure one run.
type Options struct {
	Analyze    analyze.Config
	Reassembly reassembly.Config
	// Warn receives non-fatal problems (a truncated file, a parse error).
	Warn func(error)
	// Progress, when set, is called every few thousand packets.
	Progress func(capture.Stats, analyze.Stats)
	// Workers is the number of analysis shards. With one, everything runs
	// on the calling goroutine. With more, Workers goroutines each run
	// their own Assembler and Analyzer; a connection always goes to the
	// same worker (a symmetric hash of its 4-tuple), so it is reassembled
	// in order. For a memory-mapped capture file (see capture.FrameSource)
	// framing and decoding run in parallel too and nothing is copied (see
	// mapped.go); for other sources the calling goroutine reads and
	// decodes, and copies segments in batches to the workers (sharded.go).
	//
	// Zero picks: GOMAXPROCS workers for a mapped file of at least
	// minShardedSize; one otherwise, because reading a stream (standard
	// input, gzip, zstd) is then the bottleneck and the copies to the
	// workers make several no faster than one (bench/RESULTS.md, round 3).
	// The records are the same for any number of workers.
	//
	// Clock ticks: a Segment whose Src is not valid (!Src.IsValid()) and
	// that carries no payload is a tick. It only advances capture time (a
	// live source sends one when the wire is quiet), so idle connections
	// are flushed by capture time; it is not counted as a packet and
	// reaches every worker.
	Workers int
}

// Result is what a run counted.
type Result struct {
	Capture    capture.Stats
	Reassembly reassembly.Stats
	Analyze    analyze.Stats
	Warnings   []string
	// First and Last are the capture times of the first and last packet.
	First, Last time.Time
}

// Counters flattens the counts for a summary.
func (r *Result) Counters() map[string]uint64 {
	return map[string]uint64{
		"packets":              r.Capture.Packets,
		"tcp_segments":         r.Capture.TCP,
		"non_tcp_packets":      r.Capture.NonTCP,
		"truncated_packets":    r.Capture.Truncated,
		"decode_errors":        r.Capture.DecodeErrs,
		"file_errors":          r.Capture.FileErrors,
		"ip_fragments":         r.Capture.Fragments,
		"connections":          r.Reassembly.Connections,
		"evicted_conns":        r.Reassembly.Evicted,
		"gaps":                 r.Reassembly.Gaps,
		"conflicting_overlaps": r.Reassembly.Conflicts,
		"http_connections":     r.Analyze.HTTPConnections,
		"non_http_streams":     r.Analyze.NonHTTP,
		"requests":             r.Analyze.Requests,
		"responses":            r.Analyze.Responses,
		"orphan_responses":     r.Analyze.OrphanResponses,
		"parse_errors":         r.Analyze.ParseErrors,
	}
}

// ErrNoInput means not one packet could be read.
var ErrNoInput = errors.New("no packet could be read")

// Run reads src to the end (or until ctx is done), feeding every segment
// through reassembly into the analysis, and flushes everything at the end
// so that no record understood so far is lost.
func Run(ctx context.Context, src capture.Source, opt Options) (res *Result, err error) {
	// A memory-mapped capture truncated while it is read faults (SIGBUS);
	// as a panic it is recovered into an error like any other.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	w := opt.Workers
	if w <= 0 {
		w = defaultWorkers(src)
	}
	if w > 1 {
		if fs, ok := src.(capture.FrameSource); ok && fs.Mapped() {
			if c, ok := fs.(interface {
				Chunker(size, maxSize int) *capture.Chunker
			}); ok {
				if ch := c.Chunker(chunkSize, maxChunkSize); ch != nil {
					return runChunked(ctx, fs, ch, opt, w)
				}
			}
			return runMapped(ctx, fs, opt, w)
		}
		return runSharded(ctx, src, opt, w)
	}
	return runSingle(ctx, src, opt)
}

// isTick reports whether seg is a clock tick (see Options.Workers).
func isTick(seg *capture.Segment) bool {
	return !seg.Src.IsValid() && len(seg.Payload) == 0
}

// runSingle is the whole analysis on the calling goroutine.
func runSingle(ctx context.Context, src capture.Source, opt Options) (res *Result, err error) {
	an := analyze.New(opt.Analyze)
	rcfg := opt.Reassembly
	rcfg.StablePayloads = mapped(src)
	asm := reassembly.NewAssembler(an, rcfg)
	res = &Result{}
	var last time.Time
	warn := func(e error) {
		res.Warnings = append(res.Warnings, e.Error())
		if opt.Warn != nil {
			opt.Warn(e)
		}
	}
	var lastParseErr error
	finish := func() {
		asm.FlushAll(last)
		an.Flush()
		res.Capture = src.Stats()
		res.Reassembly = asm.Stats()
		res.Analyze = an.Stats()
		res.Last = last
	}
	defer func() {
		// Last net: a bug must not lose the records already understood.
		if p := recover(); p != nil {
			err = recovered(p, "at packet %d", src.Stats().Packets)
			func() {
				defer func() { recover() }()
				finish()
			}()
		}
	}()
	var n uint64
	for {
		if n&1023 == 0 && ctx.Err() != nil {
			break
		}
		seg, e := src.Next()
		if e != nil {
			if e == io.EOF {
				break
			}
			var w *capture.Warning
			if errors.As(e, &w) {
				warn(e)
				continue
			}
			warn(e)
			break
		}
		if seg.Time.After(last) {
			last = seg.Time
		}
		if isTick(seg) {
			// The assembler takes a tick as time passing: it flushes idle
			// connections and opens none.
			asm.Add(seg)
			continue
		}
		n++
		if res.First.IsZero() || seg.Time.Before(res.First) {
			res.First = seg.Time
		}
		an.AtPacket(seg.Packet)
		asm.Add(seg)
		if pe := an.LastParseError(); pe != nil && pe != lastParseErr {
			lastParseErr = pe
			if an.Stats().ParseErrors <= 10 {
				warn(pe)
			}
		}
		if opt.Progress != nil && n&4095 == 0 {
			opt.Progress(src.Stats(), an.Stats())
		}
	}
	finish()
	return outcome(res, nil)
}

// mapped reports whether src is a memory-mapped file, whose payloads stay
// valid until it is closed (reassembly.Config.StablePayloads).
func mapped(src capture.Source) bool {
	fs, ok := src.(capture.FrameSource)
	return ok && fs.Mapped()
}

// minShardedSize is the smallest mapped file analysed by several workers
// by default: below it, starting them costs more than they save.
const minShardedSize = 8 << 20

// defaultWorkers is the number of workers Options.Workers zero stands for.
func defaultWorkers(src capture.Source) int {
	ms, ok := src.(interface{ MappedSize() int64 })
	if !mapped(src) || !ok || ms.MappedSize() < minShardedSize {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// recovered turns a recovered panic into the run's error. A memory fault
// (a mapped capture cut short while it was read) is the input's doing and
// says so; anything else is a bug, reported with where it happened.
func recovered(p any, where string, args ...any) error {
	at := fmt.Sprintf(where, args...)
	if f, ok := p.(interface{ Addr() uintptr }); ok && f.Addr() >= 4096 { // a nil pointer faults in the first page: a bug
		return fmt.Errorf("the capture file changed while it was read (truncated?), %s", at)
	}
	return fmt.Errorf("internal error %s: %v", at, p)
}
