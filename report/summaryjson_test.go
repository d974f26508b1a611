package report

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/expectscope/expectscope/analyze"
)

// marshalCounts is the reference: encoding/json as WriteNDJSON used it.
func marshalCounts(t testing.TB, c *Counts) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// TestAppendCountsJSON: the hand encoder writes what encoding/json writes
// for summaries with every field set at random (nil, empty and full maps
// and slices; strings with control characters and invalid UTF-8; floats
// near the exponent thresholds, and NaN, which both refuse).
func TestAppendCountsJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	refused := 0
	for i := range 20000 {
		var c Counts
		fill(rng, reflect.ValueOf(&c).Elem())
		if rng.IntN(200) == 0 {
			nan := math.NaN()
			if len(c.Servers) > 0 && c.Servers[0] != nil {
				c.Servers[0].Wait100.P90 = &nan
			} else {
				c.LostMs = math.Inf(1)
			}
		}
		want, werr := marshalCounts(t, &c)
		got, gerr := AppendCountsJSON(nil, &c)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("summary %d: error %v, encoding/json %v", i, gerr, werr)
		}
		if werr != nil {
			refused++
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("summary %d differs:\n got %s\nwant %s", i, got, want)
		}
	}
	if refused == 0 {
		t.Fatal("no summary was refused: the refusals went untested")
	}
}

// TestAppendCountsJSONOfTally: a summary as the tally makes it.
func TestAppendCountsJSONOfTally(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	tl := NewTallier()
	verdicts := []analyze.Verdict{analyze.Continued, analyze.Rejected, analyze.FinalBeforeBody, analyze.TimedOut, analyze.NoWait}
	for range 300 {
		var r analyze.Record
		fill(rng, reflect.ValueOf(&r).Elem())
		r.Type = analyze.TypeNegotiation
		r.Verdict = verdicts[rng.IntN(len(verdicts))]
		for _, f := range []**float64{&r.Wait100Ms, &r.ClientWaitMs, &r.LostMs} {
			if *f != nil {
				v := math.Round(rng.Float64()*2e6) / 1e3 // waits as the analyser rounds them
				*f = &v
			}
		}
		tl.Add(&r)
	}
	c := tl.Counts()
	c.Input = map[string]uint64{"packets": 10, "gaps": 0}
	c.Warnings = []string{"x.pcap: packet 3 at offset 80: record data: unexpected EOF"}
	want, err := marshalCounts(t, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendCountsJSON(nil, c)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("err %v\n got %s\nwant %s", err, got, want)
	}
	for _, part := range []string{`"servers":[{`, `"clients":[{`, `"timeouts":[{`} {
		if !bytes.Contains(got, []byte(part)) {
			t.Errorf("the tally's summary has no %s: %s", part, got)
		}
	}
}
