package pipeline_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/cmd/capgen/gen"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/gopacket/gopacket/pcapgo"
)

// runFile runs the pipeline over a capture file, mapped or as a stream,
// and returns the ndjson of every record (exchanges included).
func runFile(t *testing.T, path string, mapped bool, workers int) ([]byte, *pipeline.Result) {
	t.Helper()
	src, err := capture.Open([]string{path}, capture.Options{NoMap: !mapped, MapMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if fs, ok := src.(capture.FrameSource); mapped && runtime.GOOS == "linux" && (!ok || !fs.Mapped()) {
		t.Fatal("file not mapped")
	}
	var recs []*analyze.Record
	res, err := pipeline.Run(context.Background(), src, pipeline.Options{Workers: workers,
		Analyze: analyze.Config{All: true, Emit: func(r *analyze.Record) { recs = append(recs, r) }}})
	if err != nil {
		t.Fatal(err)
	}
	return ndjsonOf(t, recs), res
}

func writeTemp(t *testing.T, data []byte) string {
	path := filepath.Join(t.TempDir(), "c.pcap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkMappedSame requires the same records, capture counters, warnings
// and first and last times from the mapped file at any worker count as
// from the stream at one worker.
func checkMappedSame(t *testing.T, path string) *pipeline.Result {
	t.Helper()
	want, wres := runFile(t, path, false, 1)
	for _, w := range []int{1, 2, 3, 4} {
		got, res := runFile(t, path, true, w)
		if !bytes.Equal(got, want) {
			t.Fatalf("workers %d: records differ from the stream's (%d vs %d bytes)", w, len(got), len(want))
		}
		if res.Capture != wres.Capture || res.Analyze != wres.Analyze || !res.First.Equal(wres.First) || !res.Last.Equal(wres.Last) || fmt.Sprint(res.Warnings) != fmt.Sprint(wres.Warnings) {
			t.Fatalf("workers %d: result\n%+v\nwant\n%+v", w, res, wres)
		}
	}
	return wres
}

func TestMappedSameOutput(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 5, Sessions: 1500, Concurrency: 300, BodyMin: 500, BodyMax: 9000, Reorder: 0.02, Retrans: 0.02, Loss: 0.005})
	res := checkMappedSame(t, writeTemp(t, pcap))
	if res.Analyze.Negotiations == 0 {
		t.Fatal("no negotiations")
	}
}

// TestMappedTruncated cuts a capture inside a record: the same warning
// and the same records before it.
func TestMappedTruncated(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 6, Sessions: 200, Concurrency: 40, BodyMin: 500, BodyMax: 9000})
	for _, cut := range []int{len(pcap) / 3, len(pcap) - 7} {
		res := checkMappedSame(t, writeTemp(t, pcap[:cut]))
		if len(res.Warnings) != 1 || res.Capture.FileErrors != 1 {
			t.Fatalf("cut %d: %v %+v", cut, res.Warnings, res.Capture)
		}
	}
}

// TestMappedFragments splits every fifth IPv4 packet with a payload into
// two fragments (the second sent first every other time): decoders defer
// them to one decoder, and records come out as from the stream.
func TestMappedFragments(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 7, Sessions: 200, Concurrency: 40, BodyMin: 500, BodyMax: 9000})
	r, err := pcapgo.NewReader(bytes.NewReader(pcap))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := pcapgo.NewWriterNanos(&out)
	if err := w.WriteFileHeader(65535, r.LinkType()); err != nil {
		t.Fatal(err)
	}
	n, frags := 0, 0
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ip := data[14:]
		if binary.BigEndian.Uint16(data[12:14]) == 0x0800 && ip[0] == 0x45 && len(ip) > 200 {
			if n++; n%5 == 0 {
				frags++
				cut := 20 + 96 // header, TCP header and some payload
				first := bytes.Clone(data[:14+cut])
				binary.BigEndian.PutUint16(first[14+2:], uint16(cut))
				binary.BigEndian.PutUint16(first[14+6:], 0x2000)
				second := append(bytes.Clone(data[:14+20]), ip[cut:]...)
				binary.BigEndian.PutUint16(second[14+2:], uint16(len(ip)-cut+20))
				binary.BigEndian.PutUint16(second[14+6:], uint16((cut-20)/8))
				pair := [][]byte{first, second}
				if frags%2 == 0 {
					pair[0], pair[1] = second, first
				}
				for _, f := range pair {
					ci.CaptureLength, ci.Length = len(f), len(f)
					if err := w.WritePacket(ci, f); err != nil {
						t.Fatal(err)
					}
				}
				continue
			}
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	res := checkMappedSame(t, writeTemp(t, out.Bytes()))
	if res.Capture.Reassembled != uint64(frags) || frags == 0 || res.Analyze.Negotiations == 0 {
		t.Fatalf("%d fragmented, result %+v", frags, res)
	}
}

// TestChunkedFraming frames a capture in small chunks, with good and with
// mostly wrong guesses of where records start, cut inside a record or not.
func TestChunkedFraming(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 8, Sessions: 300, Concurrency: 40, BodyMin: 500, BodyMax: 9000, Reorder: 0.02})
	for _, size := range []int{700, 4096, 100 << 10} {
		for _, bad := range []bool{false, true} {
			for _, cut := range []int{len(pcap), len(pcap) * 2 / 3} {
				t.Run(fmt.Sprintf("size=%d,bad=%v,cut=%d", size, bad, cut), func(t *testing.T) {
					defer pipeline.SetChunking(size, bad)()
					checkMappedSame(t, writeTemp(t, pcap[:cut]))
				})
			}
		}
	}
}
