package pipeline_test

import (
	"bytes"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/cmd/capgen/gen"
	"github.com/expectscope/expectscope/pipeline"
)

// FuzzWorkersAgree: on generated captures of any scenario mix, size,
// concurrency and impairment (loss, reordering, retransmission), with
// few 417s remembered (so that some are given up on), 2 and 3 workers
// give the records and counts one worker gives, read as a stream
// (epochs) and mapped (batches). What one worker gives is the reference:
// it is the Analyzer alone, with no merger.
func FuzzWorkersAgree(f *testing.F) {
	f.Add(uint64(1), uint16(60), uint16(20), uint32(0xffffffff), uint8(0), uint8(0), uint8(0), uint8(16))
	f.Add(uint64(2), uint16(250), uint16(90), uint32(0b1111110), uint8(8), uint8(20), uint8(20), uint8(2))
	f.Add(uint64(3), uint16(120), uint16(5), uint32(0b10001000110), uint8(0), uint8(40), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, sessions, conc uint16, mix uint32, loss, reorder, retrans, maxAwait uint8) {
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
			BodyMin: 100, BodyMax: 4000, Only: only,
			Loss: float64(loss%32) / 256, Reorder: float64(reorder%64) / 256, Retrans: float64(retrans%64) / 256}
		pcap, _ := generate(t, cfg)
		acfg := analyze.Config{All: true, MaxAwait: 1 + int(maxAwait%32)}
		recs, wres := runBytes(t, pcap, pipeline.Options{Workers: 1, Analyze: acfg})
		want := ndjsonOf(t, recs)
		for _, w := range []int{2, 3} {
			recs, res := runBytes(t, pcap, pipeline.Options{Workers: w, Analyze: acfg})
			if got := ndjsonOf(t, recs); !bytes.Equal(got, want) {
				t.Fatalf("%+v: %d workers, streamed: records differ\n got %s\nwant %s", cfg, w, got, want)
			}
			if res.Analyze != wres.Analyze {
				t.Fatalf("%+v: %d workers, streamed: counts\n%+v\nwant\n%+v", cfg, w, res.Analyze, wres.Analyze)
			}
		}
		path := writeTemp(t, pcap)
		got, res := runFileWith(t, path, true, 2, acfg)
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v: 2 workers, mapped: records differ\n got %s\nwant %s", cfg, got, want)
		}
		if res.Analyze != wres.Analyze {
			t.Fatalf("%+v: 2 workers, mapped: counts\n%+v\nwant\n%+v", cfg, res.Analyze, wres.Analyze)
		}
	})
}
