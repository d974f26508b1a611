package pipeline_test

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/cmd/capgen/gen"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/reassembly"
	"github.com/expectscope/expectscope/report"
)

// generate returns a synthetic capture and its expectations.
func generate(t testing.TB, cfg gen.Config) ([]byte, []gen.Expectation) {
	t.Helper()
	var buf bytes.Buffer
	exps, _, err := gen.Generate(&buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), exps
}

// runBytes runs the pipeline over an in-memory capture.
func runBytes(t testing.TB, pcap []byte, opt pipeline.Options) ([]*analyze.Record, *pipeline.Result) {
	t.Helper()
	src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(pcap)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var recs []*analyze.Record
	emit := opt.Analyze.Emit
	opt.Analyze.Emit = func(r *analyze.Record) {
		recs = append(recs, r)
		if emit != nil {
			emit(r)
		}
	}
	res, err := pipeline.Run(context.Background(), src, opt)
	if err != nil {
		t.Fatal(err)
	}
	return recs, res
}

type expKey struct {
	client string
	at     time.Time
}

// checkVerdicts requires one record per expectation, with its verdict,
// status and flags, and no negotiation record that was not expected.
func checkVerdicts(t *testing.T, exps []gen.Expectation, recs []*analyze.Record) {
	t.Helper()
	got := map[expKey]*analyze.Record{}
	for _, r := range recs {
		if r.Type != analyze.TypeNegotiation {
			continue
		}
		k := expKey{r.Conn.Client, r.HeadersEndAt.UTC()}
		if got[k] != nil {
			t.Errorf("two records for %s at %s", k.client, k.at.Format(time.RFC3339Nano))
		}
		got[k] = r
	}
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, e := range exps {
		k := expKey{e.Client, e.HeadersEndAt.UTC()}
		r := got[k]
		if r == nil {
			report("%s %s #%d at %s: no record", e.Scenario, e.Client, e.Index, e.HeadersEndAt.Format(time.RFC3339Nano))
			continue
		}
		delete(got, k)
		if string(r.Verdict) != e.Verdict && !(e.Gap && r.Verdict == analyze.Incomplete) {
			report("%s %s (%s): verdict %s, want %s (flags %v)", e.Scenario, e.Client, r.ID, r.Verdict, e.Verdict, r.Flags)
		}
		if r.Final == nil || r.Final.Status != e.Status {
			report("%s %s (%s): final %+v, want status %d", e.Scenario, e.Client, r.ID, r.Final, e.Status)
		}
		if want := e.Client + ""; r.Conn.Client != want || !strings.HasSuffix(r.ID, "-"+itoa(e.Index)) {
			report("%s %s: record id %s, want request index %d", e.Scenario, e.Client, r.ID, e.Index)
		}
		for _, f := range e.Flags {
			if !slices.Contains(r.Flags, analyze.Flag(f)) {
				report("%s %s (%s): flags %v, want %s", e.Scenario, e.Client, r.ID, r.Flags, f)
			}
		}
	}
	for k, r := range got {
		report("unexpected record %s %s at %s verdict %s", r.ID, k.client, k.at.Format(time.RFC3339Nano), r.Verdict)
	}
	t.Logf("%d negotiations checked, %d records", len(exps), len(recs))
	if bad > 20 {
		t.Errorf("... %d mismatches in all", bad)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestGeneratedVerdicts generates 10 000 connections of every scenario,
// interleaved, and requires every verdict to be the one the generator
// scripted, with one worker and with several.
func TestGeneratedVerdicts(t *testing.T) {
	cfg := gen.Config{Seed: 7, Sessions: 10000, Concurrency: 200, BodyMin: 200, BodyMax: 6000}
	pcap, exps := generate(t, cfg)
	if len(exps) < 5000 {
		t.Fatalf("only %d negotiations generated", len(exps))
	}
	for _, w := range []int{1, 2, 3} {
		t.Run("workers="+itoa(w), func(t *testing.T) {
			recs, _ := runBytes(t, pcap, pipeline.Options{Workers: w})
			checkVerdicts(t, exps, recs)
		})
	}
}

// TestTombstonesGiveWay: with more connections closing in a second than
// the connection cap (here 1 024, for 300 open at a time), the closed
// ones are forgotten before an open one is evicted: a client waiting a
// second for 100 Continue keeps its connection and its verdict, with one
// worker and with two. Dropping the least recently active connection,
// open or closed, evicted hundreds of them.
func TestTombstonesGiveWay(t *testing.T) {
	cfg := gen.Config{Seed: 31, Sessions: 6000, Concurrency: 300, BodyMin: 200, BodyMax: 600}
	pcap, exps := generate(t, cfg)
	for _, w := range []int{1, 2} {
		t.Run("workers="+itoa(w), func(t *testing.T) {
			recs, res := runBytes(t, pcap, pipeline.Options{Workers: w, Reassembly: reassembly.Config{MaxConns: 1024}})
			if res.Reassembly.Evicted != 0 {
				t.Errorf("%d open connections evicted", res.Reassembly.Evicted)
			}
			checkVerdicts(t, exps, recs)
		})
	}
}

// TestGeneratedRetryElsewhere generates the scenarios left out of the
// default mix, repeats of a 417 on another connection: from a client's
// pool while the refusing connection is still open, and with Expect again
// after the client closed the refusing connection. Every verdict and flag
// must be the scripted one, every 417 linked to its repeat on the other
// connection, with 1, 2 and 3 workers, the same records from each.
func TestGeneratedRetryElsewhere(t *testing.T) {
	cfg := gen.Config{Seed: 3, Sessions: 1500, Concurrency: 150, BodyMin: 200, BodyMax: 6000, Only: gen.ExtraScenarios()}
	pcap, exps := generate(t, cfg)
	var want []byte
	for _, w := range []int{1, 2, 3} {
		recs, _ := runBytes(t, pcap, pipeline.Options{Workers: w, Analyze: analyze.Config{All: true}})
		checkVerdicts(t, exps, recs)
		got := ndjsonOf(t, recs)
		if want == nil {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Errorf("workers %d: records differ from one worker's", w)
		}
		byID := map[string]*analyze.Record{}
		for _, r := range recs {
			byID[r.ID] = r
		}
		linked := 0
		for _, r := range recs {
			if r.Final == nil || r.Final.Status != 417 {
				continue
			}
			if rep := byID[deref(r.RetriedBy)]; rep == nil || rep.Conn == r.Conn || rep.Request.Target != r.Request.Target || deref(rep.RetryOf) != r.ID {
				t.Errorf("workers %d: %s %s: retried by %q, want a repeat on another connection naming it back", w, r.ID, r.Request.Target, deref(r.RetriedBy))
				continue
			}
			linked++
		}
		if linked < 1000 {
			t.Errorf("workers %d: %d 417s linked", w, linked)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestGeneratedImpaired adds reordering, retransmission and loss.
func TestGeneratedImpaired(t *testing.T) {
	cfg := gen.Config{Seed: 11, Sessions: 2000, Concurrency: 50, BodyMin: 3000, BodyMax: 20000,
		Reorder: 0.05, Retrans: 0.05, Loss: 0.01}
	pcap, exps := generate(t, cfg)
	recs, _ := runBytes(t, pcap, pipeline.Options{Workers: 2})
	checkVerdicts(t, exps, recs)
}

// ndjsonOf renders records as the read command does: sorted, one a line.
func ndjsonOf(t *testing.T, recs []*analyze.Record) []byte {
	t.Helper()
	analyze.LinkRetries(recs) // as a consumer must with several workers
	report.Sort(recs)
	var buf bytes.Buffer
	if err := report.WriteNDJSON(&buf, &report.Output{Records: recs}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestWorkersSameOutput requires byte-identical ndjson from one worker
// and from several, with and without exchanges, on a capture with
// interleaved connections, retries on new connections and impairments.
func TestWorkersSameOutput(t *testing.T) {
	cfg := gen.Config{Seed: 5, Sessions: 3000, Concurrency: 300, BodyMin: 500, BodyMax: 9000, Reorder: 0.02, Retrans: 0.02, Loss: 0.005}
	pcap, _ := generate(t, cfg)
	for _, all := range []bool{false, true} {
		var want []byte
		for _, w := range []int{1, 2, 4} {
			recs, res := runBytes(t, pcap, pipeline.Options{Workers: w, Analyze: analyze.Config{All: all}})
			got := ndjsonOf(t, recs)
			if w == 1 {
				want = got
				continue
			}
			if !bytes.Equal(got, want) {
				gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
				for i := range min(len(gl), len(wl)) {
					if gl[i] != wl[i] {
						t.Fatalf("all=%v workers=%d: line %d differs:\n got %s\nwant %s", all, w, i+1, gl[i], wl[i])
					}
				}
				t.Fatalf("all=%v workers=%d: %d lines, want %d", all, w, len(gl), len(wl))
			}
			if res.Analyze.Negotiations == 0 {
				t.Fatalf("no negotiations counted")
			}
		}
	}
}

// TestWorkersLinkRetriesAtScale: with more requests within the retry
// window than the merger once remembered (16 384), every 417 retried on a
// connection of another worker is still linked, as with one worker.
func TestWorkersLinkRetriesAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000 sessions")
	}
	pcap, _ := generate(t, gen.Config{Seed: 7, Sessions: 20000, BodyMin: 256, BodyMax: 512})
	var want []byte
	for _, w := range []int{1, 2} {
		recs, _ := runBytes(t, pcap, pipeline.Options{Workers: w, Analyze: analyze.Config{All: true}})
		if w == 1 && len(recs) <= 1<<14 {
			t.Fatalf("%d records: not more than the old bound", len(recs))
		}
		got := ndjsonOf(t, recs)
		if w == 1 {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Errorf("workers %d: records differ from one worker's", w)
		}
	}
}

// TestTicks feeds clock ticks between segments: they must change nothing
// in the records, and must not count as packets.
func TestTicks(t *testing.T) {
	pcap, exps := generate(t, gen.Config{Seed: 9, Sessions: 300, Concurrency: 20, BodyMin: 500, BodyMax: 5000})
	for _, w := range []int{1, 2} {
		src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(pcap)})
		if err != nil {
			t.Fatal(err)
		}
		var recs []*analyze.Record
		res, err := pipeline.Run(context.Background(), &tickSource{Source: src}, pipeline.Options{Workers: w,
			Analyze: analyze.Config{Emit: func(r *analyze.Record) { recs = append(recs, r) }}})
		if err != nil {
			t.Fatal(err)
		}
		checkVerdicts(t, exps, recs)
		if res.Capture.Packets != src.Stats().Packets {
			t.Errorf("packets %d", res.Capture.Packets)
		}
	}
}

// tickSource inserts a tick after every segment, 1 ms after it.
type tickSource struct {
	capture.Source
	tick    capture.Segment
	pending bool
}

func (s *tickSource) Next() (*capture.Segment, error) {
	if s.pending {
		s.pending = false
		return &s.tick, nil
	}
	seg, err := s.Source.Next()
	if err == nil {
		s.tick = capture.Segment{Time: seg.Time.Add(time.Millisecond)}
		s.pending = true
	}
	return seg, err
}
