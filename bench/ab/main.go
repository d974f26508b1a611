// Command ab runs expectscope binaries on one capture in alternating
// rounds, each at GOMAXPROCS 1 and 2 (-g), and prints the medians of wall
// time and of CPU time (user+system, from the child's rusage) and the
// ratio of the two wall medians:
//
//	go run ./bench/ab -n 21 -f capture.pcap ./old ./new
//
// Rounds (each in its own random order) spread the VM's changes of
// speed over every binary;
// rusage is the child's own CPU, not a sampling profiler's estimate.
// Each binary after the first is also compared with the first round by
// round (the median of the per-round ratios), which the VM's drift
// between rounds disturbs less than a ratio of medians.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 21, "rounds")
	file := flag.String("f", "", "capture")
	gs := flag.String("g", "12", "GOMAXPROCS values")
	format := flag.String("format", "ndjson", "output format")
	flag.Parse()
	bins := flag.Args()
	type key struct {
		b string
		g byte
	}
	wall := map[key][]float64{}
	cpu := map[key][]float64{}
	type run struct {
		b string
		g byte
	}
	var order []run
	for _, b := range bins {
		for _, g := range []byte(*gs) {
			order = append(order, run{b, g})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range *n {
		// A run goes faster or slower by where it falls in a round (what
		// ran just before it): each round runs in its own order.
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, r := range order {
			b, g := r.b, r.g
			{
				c := exec.Command(b, "read", "--format", *format, *file)
				c.Env = append(os.Environ(), "GOMAXPROCS="+string(g))
				t := time.Now()
				if err := c.Run(); err != nil {
					fmt.Fprintln(os.Stderr, err)
				}
				w := time.Since(t).Seconds()
				ru := c.ProcessState.SysUsage().(*syscall.Rusage)
				u := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
				k := key{b, g}
				wall[k] = append(wall[k], w)
				cpu[k] = append(cpu[k], u)
			}
		}
	}
	med := func(x []float64) float64 { x = slices.Clone(x); slices.Sort(x); return x[len(x)/2] }
	// paired is the median over rounds of b's time over the first
	// binary's in the same round: the VM's speed drifts between rounds
	// more than it does within one.
	paired := func(m map[key][]float64, b string, g byte) float64 {
		var r []float64
		for i, x := range m[key{b, g}] {
			r = append(r, x/m[key{bins[0], g}][i])
		}
		return med(r)
	}
	for _, b := range bins {
		fmt.Printf("%-8s", filepath.Base(b))
		for _, g := range []byte(*gs) {
			k := key{b, g}
			fmt.Printf("  g%c wall %.4f cpu %.4f", g, med(wall[k]), med(cpu[k]))
		}
		if len(*gs) == 2 {
			fmt.Printf("  ratio %.3f", med(wall[key{b, (*gs)[0]}])/med(wall[key{b, (*gs)[1]}]))
		}
		fmt.Println()
		if b != bins[0] {
			fmt.Printf("%-8s", "")
			for _, g := range []byte(*gs) {
				fmt.Printf("  g%c wall %.3fx cpu %.3fx", g, paired(wall, b, g), paired(cpu, b, g))
			}
			fmt.Printf("  (paired with %s, median of per-round ratios)\n", filepath.Base(bins[0]))
		}
	}
}
