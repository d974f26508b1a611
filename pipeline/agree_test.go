package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/cmd/capgen/gen"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/reassembly"
)

// FuzzWorkersAgree: on generated captures of any scenario mix, size,
// concurrency and impairment (loss, reordering, retransmission), with
// few 417s remembered (so that some are given up on), 2 and 3 workers
// give the records and counts one worker gives, read as a stream
// (epochs) and mapped (batches), also when records are moved up to 20
// places later in the file (capture time going backwards, as multi-queue
// NICs write it), and when connections idle past the idle timeout. What one worker gives is the reference: it is the
// Analyzer alone, with no merger.
func FuzzWorkersAgree(f *testing.F) {
	f.Add(uint64(1), uint16(60), uint16(20), uint32(0xffffffff), uint8(0), uint8(0), uint8(0), uint8(16), uint8(0))
	f.Add(uint64(2), uint16(250), uint16(90), uint32(0b1111110), uint8(8), uint8(20), uint8(20), uint8(2), uint8(0))
	f.Add(uint64(3), uint16(120), uint16(5), uint32(0b10001000110), uint8(0), uint8(40), uint8(0), uint8(1), uint8(8))
	f.Add(uint64(4), uint16(280), uint16(99), uint32(0xffffffff), uint8(0), uint8(0), uint8(0), uint8(16), uint8(0x40))
	f.Add(uint64(5), uint16(200), uint16(60), uint32(0xffffffff), uint8(4), uint8(10), uint8(10), uint8(8), uint8(0x90))
	f.Fuzz(func(t *testing.T, seed uint64, sessions, conc uint16, mix uint32, loss, reorder, retrans, maxAwait, moves uint8) {
		var only []string
		for i, n := range gen.Scenarios() {
			if mix&(1<<i) != 0 {
				only = append(only, n)
			}
		}
		if len(only) == 0 {
			return
		}
		cfg := gen.Config{Seed: seed, Sessions: 1 + int(sessions%300), Concurrency: 1 + int(conc%100),
			BodyMin: 100, BodyMax: 4000, Only: only, Hold: time.Duration(moves>>4&3) * 3 * time.Minute,
			Loss: float64(loss%32) / 256, Reorder: float64(reorder%64) / 256, Retrans: float64(retrans%64) / 256}
		pcap, _ := generate(t, cfg)
		pcap = moveRecords(pcap, seed, float64(moves%16)/256)
		acfg := analyze.Config{All: true, MaxAwait: 1 + int(maxAwait%32)}
		// The top bits of moves pick a connection cap: with a small one
		// connections are evicted (open ones after closed ones), and which
		// must not depend on the number of workers.
		rcfg := reassembly.Config{MaxConns: [4]int{0, 16, 64, 300}[moves>>6]}
		recs, wres := runBytes(t, pcap, pipeline.Options{Workers: 1, Analyze: acfg, Reassembly: rcfg})
		want := ndjsonOf(t, recs)
		for _, w := range []int{2, 3} {
			recs, res := runBytes(t, pcap, pipeline.Options{Workers: w, Analyze: acfg, Reassembly: rcfg})
			if got := ndjsonOf(t, recs); !bytes.Equal(got, want) {
				t.Fatalf("%+v: %d workers, streamed: records differ\n got %s\nwant %s", cfg, w, got, want)
			}
			if res.Analyze != wres.Analyze {
				t.Fatalf("%+v: %d workers, streamed: counts\n%+v\nwant\n%+v", cfg, w, res.Analyze, wres.Analyze)
			}
		}
		path := writeTemp(t, pcap)
		got, res := runFileOpts(t, path, true, pipeline.Options{Workers: 2, Analyze: acfg, Reassembly: rcfg})
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v: 2 workers, mapped: records differ\n got %s\nwant %s", cfg, got, want)
		}
		if res.Analyze != wres.Analyze {
			t.Fatalf("%+v: 2 workers, mapped: counts\n%+v\nwant\n%+v", cfg, res.Analyze, wres.Analyze)
		}
	})
}

// moveRecords swaps records of a little-endian pcap (capgen's) with one
// up to 20 places later, each with probability p, when their times are
// less than a second apart. Time going back by more than the retry
// window (30 s) or the idle timeout (5 min) can change what the clock
// decided before the late packet came (a 417 given up on, a connection
// flushed as idle), and one worker's clock moves with every packet while
// several workers' move at the end of each batch: such captures may
// differ between worker counts, as the README says.
func moveRecords(pcap []byte, seed uint64, p float64) []byte {
	if p == 0 || len(pcap) < 24 {
		return pcap
	}
	nano := binary.LittleEndian.Uint32(pcap) == 0xa1b23c4d
	var recs [][]byte
	for off := 24; off+16 <= len(pcap); {
		n := 16 + int(binary.LittleEndian.Uint32(pcap[off+8:]))
		if off+n > len(pcap) {
			break
		}
		recs = append(recs, pcap[off:off+n])
		off += n
	}
	rnd := rand.New(rand.NewPCG(seed, 99))
	for i := range recs {
		if rnd.Float64() < p {
			j := min(i+1+rnd.IntN(20), len(recs)-1)
			if d := recTime(recs[j], nano) - recTime(recs[i], nano); d < -1e9 || d > 1e9 {
				continue // see below
			}
			recs[i], recs[j] = recs[j], recs[i]
		}
	}
	out := append([]byte(nil), pcap[:24]...)
	for _, r := range recs {
		out = append(out, r...)
	}
	return out
}

// recTime is a pcap record's time in nanoseconds (nano: the file's
// fractions are nanoseconds, else microseconds).
func recTime(rec []byte, nano bool) int64 {
	frac := int64(binary.LittleEndian.Uint32(rec[4:]))
	if !nano {
		frac *= 1000
	}
	return int64(binary.LittleEndian.Uint32(rec))*1e9 + frac
}
