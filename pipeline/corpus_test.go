package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
)

// truth is the ground-truth file beside each corpus capture (measured with tshark).
type truth struct {
	Scenario  string `json:"scenario"`
	Exchanges []struct {
		Leg                string  `json:"leg"`
		Client             string  `json:"client"`
		Server             string  `json:"server"`
		Method             string  `json:"method"`
		Target             string  `json:"target"`
		Version            string  `json:"version"`
		Expect             *string `json:"expect"`
		ContentLength      *int64  `json:"content_length"`
		Chunked            bool    `json:"chunked"`
		RequestHeadersEndT float64 `json:"request_headers_end_t"`
		Interim            []struct {
			Status int     `json:"status"`
			T      float64 `json:"t"`
		} `json:"interim"`
		BodyFirstByteT *float64 `json:"body_first_byte_t"`
		BodyBytes      int64    `json:"body_bytes"`
		Final          *struct {
			Status int     `json:"status"`
			T      float64 `json:"t"`
		} `json:"final"`
	} `json:"exchanges"`
}

// readAll runs the whole pipeline over one capture.
func readAll(t *testing.T, path string, all bool) ([]*analyze.Record, *pipeline.Result) {
	t.Helper()
	src, err := capture.Open([]string{path}, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var recs []*analyze.Record
	res, err := pipeline.Run(context.Background(), src, pipeline.Options{
		Analyze: analyze.Config{All: all, Emit: func(r *analyze.Record) { recs = append(recs, r) }},
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, res
}

// pipelineRun runs an open source through the pipeline with --all.
func pipelineRun(src capture.Source, recs *[]*analyze.Record) (*pipeline.Result, error) {
	defer src.Close()
	return pipeline.Run(context.Background(), src, pipeline.Options{
		Analyze: analyze.Config{All: true, Emit: func(r *analyze.Record) { *recs = append(*recs, r) }},
	})
}

// capturePath finds the capture for a ground-truth file in testdata.
func capturePath(t *testing.T, jsonPath string) string {
	base := strings.TrimSuffix(jsonPath, ".json")
	for _, ext := range []string{".pcap.gz", ".pcapng.gz", ".pcap.gz.gz"} {
		if _, err := os.Stat(base + ext); err == nil {
			return base + ext
		}
	}
	m, _ := filepath.Glob(base + ".*gz")
	if len(m) == 0 {
		t.Fatalf("no capture for %s", jsonPath)
	}
	return m[0]
}

// expectedVerdict derives the verdict from measured facts, as the corpus
// README states the rule (not from any verdict written down by hand).
func expectedVerdict(he float64, t100, bf, tf *float64, finalStatus int) analyze.Verdict {
	switch {
	case bf != nil && (t100 == nil || *bf < *t100) && (tf == nil || *bf < *tf):
		if *bf-he <= 0.010 {
			return analyze.NoWait
		}
		return analyze.TimedOut
	case t100 != nil && (tf == nil || *t100 <= *tf):
		return analyze.Continued
	case tf != nil && finalStatus == 417:
		return analyze.Rejected
	case tf != nil:
		return analyze.FinalBeforeBody
	}
	return analyze.Unanswered
}

// checkedFlags are the flags that follow from the facts alone; the test
// requires exactly these, and leaves the others to unit tests.
var checkedFlags = []analyze.Flag{
	analyze.FlagUnknownExpectation, analyze.FlagBodyAfter417, analyze.FlagLate100,
	analyze.FlagDuplicate100, analyze.FlagExpectWithoutBody, analyze.FlagExpectOnHTTP10,
	analyze.Flag1xxToHTTP10, analyze.FlagErrorAfter100, analyze.FlagNoFinal,
}

func TestCorpusGroundTruth(t *testing.T) {
	files, _ := filepath.Glob("../testdata/corpus/*/*.json")
	if len(files) < 30 {
		t.Fatalf("only %d ground-truth files in testdata/corpus", len(files))
	}
	for _, jf := range files {
		name := filepath.Base(filepath.Dir(jf)) + "/" + strings.TrimSuffix(filepath.Base(jf), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(jf)
			if err != nil {
				t.Fatal(err)
			}
			var tr truth
			if err := json.Unmarshal(raw, &tr); err != nil {
				t.Fatal(err)
			}
			proxy := strings.Contains(jf, "/proxy/")
			recs, res := readAll(t, capturePath(t, jf), false)
			rel := func(at time.Time) float64 { return at.Sub(res.First).Seconds() }
			used := map[*analyze.Record]bool{}
			want := 0
			for i, ex := range tr.Exchanges {
				if ex.Expect == nil {
					continue
				}
				want++
				var r *analyze.Record
				for _, c := range recs {
					if !used[c] && c.Conn.Client == ex.Client && c.Conn.Server == ex.Server &&
						c.Request.Method == ex.Method && c.Request.Target == ex.Target &&
						math.Abs(rel(c.HeadersEndAt)-ex.RequestHeadersEndT) < 2e-6 {
						r = c
						break
					}
				}
				if r == nil {
					t.Errorf("exchange %d (%s %s %s at %.6f): no record", i, ex.Client, ex.Method, ex.Target, ex.RequestHeadersEndT)
					continue
				}
				used[r] = true
				where := fmt.Sprintf("exchange %d (%s %s)", i, ex.Method, ex.Target)
				var t100, tf *float64
				n100 := 0
				for _, in := range ex.Interim {
					if in.Status == 100 {
						if t100 == nil {
							v := in.T
							t100 = &v
						}
						n100++
					}
				}
				status := 0
				if ex.Final != nil {
					v := ex.Final.T
					tf, status = &v, ex.Final.Status
				}
				bf := ex.BodyFirstByteT
				v := expectedVerdict(ex.RequestHeadersEndT, t100, bf, tf, status)
				if r.Verdict != v {
					t.Errorf("%s: verdict %s, facts say %s (%s)", where, r.Verdict, v, r.Diagnosis)
				}
				// Times and sizes agree with tshark's measurements.
				if len(r.Interim) != len(ex.Interim) {
					t.Errorf("%s: %d interim responses, facts say %d", where, len(r.Interim), len(ex.Interim))
				} else {
					for k := range r.Interim {
						if r.Interim[k].Status != ex.Interim[k].Status || math.Abs(rel(r.Interim[k].At)-ex.Interim[k].T) > 2e-6 {
							t.Errorf("%s: interim %d = %d at %.6f, facts say %d at %.6f", where, k, r.Interim[k].Status, rel(r.Interim[k].At), ex.Interim[k].Status, ex.Interim[k].T)
						}
					}
				}
				switch {
				case (r.Final == nil) != (ex.Final == nil):
					t.Errorf("%s: final %v, facts say %v", where, r.Final, ex.Final)
				case r.Final != nil && (r.Final.Status != ex.Final.Status || math.Abs(rel(r.Final.At)-ex.Final.T) > 2e-6):
					t.Errorf("%s: final %d at %.6f, facts say %d at %.6f", where, r.Final.Status, rel(r.Final.At), ex.Final.Status, ex.Final.T)
				}
				switch {
				case (r.BodyStartAt == nil) != (bf == nil):
					t.Errorf("%s: body start %v, facts say %v", where, r.BodyStartAt, bf)
				case bf != nil && math.Abs(rel(*r.BodyStartAt)-*bf) > 2e-6:
					t.Errorf("%s: body start %.6f, facts say %.6f", where, rel(*r.BodyStartAt), *bf)
				}
				gotBytes := r.BodyBytes
				if proxy {
					gotBytes = r.BodyDataBytes
				}
				if gotBytes != ex.BodyBytes {
					t.Errorf("%s: %d body bytes, facts say %d", where, gotBytes, ex.BodyBytes)
				}
				// Flags that follow from the facts.
				hasContinue, hasOther := false, false
				for p := range strings.SplitSeq(*ex.Expect, ",") {
					if strings.EqualFold(strings.TrimSpace(p), "100-continue") {
						hasContinue = true
					} else if strings.TrimSpace(p) != "" {
						hasOther = true
					}
				}
				wantFlags := map[analyze.Flag]bool{
					analyze.FlagUnknownExpectation: hasOther,
					analyze.FlagBodyAfter417:       status == 417 && bf != nil && *bf > *tf,
					analyze.FlagLate100:            v == analyze.TimedOut && t100 != nil && *t100 > *bf,
					analyze.FlagDuplicate100:       n100 >= 2,
					analyze.FlagExpectWithoutBody:  hasContinue && !ex.Chunked && (ex.ContentLength == nil || *ex.ContentLength == 0),
					analyze.FlagExpectOnHTTP10:     ex.Version == "HTTP/1.0",
					analyze.Flag1xxToHTTP10:        ex.Version == "HTTP/1.0" && len(ex.Interim) > 0,
					analyze.FlagErrorAfter100:      t100 != nil && bf != nil && status >= 400 && status != 417,
					analyze.FlagNoFinal:            bf != nil && ex.Final == nil,
				}
				for _, f := range checkedFlags {
					if r.HasFlag(f) != wantFlags[f] {
						t.Errorf("%s: flag %s = %v, facts say %v (flags %v)", where, f, r.HasFlag(f), wantFlags[f], r.Flags)
					}
				}
			}
			// No negotiation invented.
			for _, r := range recs {
				if !used[r] && r.Type == analyze.TypeNegotiation {
					t.Errorf("record %s (%s %s %s) has no Expect exchange in the ground truth", r.ID, r.Conn.Client, r.Request.Method, r.Request.Target)
				}
			}
			if want == 0 && len(recs) == 0 {
				return
			}
		})
	}
}

var _ = slices.Sort[[]string]
