// Command expectscope explains every HTTP/1.1 Expect: 100-continue
// negotiation in packet captures.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Exit codes.
const (
	exitOK       = 0
	exitUsage    = 1
	exitInput    = 2
	exitFindings = 3
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// defaultMemoryLimit is the soft limit the Go runtime keeps its memory
// under unless GOMEMLIMIT says otherwise. The analysis state is bounded
// (reassembly.Config limits), but with the default GOGC the collector lets
// the heap grow to twice what is live: under a flood of a million SYNs the
// process would peak near 105 MB for 44 MiB live. A larger live set
// (bigger limits, many shards) only makes collections more frequent.
// The limit counts only the runtime's memory: the binary's pages and the
// mapped capture's window add some 12 MiB of resident set, so 70 MiB keeps
// a capture of a million connections open at once near 86 MiB (80 MiB
// made it 96-98 MiB, too close to a 100 MiB budget; it costs that
// capture up to a fifth more time in collections, nothing to captures
// whose live state is smaller).
const defaultMemoryLimit = 70 << 20

// setMemoryLimit applies defaultMemoryLimit when GOMEMLIMIT is unset.
func setMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	paceCollector()
}

// gcPercentUnderLimit is the GOGC expectscope uses while a memory limit is
// in force. The live heap of a run is small (a few MiB for an upload
// capture) and its garbage short-lived, so at the default 100 the
// collector runs every few megabytes allocated, several times a second
// on every core; at 400 it runs a quarter as often (5-6 % less CPU on
// the benchmark captures, 10-40 % on captures of many connections or
// 417s), and the limit still bounds the heap.
const gcPercentUnderLimit = 400

// paceCollector sets GOGC to gcPercentUnderLimit while a memory limit is
// in force and back to 100 without one, unless the GOGC variable says
// otherwise.
func paceCollector() {
	if os.Getenv("GOGC") != "" {
		return
	}
	if debug.SetMemoryLimit(-1) < math.MaxInt64 {
		debug.SetGCPercent(gcPercentUnderLimit)
	} else {
		debug.SetGCPercent(100)
	}
}

func main() {
	setMemoryLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the exit code; tests call it in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.code != exitFindings {
			fmt.Fprintf(stderr, "expectscope: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "expectscope: %v\n", err)
	return exitUsage
}
