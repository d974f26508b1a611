package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"math"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/report"
)

// corpusRecords reads every capture of the shipped corpus, correlated and
// in report order, as read does.
func corpusRecords(t *testing.T) []*analyze.Record {
	t.Helper()
	return corpusRecordsOf(t, true)
}

// corpusRecordsRaw is every record of the corpus as emitted, capture
// after capture, not correlated nor sorted.
func corpusRecordsRaw(t *testing.T) []*analyze.Record {
	t.Helper()
	return corpusRecordsOf(t, false)
}

func corpusRecordsOf(t *testing.T, correlate bool) []*analyze.Record {
	t.Helper()
	files, _ := filepath.Glob("../../testdata/corpus/*/*.pcap*")
	if len(files) < 10 {
		t.Fatalf("only %d corpus captures", len(files))
	}
	var all []*analyze.Record
	for _, f := range files {
		src, err := capture.Open([]string{f}, capture.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var recs []*analyze.Record
		_, err = pipeline.Run(context.Background(), src, pipeline.Options{Analyze: analyze.Config{All: true,
			Emit: func(r *analyze.Record) { recs = append(recs, r) }}})
		src.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if correlate {
			analyze.Correlate(recs)
			report.Sort(recs)
		}
		all = append(all, recs...)
	}
	return all
}

// refTally is the summary computed the obvious way, every wait kept per
// group: the reference the streaming Tallier must match.
func refTally(recs []*analyze.Record) *report.Counts {
	pct := func(v []float64) report.Percentiles {
		slices.Sort(v)
		p := report.Percentiles{N: len(v)}
		at := func(q float64) *float64 {
			if x, ok := report.NearestRank(v, q); ok {
				return &x
			}
			return nil
		}
		p.P50, p.P90, p.P99 = at(50), at(90), at(99)
		return p
	}
	type grp struct {
		g    *report.Group
		w, c []float64
	}
	c := &report.Counts{Type: "summary", Verdicts: map[string]int{}, Flags: map[string]int{},
		Servers: []*report.Group{}, Clients: []*report.Group{}, Timeouts: []*report.TimerFired{}}
	all := &grp{g: &report.Group{Verdicts: map[string]int{}}}
	servers, clients := map[string]*grp{}, map[string]*grp{}
	type tk struct {
		fam   string
		timer int
	}
	timers := map[tk]*report.TimerFired{}
	twaits := map[tk][]float64{}
	add := func(g *grp, r *analyze.Record) {
		g.g.Negotiations++
		g.g.Verdicts[string(r.Verdict)]++
		if r.Wait100Ms != nil {
			g.w = append(g.w, *r.Wait100Ms)
		}
		if r.ClientWaitMs != nil {
			g.c = append(g.c, *r.ClientWaitMs)
		}
		if r.LostMs != nil {
			g.g.LostMs += *r.LostMs
		}
		if r.Final != nil && r.Final.Status >= 400 && r.BodyStartAt != nil {
			g.g.WastedBytes += r.BodyBytes
		}
	}
	finish := func(g *grp) *report.Group {
		g.g.Wait100, g.g.ClientWait = pct(g.w), pct(g.c)
		g.g.LostMs = math.Round(g.g.LostMs*1000) / 1000
		return g.g
	}
	for _, r := range recs {
		for _, f := range r.Flags {
			c.Flags[string(f)]++
		}
		if r.Type != analyze.TypeNegotiation {
			c.Exchanges++
			continue
		}
		c.Negotiations++
		add(all, r)
		sk := r.Conn.Server
		if r.Request.Host != "" {
			sk += " " + r.Request.Host
		}
		if servers[sk] == nil {
			servers[sk] = &grp{g: &report.Group{Key: sk, Endpoint: r.Conn.Server, Host: r.Request.Host, Verdicts: map[string]int{}}}
		}
		add(servers[sk], r)
		fam := report.ClientFamily(r.Request.UserAgent)
		if clients[fam] == nil {
			clients[fam] = &grp{g: &report.Group{Key: fam, Verdicts: map[string]int{}}}
		}
		add(clients[fam], r)
		if r.Verdict == analyze.TimedOut {
			timer := 0
			if r.TimeoutGuess != nil {
				timer = *r.TimeoutGuess
			}
			k := tk{fam, timer}
			tf := timers[k]
			if tf == nil {
				tf = &report.TimerFired{Client: fam, TimerMs: timer, UserAgents: []string{}}
				timers[k] = tf
			}
			tf.Count++
			if r.ClientWaitMs != nil {
				twaits[k] = append(twaits[k], *r.ClientWaitMs)
			}
			if !slices.Contains(tf.UserAgents, r.Request.UserAgent) {
				tf.UserAgents = append(tf.UserAgents, r.Request.UserAgent)
			}
		}
	}
	g := finish(all)
	c.Wait100, c.ClientWait, c.LostMs, c.WastedBytes, c.Verdicts = g.Wait100, g.ClientWait, g.LostMs, g.WastedBytes, g.Verdicts
	for _, s := range servers {
		c.Servers = append(c.Servers, finish(s))
	}
	slices.SortFunc(c.Servers, func(a, b *report.Group) int {
		if d := cmp.Compare(b.Negotiations, a.Negotiations); d != 0 {
			return d
		}
		return strings.Compare(a.Key, b.Key)
	})
	for _, fam := range report.Families {
		if g := clients[fam]; g != nil {
			c.Clients = append(c.Clients, finish(g))
		}
	}
	for k, tf := range timers {
		slices.Sort(tf.UserAgents)
		if w := twaits[k]; len(w) > 0 {
			tf.MedianWait = pct(w).P50
		}
		c.Timeouts = append(c.Timeouts, tf)
	}
	slices.SortFunc(c.Timeouts, func(a, b *report.TimerFired) int {
		if d := cmp.Compare(b.Count, a.Count); d != 0 {
			return d
		}
		if d := strings.Compare(a.Client, b.Client); d != 0 {
			return d
		}
		return cmp.Compare(a.TimerMs, b.TimerMs)
	})
	return c
}

// TestTallierMatchesReference: the streaming Tallier gives the summary of
// the shipped corpus exactly as keeping every wait per group does, for
// the whole corpus and for each capture's share of it.
func TestTallierMatchesReference(t *testing.T) {
	recs := corpusRecords(t)
	check := func(name string, recs []*analyze.Record) {
		tl := report.NewTallier()
		for _, r := range recs {
			tl.Add(r)
		}
		got, _ := json.Marshal(tl.Counts())
		want, _ := json.Marshal(refTally(recs))
		if string(got) != string(want) {
			t.Errorf("%s: Tallier\n%s\nwant\n%s", name, got, want)
		}
		if tally, _ := json.Marshal(report.Tally(recs)); string(tally) != string(want) {
			t.Errorf("%s: Tally differs from the reference", name)
		}
	}
	check("corpus", recs)
	check("first half", recs[:len(recs)/2])
	check("none", nil)
}

// TestMemoryLimitFlag: --memory-limit sets the runtime's soft limit; 0
// removes it; a bad size is a usage error.
func TestMemoryLimitFlag(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	for _, c := range []struct {
		arg  string
		want int64
	}{{"120MiB", 120 << 20}, {"1.5GiB", 3 << 29}, {"500MB", 500e6}, {"1048576", 1 << 20}, {"0", math.MaxInt64}} {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--memory-limit", c.arg, "read", "-f", "ndjson", "--summary", "../../testdata/corpus/direct/curl-apache-cgi-post-continue.pcap.gz"}, nil, &out, &errb)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", c.arg, code, errb.String())
		}
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("--memory-limit %s: limit %d, want %d", c.arg, got, c.want)
		}
	}
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"--memory-limit", "lots", "read", "x.pcap"}, nil, io.Discard, &errb); code != exitUsage {
		t.Errorf("--memory-limit lots: exit %d, want %d", code, exitUsage)
	}
}
