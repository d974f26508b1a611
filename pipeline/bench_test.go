package pipeline_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/cmd/capgen/gen"
	"github.com/expectscope/expectscope/pipeline"
)

var (
	benchOnce sync.Once
	benchPcap []byte
	benchPkts uint64
)

// benchCapture is a generated capture of about 64 MB of upload traffic
// (MSS-sized segments, 64 connections in flight), built once.
func benchCapture(b *testing.B) []byte {
	benchOnce.Do(func() {
		var buf bytes.Buffer
		_, st, err := gen.Generate(&buf, gen.Config{Seed: 3, Sessions: 400, Concurrency: 64, BodyMin: 16 << 10, BodyMax: 300 << 10})
		if err != nil {
			b.Fatal(err)
		}
		benchPcap, benchPkts = buf.Bytes(), st.Packets
	})
	return benchPcap
}

func benchRun(b *testing.B, workers int) {
	pcap := benchCapture(b)
	b.SetBytes(int64(len(pcap)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(pcap)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pipeline.Run(context.Background(), src, pipeline.Options{Workers: workers}); err != nil {
			b.Fatal(err)
		}
		src.Close()
		n++
	}
	b.ReportMetric(float64(benchPkts)*float64(n)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkRun is the whole path, capture bytes to records, end to end,
// from a stream (one worker by default).
func BenchmarkRun(b *testing.B) { benchRun(b, 0) }

// BenchmarkRun2 is the same on two workers.
func BenchmarkRun2(b *testing.B) { benchRun(b, 2) }

// benchMapped runs the same capture from a file, memory-mapped.
func benchMapped(b *testing.B, workers int) {
	pcap := benchCapture(b)
	path := filepath.Join(b.TempDir(), "bench.pcap")
	if err := os.WriteFile(path, pcap, 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pcap)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		src, err := capture.Open([]string{path}, capture.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pipeline.Run(context.Background(), src, pipeline.Options{Workers: workers}); err != nil {
			b.Fatal(err)
		}
		src.Close()
		n++
	}
	b.ReportMetric(float64(benchPkts)*float64(n)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkRunMapped is the whole path from a mapped file, GOMAXPROCS
// workers by default: compare -cpu 1,2.
func BenchmarkRunMapped(b *testing.B) { benchMapped(b, 0) }

// BenchmarkRunMapped1 is the same on one worker.
func BenchmarkRunMapped1(b *testing.B) { benchMapped(b, 1) }
