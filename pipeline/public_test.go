package pipeline_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/report"
)

var update = flag.Bool("update", false, "rewrite golden files")

// publicFacts is the richer shape of testdata/public/**/*.json: per stream,
// then exchanges, measured byte by byte from tshark's per-frame payloads.
type publicFacts struct {
	Facts struct {
		Streams map[string]struct {
			Client    string `json:"client"`
			Server    string `json:"server"`
			Exchanges []struct {
				Request struct {
					Method  string  `json:"method"`
					Target  string  `json:"target"`
					Version string  `json:"version"`
					Expect  *string `json:"expect"`
				} `json:"request"`
				HeadersEndAt    time.Time  `json:"headers_end_at"`
				BodyBytesOnWire int64      `json:"body_bytes_on_wire"`
				BodyFirstByteAt *time.Time `json:"body_first_byte_at"`
				Interim         []struct {
					Status int       `json:"status"`
					At     time.Time `json:"at"`
				} `json:"interim"`
				Final *struct {
					Status int       `json:"status"`
					At     time.Time `json:"at"`
				} `json:"final"`
			} `json:"exchanges"`
		} `json:"streams"`
	} `json:"facts"`
}

func secs(t *time.Time) *float64 {
	if t == nil {
		return nil
	}
	v := float64(t.UnixNano()) / 1e9
	return &v
}

// TestPublicCaptures checks the captures of other projects' test suites
// against their measured facts: every request with Expect is found with
// the verdict the facts imply, its interim and final responses at the
// measured times; every 100 to a request without Expect is reported as
// unsolicited (with --all).
func TestPublicCaptures(t *testing.T) {
	files, _ := filepath.Glob("../testdata/public/*/*.json")
	more, _ := filepath.Glob("../testdata/public/*/*/*.json")
	files = append(files, more...)
	if len(files) < 10 {
		t.Fatalf("only %d public captures in testdata", len(files))
	}
	for _, jf := range files {
		name := strings.TrimPrefix(strings.TrimSuffix(jf, ".pcap.json"), "../testdata/public/")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(jf)
			if err != nil {
				t.Fatal(err)
			}
			var pf publicFacts
			if err := json.Unmarshal(raw, &pf); err != nil {
				t.Fatal(err)
			}
			recs, _ := readAll(t, strings.TrimSuffix(jf, ".json")+".gz", true)
			near := func(a, b time.Time) bool { return math.Abs(a.Sub(b).Seconds()) < 2e-6 }
			for sk, st := range pf.Facts.Streams {
				for i, ex := range st.Exchanges {
					var r *analyze.Record
					for _, c := range recs {
						if unbracket(c.Conn.Client) == st.Client && c.Request.Method == ex.Request.Method &&
							c.Request.Target == ex.Request.Target && near(c.HeadersEndAt, ex.HeadersEndAt) {
							r = c
						}
					}
					where := fmt.Sprintf("stream %s exchange %d (%s %s)", sk, i, ex.Request.Method, ex.Request.Target)
					if r == nil {
						t.Errorf("%s: no record", where)
						continue
					}
					var t100, tf *float64
					n100 := 0
					for _, in := range ex.Interim {
						if in.Status == 100 {
							if t100 == nil {
								t100 = secs(&in.At)
							}
							n100++
						}
					}
					status := 0
					if ex.Final != nil {
						tf, status = secs(&ex.Final.At), ex.Final.Status
					}
					he := float64(ex.HeadersEndAt.UnixNano()) / 1e9
					if ex.Request.Expect != nil {
						if r.Type != analyze.TypeNegotiation {
							t.Errorf("%s: type %s, want negotiation", where, r.Type)
						}
						v := expectedVerdict(he, t100, secs(ex.BodyFirstByteAt), tf, status)
						if r.Verdict != v {
							t.Errorf("%s: verdict %s, facts say %s", where, r.Verdict, v)
						}
						if r.HasFlag(analyze.FlagDuplicate100) != (n100 > 1) {
							t.Errorf("%s: duplicate-100 = %v with %d 100s", where, r.HasFlag(analyze.FlagDuplicate100), n100)
						}
					} else if n100 > 0 && !r.HasFlag(analyze.FlagUnsolicited100) {
						t.Errorf("%s: a 100 to a request without Expect is not flagged unsolicited-100", where)
					}
					if len(r.Interim) != len(ex.Interim) {
						t.Errorf("%s: %d interim, facts say %d", where, len(r.Interim), len(ex.Interim))
					} else {
						for k := range r.Interim {
							if r.Interim[k].Status != ex.Interim[k].Status || !near(r.Interim[k].At, ex.Interim[k].At) {
								t.Errorf("%s: interim %d differs: %d at %v, facts %d at %v", where, k, r.Interim[k].Status, r.Interim[k].At, ex.Interim[k].Status, ex.Interim[k].At)
							}
						}
					}
					if (r.Final == nil) != (ex.Final == nil) || r.Final != nil && (r.Final.Status != ex.Final.Status || !near(r.Final.At, ex.Final.At)) {
						t.Errorf("%s: final %+v, facts say %+v", where, r.Final, ex.Final)
					}
					if (r.BodyStartAt == nil) != (ex.BodyFirstByteAt == nil) || r.BodyStartAt != nil && !near(*r.BodyStartAt, *ex.BodyFirstByteAt) {
						t.Errorf("%s: body start %v, facts say %v", where, r.BodyStartAt, ex.BodyFirstByteAt)
					}
					if r.BodyBytes != ex.BodyBytesOnWire {
						t.Errorf("%s: %d body bytes, facts say %d", where, r.BodyBytes, ex.BodyBytesOnWire)
					}
				}
			}
			// Golden ndjson: the whole output, reviewed against the facts above.
			var buf bytes.Buffer
			report.Sort(recs)
			if err := report.WriteNDJSON(&buf, &report.Output{Records: recs}); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", strings.ReplaceAll(name, "/", "__")+".ndjson")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pipeline -run TestPublicCaptures -update)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("output differs from %s (review, then -update)", golden)
			}
		})
	}
}

// unbracket turns "[::1]:80" into "::1:80", the facts' way of writing IPv6.
func unbracket(s string) string { return strings.NewReplacer("[", "", "]", "").Replace(s) }
