package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/expectscope/expectscope/cmd/capgen/gen"
)

// TestSameOutputOnOneAndTwoCores: read gives the same bytes whatever the
// number of cores, on a capture large enough to be mapped, split over two
// workers and spilled to disk, where every 417 is retried on a new
// connection (so half the retries are seen by the other worker).
func TestSameOutputOnOneAndTwoCores(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a 24 MB capture")
	}
	path := filepath.Join(t.TempDir(), "retries.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := gen.Generate(f, gen.Config{Seed: 5, Sessions: 3000, Only: []string{"rejected-retry-new"}, BodyMin: 4096, BodyMax: 8192})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if 2*st.Negotiations <= spillHeld { // each 417 and its retry
		t.Fatalf("%d negotiations: too few records to spill", st.Negotiations)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var outs [2]string
	for i, procs := range []int{1, 2} {
		runtime.GOMAXPROCS(procs)
		out, stderr, code := runCmd(t, "", "read", "-f", "ndjson", "--all", path)
		if code != 0 {
			t.Fatalf("GOMAXPROCS=%d: exit %d: %s", procs, code, stderr)
		}
		outs[i] = out
	}
	if outs[0] != outs[1] {
		t.Errorf("output differs between 1 and 2 cores")
	}
	if n, want := strings.Count(outs[1], `"retry_of":"`), 3000; n != want {
		t.Errorf("%d records with retry_of, want %d", n, want)
	}
}
