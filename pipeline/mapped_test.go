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
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// runFile runs the pipeline over a capture file, mapped or as a stream,
// and returns the ndjson of every record (exchanges included).
func runFile(t *testing.T, path string, mapped bool, workers int) ([]byte, *pipeline.Result) {
	t.Helper()
	return runFileWith(t, path, mapped, workers, analyze.Config{})
}

// runFileWith is runFile with acfg (All is set, Emit collects).
func runFileWith(t *testing.T, path string, mapped bool, workers int, acfg analyze.Config) ([]byte, *pipeline.Result) {
	t.Helper()
	return runFileOpts(t, path, mapped, pipeline.Options{Workers: workers, Analyze: acfg})
}

// runFileOpts is runFileWith with every option given.
func runFileOpts(t *testing.T, path string, mapped bool, opt pipeline.Options) ([]byte, *pipeline.Result) {
	t.Helper()
	acfg := opt.Analyze
	src, err := capture.Open([]string{path}, capture.Options{NoMap: !mapped, MapMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if fs, ok := src.(capture.FrameSource); mapped && runtime.GOOS == "linux" && (!ok || !fs.Mapped()) {
		t.Fatal("file not mapped")
	}
	var recs []*analyze.Record
	acfg.All = true
	acfg.Emit = func(r *analyze.Record) { recs = append(recs, r) }
	opt.Analyze = acfg
	res, err := pipeline.Run(context.Background(), src, opt)
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

// toPcapng rewrites a pcap as pcapng with what real files have and the
// chunked framing must get right: an unused interface before the one
// used, timestamps with an offset, statistics, decryption secrets and
// custom blocks between packets, a second section that differs from the
// first in the offset only, and a third one, big endian, whose packets go
// on on an interface described after its first packets.
func toPcapng(t *testing.T, pcap []byte) []byte {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(pcap))
	if err != nil {
		t.Fatal(err)
	}
	var o binary.AppendByteOrder = binary.LittleEndian
	var out []byte
	block := func(typ uint32, body []byte) {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		n := uint32(12 + len(body))
		out = o.AppendUint32(out, typ)
		out = o.AppendUint32(out, n)
		out = append(out, body...)
		out = o.AppendUint32(out, n)
	}
	opt := func(b []byte, code uint16, v []byte) []byte {
		b = o.AppendUint16(b, code)
		b = o.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	shb := func() {
		b := o.AppendUint32(nil, 0x1a2b3c4d)
		b = o.AppendUint16(b, 1)
		b = o.AppendUint16(b, 0)
		b = o.AppendUint64(b, ^uint64(0))
		block(0x0a0d0d0a, b)
	}
	idb := func(link layers.LinkType, offset uint64) {
		b := o.AppendUint16(nil, uint16(link))
		b = o.AppendUint16(b, 0)
		b = o.AppendUint32(b, 262144)
		b = opt(b, 9, []byte{9})
		if offset != 0 {
			b = opt(b, 14, o.AppendUint64(nil, offset))
		}
		block(1, opt(b, 0, nil))
	}
	const offset = 1_000_000
	shb()
	idb(layers.LinkTypeNull, 0)
	idb(r.LinkType(), offset)
	iface, off := uint32(1), uint64(offset)
	var n int
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		switch {
		case n == 3000:
			// The same byte order and interface ids, another offset:
			// only the times tell the tables apart.
			shb()
			idb(layers.LinkTypeNull, 0)
			idb(r.LinkType(), 2*offset)
			off = 2 * offset
		case n == 6000:
			o = binary.BigEndian
			shb()
			idb(r.LinkType(), 0)
			iface, off = 0, 0
		case n == 7000:
			idb(r.LinkType(), 3*offset)
			iface, off = 1, 3*offset
		case n%1000 == 0:
			b := o.AppendUint32(nil, iface)
			block(5, o.AppendUint64(b, 0))
		case n%777 == 0:
			block(0xa, []byte("TLSK\x00\x00\x00\x04keys"))
			block(0xbad, []byte("custom"))
		}
		units := uint64(ci.Timestamp.UnixNano()) - off*1e9
		b := o.AppendUint32(nil, iface)
		b = o.AppendUint32(b, uint32(units>>32))
		b = o.AppendUint32(b, uint32(units))
		b = o.AppendUint32(b, uint32(len(data)))
		b = o.AppendUint32(b, uint32(ci.Length))
		block(6, append(b, data...))
	}
	if n < 7500 {
		t.Fatalf("only %d packets: the last section is not reached", n)
	}
	return out
}

// TestMappedPcapng reads the same traffic as pcap and as pcapng: the same
// records, counters and warnings, from the pcapng read mapped at any
// worker count and in chunks of any size, with good and wrong guesses.
func TestMappedPcapng(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 9, Sessions: 600, Concurrency: 60, BodyMin: 500, BodyMax: 9000, Reorder: 0.02})
	want, wres := runFile(t, writeTemp(t, pcap), false, 1)
	ng := toPcapng(t, pcap)
	for _, cut := range []int{len(ng), len(ng) * 2 / 3} {
		path := writeTemp(t, ng[:cut])
		if cut == len(ng) {
			got, res := runFile(t, path, false, 1)
			if !bytes.Equal(got, want) || res.Capture != wres.Capture {
				t.Fatalf("pcapng records differ from the pcap's (%d vs %d bytes), capture %+v, want %+v", len(got), len(want), res.Capture, wres.Capture)
			}
		}
		for _, size := range []int{700, 4096, 100 << 10} {
			for _, bad := range []bool{false, true} {
				t.Run(fmt.Sprintf("cut=%d,size=%d,bad=%v", cut, size, bad), func(t *testing.T) {
					defer pipeline.SetChunking(size, bad)()
					checkMappedSame(t, path)
				})
			}
		}
	}
}

// TestFloodSameOutput: a flood of 417s, retried on the same and on other
// connections (other workers'), beyond the 417s held for a retry
// (MaxAwait, tiny here so that a few thousand sessions are a flood): what
// is linked and what is given up on is the same on one worker and on
// several, run after run, and so are the counts.
func TestFloodSameOutput(t *testing.T) {
	cfg := gen.Config{Seed: 17, Sessions: 3000, Concurrency: 300, BodyMin: 200, BodyMax: 2000,
		Only: []string{"rejected-retry-new", "rejected-retry-expect", "rejected-no-retry", "plain-post"}}
	pcap, _ := generate(t, cfg)
	path := writeTemp(t, pcap)
	acfg := analyze.Config{MaxAwait: 16}
	want, wres := runFileWith(t, path, false, 1, acfg)
	if wres.Analyze.RetryWaitsDropped == 0 {
		t.Fatal("no 417 given up on: not a flood")
	}
	if !bytes.Contains(want, []byte(`"retried_by"`)) {
		t.Fatal("no retry linked")
	}
	for run := range 3 {
		for _, w := range []int{2, 3} {
			got, res := runFileWith(t, path, true, w, acfg)
			if !bytes.Equal(got, want) {
				t.Fatalf("run %d, %d workers: records differ from one worker's", run+1, w)
			}
			if res.Analyze != wres.Analyze {
				t.Fatalf("run %d, %d workers: counts\n%+v\nwant\n%+v", run+1, w, res.Analyze, wres.Analyze)
			}
		}
	}
}

// runCanceled runs the chunked path over path with w workers, canceling
// the run from the Progress callback at its calls-th call.
func runCanceled(t *testing.T, path string, w, calls int) *pipeline.Result {
	t.Helper()
	src, err := capture.Open([]string{path}, capture.Options{MapMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	res, err := pipeline.Run(ctx, src, pipeline.Options{
		Workers: w,
		Analyze: analyze.Config{Emit: func(*analyze.Record) {}},
		Progress: func(capture.Stats, analyze.Stats) {
			if n++; n == calls {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatalf("%d workers: %v", w, err)
	}
	return res
}

// TestChunkedCancel: a run canceled (SIGINT) stops after the chunk it is
// in, with every chunk before it, at any worker count: no worker waits
// for one that stopped.
func TestChunkedCancel(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 8, Sessions: 300, Concurrency: 40, BodyMin: 500, BodyMax: 9000})
	path := writeTemp(t, pcap)
	defer pipeline.SetChunking(4096, false)()
	_, all := runFile(t, path, true, 2)
	for _, calls := range []int{1, 5, 40} {
		var want uint64
		for _, w := range []int{2, 3, 4} {
			res := runCanceled(t, path, w, calls)
			got := res.Capture.Packets
			if got == 0 || got >= all.Capture.Packets {
				t.Fatalf("canceled at call %d, %d workers: %d packets of %d", calls, w, got, all.Capture.Packets)
			}
			if want == 0 {
				want = got
			} else if got != want {
				t.Fatalf("canceled at call %d: %d packets with %d workers, %d with 2", calls, got, w, want)
			}
		}
	}
}

// TestChunkedWorkerPanic: a worker that panics (a bug) makes the run end
// with an error naming it, after every chunk was read: the other workers
// and the merger do not wait for it.
func TestChunkedWorkerPanic(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 8, Sessions: 300, Concurrency: 40, BodyMin: 500, BodyMax: 9000})
	path := writeTemp(t, pcap)
	defer pipeline.SetChunking(4096, false)()
	_, all := runFile(t, path, true, 2)
	for _, w := range []int{2, 3} {
		for _, at := range [][2]int{{0, 0}, {w - 1, 3}, {1, 50}} {
			func() {
				defer pipeline.SetFeedPanic(at[0], at[1])()
				src, err := capture.Open([]string{path}, capture.Options{MapMin: -1})
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				res, err := pipeline.Run(context.Background(), src, pipeline.Options{Workers: w, Analyze: analyze.Config{Emit: func(*analyze.Record) {}}})
				want := fmt.Sprintf("internal error in worker %d: injected", at[0])
				if err == nil || err.Error() != want {
					t.Fatalf("%d workers, panic in worker %d at chunk %d: error %v, want %q", w, at[0], at[1], err, want)
				}
				if res.Capture.Packets != all.Capture.Packets {
					t.Fatalf("%d workers, panic in worker %d at chunk %d: %d packets read of %d", w, at[0], at[1], res.Capture.Packets, all.Capture.Packets)
				}
			}()
		}
	}
}

// TestChunkedGivesPagesBack: the mapped pages of chunks every worker is
// through with go back as the run goes, in steps of capture.ReleaseStep:
// kept, they are resident set (a goroutine doing it aside, woken onto a
// busy core, once let 30 MB of them wait).
func TestChunkedGivesPagesBack(t *testing.T) {
	pcap, _ := generate(t, gen.Config{Seed: 5, Sessions: 200, Concurrency: 20, BodyMin: 100 << 10, BodyMax: 400 << 10})
	if len(pcap) < 8*capture.ReleaseStep {
		t.Fatalf("capture of %d bytes: too small to see pages go back", len(pcap))
	}
	path := writeTemp(t, pcap)
	const size = 64 << 10
	defer pipeline.SetChunking(size, false)()
	for _, w := range []int{2, 3} {
		var calls int
		var given, lag int64
		restore := pipeline.WatchRelease(func(asked, g int64) {
			calls++
			given = g
			lag = max(lag, asked-g)
		})
		runFile(t, path, true, w)
		restore()
		// The chunks at most nb (4 per worker) before the last claimed may
		// be in use; a release step more waits.
		if limit := int64(len(pcap) - (4*w+2)*size - capture.ReleaseStep); given < limit {
			t.Errorf("%d workers: pages given back before %d at the end, want at least %d (%d calls)", w, given, limit, calls)
		}
		if lag > capture.ReleaseStep {
			t.Errorf("%d workers: a release left %d bytes before its offset", w, lag)
		}
	}
}

// TestChunkedRealCaptures: every real capture of the corpus, mapped and cut
// in small chunks (with right and with mostly wrong guesses of where each
// chunk's first record starts), gives at 1-4 workers the records,
// counters and warnings it gives read as a stream.
func TestChunkedRealCaptures(t *testing.T) {
	files, err := filepath.Glob("../testdata/corpus/*/*.pcap.gz")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus captures: %v", err)
	}
	for _, bad := range []bool{false, true} {
		restore := pipeline.SetChunking(4096, bad)
		for _, f := range files {
			t.Run(fmt.Sprintf("%s,bad=%v", filepath.Base(f), bad), func(t *testing.T) {
				checkMappedSame(t, writeTemp(t, gunzipFile(t, f)))
			})
		}
		restore()
	}
}
