// Command capgen writes a deterministic synthetic capture of HTTP/1.1
// upload traffic, and beside it the expected verdict of every
// Expect: 100-continue negotiation in it.
//
//	capgen -o up.pcap -sessions 10000 -seed 1
//
// writes up.pcap and up.pcap.expect.json.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/expectscope/expectscope/cmd/capgen/gen"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "capgen:", err)
		os.Exit(1)
	}
}

// Sidecar is the JSON written beside the capture.
type Sidecar struct {
	Config       gen.Config        `json:"config"`
	Packets      uint64            `json:"packets"`
	Bytes        uint64            `json:"bytes"`
	Connections  uint64            `json:"connections"`
	Scenarios    map[string]int    `json:"scenarios"`
	Negotiations []gen.Expectation `json:"negotiations"`
}

func run(args []string) error {
	fs := flag.NewFlagSet("capgen", flag.ContinueOnError)
	var cfg gen.Config
	out := fs.String("o", "capgen.pcap", "output pcap file (- for stdout)")
	expect := fs.String("expect", "", "sidecar JSON with the expected verdicts (default: OUT.expect.json; none for stdout)")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "random seed: the same flags give the same bytes")
	fs.IntVar(&cfg.Sessions, "sessions", 1000, "sessions (one scenario each, one or two connections)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "sessions in flight at once (interleaved)")
	fs.IntVar(&cfg.BodyMin, "body-min", 1<<10, "smallest upload body")
	fs.IntVar(&cfg.BodyMax, "body-max", 64<<10, "largest upload body")
	fs.DurationVar(&cfg.Hold, "hold", 0, "keep every connection idle this long before closing (many concurrent connections)")
	fs.DurationVar(&cfg.Stagger, "stagger", 0, "spread the first sessions of the slots over this much time")
	fs.Float64Var(&cfg.Loss, "loss", 0, "probability that a body segment is missing from the capture")
	fs.Float64Var(&cfg.Reorder, "reorder", 0, "probability that a body segment is swapped with the next")
	fs.Float64Var(&cfg.Retrans, "retrans", 0, "probability that a body segment is retransmitted")
	fs.IntVar(&cfg.AckEvery, "ack-every", 8, "the receiver ACKs every n body segments")
	only := fs.String("only", "", "comma-separated scenarios to generate (default all but "+strings.Join(gen.ExtraScenarios(), " and ")+": "+strings.Join(gen.Scenarios(), ",")+")")
	targetMB := fs.Int("size-mb", 0, "instead of -sessions, generate about this many MB (estimated from the mean body size)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if *targetMB > 0 {
		mean := (cfg.BodyMin + cfg.BodyMax) / 2
		// About 0.95 bodies per session on average (some are refused, some sent twice), plus headers and handshakes.
		per := float64(mean)*0.95*float64(gen.MSS+58)/gen.MSS + 2000
		cfg.Sessions = int(float64(*targetMB) * 1e6 / per)
	}
	w := os.Stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	t0 := time.Now()
	exps, st, err := gen.Generate(w, cfg)
	if err != nil {
		return err
	}
	if *out != "-" {
		if err := w.Close(); err != nil {
			return err
		}
	}
	if *expect == "" && *out != "-" {
		*expect = *out + ".expect.json"
	}
	if *expect != "" {
		b, err := json.MarshalIndent(Sidecar{cfg, st.Packets, st.Bytes, st.Connections, st.Scenarios, exps}, "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*expect, b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "capgen: %d sessions, %d connections, %d packets, %.1f MB, %d negotiations in %v\n",
		cfg.Sessions, st.Connections, st.Packets, float64(st.Bytes)/1e6, st.Negotiations, time.Since(t0).Round(time.Millisecond))
	return nil
}
