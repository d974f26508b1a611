package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/report"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const corpus = "../../testdata/corpus/direct"

// goldenCaptures are the shipped captures rendered in every format.
var goldenCaptures = []string{
	"curl-nginx-417-retry-desync",
	"curl-rawsrv-double-100",
	"go-client-nginx-417",
	"curl-go-slowread-late-100",
	"curl-python-reject-after-100",
}

func capturePath(name string) string { return filepath.Join(corpus, name+".pcap.gz") }

// runCmd runs the command in-process and returns its stdout, stderr and exit code.
func runCmd(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./cmd/expectscope -update rewrites it)\n--- got:\n%s\n--- want:\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	for _, name := range goldenCaptures {
		for _, format := range report.Formats {
			t.Run(name+"."+format, func(t *testing.T) {
				out, stderr, code := runCmd(t, "", "read", "--format", format, capturePath(name))
				if code != exitOK {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				golden(t, name+"."+format, out)
			})
		}
		t.Run(name+".summary", func(t *testing.T) {
			out, stderr, code := runCmd(t, "", "read", "--format", "table", "--summary", capturePath(name))
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			golden(t, name+".summary", out)
		})
		t.Run(name+".ladder", func(t *testing.T) {
			out, stderr, code := runCmd(t, "", "read", "--ladder", capturePath(name))
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			golden(t, name+".ladder", out)
		})
	}
}

// parseNDJSON splits read's ndjson into records and the summary.
func parseNDJSON(t *testing.T, s string) ([]*analyze.Record, map[string]any) {
	t.Helper()
	var recs []*analyze.Record
	var sum map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var head struct{ Type string }
		if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
			t.Fatalf("%v in %q", err, sc.Text())
		}
		switch head.Type {
		case "summary":
			if err := json.Unmarshal(sc.Bytes(), &sum); err != nil {
				t.Fatal(err)
			}
		case "negotiation", "exchange":
			r := new(analyze.Record)
			if err := json.Unmarshal(sc.Bytes(), r); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
	}
	if sum == nil {
		t.Fatal("no summary line")
	}
	return recs, sum
}

// pct is an independent nearest-rank percentile: sort, take rank ceil(p N).
func pct(vals []float64, p float64) any {
	if len(vals) == 0 {
		return nil
	}
	v := slices.Clone(vals)
	slices.Sort(v)
	k := int(math.Ceil(p / 100 * float64(len(v))))
	return v[max(k, 1)-1]
}

func TestSummaryRecomputedFromRecords(t *testing.T) {
	var paths []string
	for _, name := range goldenCaptures {
		paths = append(paths, capturePath(name))
	}
	out, stderr, code := runCmd(t, "", append([]string{"read", "--format", "ndjson"}, paths...)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	recs, sum := parseNDJSON(t, out)
	var w100, cw []float64
	lost, wasted := 0.0, 0.0
	verdicts := map[string]float64{}
	for _, r := range recs {
		if r.Wait100Ms != nil {
			w100 = append(w100, *r.Wait100Ms)
		}
		if r.ClientWaitMs != nil {
			cw = append(cw, *r.ClientWaitMs)
		}
		if r.LostMs != nil {
			lost += *r.LostMs
		}
		if r.Final != nil && r.Final.Status >= 400 && r.BodyStartAt != nil {
			wasted += float64(r.BodyBytes)
		}
		verdicts[string(r.Verdict)]++
	}
	if got := sum["negotiations"].(float64); int(got) != len(recs) {
		t.Errorf("negotiations %v, records %d", got, len(recs))
	}
	if got := sum["lost_ms"].(float64); math.Abs(got-lost) > 1e-6 {
		t.Errorf("lost_ms %v, recomputed %v", got, lost)
	}
	if got := sum["wasted_bytes"].(float64); got != wasted {
		t.Errorf("wasted_bytes %v, recomputed %v", got, wasted)
	}
	for v, n := range verdicts {
		if got := sum["verdicts"].(map[string]any)[v]; got != n {
			t.Errorf("verdict %s: %v, recomputed %v", v, got, n)
		}
	}
	for _, c := range []struct {
		key  string
		vals []float64
	}{{"wait_100_ms", w100}, {"client_wait_ms", cw}} {
		p := sum[c.key].(map[string]any)
		for _, q := range []struct {
			name string
			p    float64
		}{{"p50", 50}, {"p90", 90}, {"p99", 99}} {
			if got, want := p[q.name], pct(c.vals, q.p); got != want {
				t.Errorf("%s %s = %v, recomputed %v", c.key, q.name, got, want)
			}
		}
	}
	// Per-client groups: the same sums per User-Agent family.
	perClient := map[string][]float64{}
	for _, r := range recs {
		fam := report.ClientFamily(r.Request.UserAgent)
		if r.ClientWaitMs != nil {
			perClient[fam] = append(perClient[fam], *r.ClientWaitMs)
		} else if _, ok := perClient[fam]; !ok {
			perClient[fam] = nil
		}
	}
	clients := sum["clients"].([]any)
	if len(clients) != len(perClient) {
		t.Errorf("%d client groups, recomputed %d", len(clients), len(perClient))
	}
	for _, c := range clients {
		g := c.(map[string]any)
		vals := perClient[g["key"].(string)]
		if got, want := g["client_wait_ms"].(map[string]any)["p90"], pct(vals, 90); got != want {
			t.Errorf("client %s p90 %v, recomputed %v", g["key"], got, want)
		}
	}
}

// stripInput drops what only read knows (input counters, warnings) from a summary.
func stripInput(sum map[string]any) map[string]any {
	delete(sum, "input")
	delete(sum, "warnings")
	return sum
}

func TestReportMergesRuns(t *testing.T) {
	dir := t.TempDir()
	a, b := capturePath("go-client-nginx-417"), capturePath("curl-go-slowread-late-100")
	var files []string
	for i, p := range []string{a, b} {
		out, stderr, code := runCmd(t, "", "read", "-f", "ndjson", p)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		f := filepath.Join(dir, string(rune('a'+i))+".ndjson")
		if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	both, _, code := runCmd(t, "", "read", "-f", "ndjson", a, b)
	if code != exitOK {
		t.Fatal(code)
	}
	merged, stderr, code := runCmd(t, "", append([]string{"report", "-f", "ndjson"}, files...)...)
	if code != exitOK {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	r1, s1 := parseNDJSON(t, both)
	r2, s2 := parseNDJSON(t, merged)
	j1, _ := json.Marshal(stripInput(s1))
	j2, _ := json.Marshal(stripInput(s2))
	if string(j1) != string(j2) {
		t.Errorf("summaries differ:\nread:   %s\nreport: %s", j1, j2)
	}
	if len(r1) != len(r2) {
		t.Errorf("read %d records, report %d", len(r1), len(r2))
	}
	// The summary renders the same in every text format (but for the
	// input counters, which only read has). Record ids differ: each run
	// numbers its own, and report renames the second run's clashing ids.
	for _, args := range [][]string{{"-f", "table"}, {"-f", "markdown"}, {"-f", "csv"}} {
		args = append(args, "--summary")
		x, _, _ := runCmd(t, "", append(append([]string{"report"}, args...), files...)...)
		y, _, _ := runCmd(t, "", append(append([]string{"read"}, args...), a, b)...)
		if cut(y) != cut(x) {
			t.Errorf("%v: report and read differ:\n%s\n---\n%s", args, x, y)
		}
	}
	x, _, _ := runCmd(t, "", append([]string{"report", "-f", "csv"}, files...)...)
	if !strings.Contains(x, "\n2/1-1,") {
		t.Errorf("the second run's clashing id was not renamed:\n%s", x)
	}
}

// cut drops the input counters block of a table or markdown summary.
func cut(s string) string {
	if i := strings.Index(s, "\nInput\n"); i >= 0 {
		return s[:i]
	}
	if i := strings.Index(s, "\n### Input\n"); i >= 0 {
		return s[:i]
	}
	if i := strings.Index(s, "\nsection,counter,value\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func TestFiltersAndLadderID(t *testing.T) {
	p := capturePath("go-client-nginx-417")
	out, _, code := runCmd(t, "", "read", "-f", "ndjson", "--flag", "no-retry-after-417", p)
	if code != exitOK {
		t.Fatal(code)
	}
	recs, _ := parseNDJSON(t, out)
	if len(recs) == 0 {
		t.Fatal("--flag selected nothing")
	}
	for _, r := range recs {
		if !r.HasFlag(analyze.FlagNoRetryAfter417) {
			t.Errorf("--flag selected %s without the flag", r.ID)
		}
	}
	id := recs[0].ID
	for _, args := range [][]string{{"--ladder", id, p}, {"--ladder=" + id, p}, {p, "--ladder", id}} {
		out, stderr, code := runCmd(t, "", append([]string{"read"}, args...)...)
		if code != exitOK || !strings.Contains(out, "negotiation "+id+":") || strings.Count(out, "negotiation ") != 1 {
			t.Errorf("%v: exit %d, %s\n%s", args, code, stderr, out)
		}
	}
	if _, _, code := runCmd(t, "", "read", "--ladder=nope", p); code != exitUsage {
		t.Errorf("unknown ladder id: exit %d", code)
	}
	for _, tc := range []struct {
		args []string
		n    int
	}{
		{[]string{"--client", "curl"}, 0},
		{[]string{"--client", "Go-http-client"}, 2},
		{[]string{"--host", "127.0.0.1"}, 2},
		{[]string{"--server", ":18000"}, 2},
		{[]string{"--verdict", "continued"}, 0},
		{[]string{"--since", "+0.0001"}, 1},
		{[]string{"--until", "+0.0001"}, 1},
	} {
		out, stderr, code := runCmd(t, "", append(append([]string{"read", "-f", "ndjson"}, tc.args...), p)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d %s", tc.args, code, stderr)
		}
		recs, sum := parseNDJSON(t, out)
		if len(recs) != tc.n || int(sum["negotiations"].(float64)) != tc.n {
			t.Errorf("%v: %d records, summary %v; want %d", tc.args, len(recs), sum["negotiations"], tc.n)
		}
	}
}

func TestExitCodes(t *testing.T) {
	p := capturePath("go-client-nginx-417")
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"ok", []string{"read", "-f", "ndjson", p}, exitOK},
		{"fail-on flag", []string{"read", "-f", "ndjson", "--fail-on", "body-after-417", p}, exitFindings},
		{"fail-on verdict", []string{"read", "-f", "ndjson", "--fail-on", "rejected", p}, exitFindings},
		{"fail-on no match", []string{"read", "-f", "ndjson", "--fail-on", "late-100", p}, exitOK},
		{"fail-on filtered out", []string{"read", "-f", "ndjson", "--fail-on", "rejected", "--client", "curl", p}, exitOK},
		{"fail-on unknown", []string{"read", "--fail-on", "nonsense", p}, exitUsage},
		{"bad format", []string{"read", "-f", "xml", p}, exitUsage},
		{"bad flag", []string{"read", "--no-such-flag", p}, exitUsage},
		{"bad verdict", []string{"read", "--verdict", "rejectd", p}, exitUsage},
		{"bad since", []string{"read", "--since", "yesterday", p}, exitUsage},
		{"bad progress", []string{"read", "--progress", "sometimes", p}, exitUsage},
		{"missing file", []string{"read", "/nonexistent.pcap"}, exitInput},
		{"stdin write-flagged", []string{"read", "--write-flagged", filepath.Join(t.TempDir(), "x.pcap"), "-"}, exitUsage},
		{"report missing", []string{"report", "/nonexistent.ndjson"}, exitInput},
	}
	for _, tt := range tests {
		if _, stderr, code := runCmd(t, "", tt.args...); code != tt.want {
			t.Errorf("%s: exit %d, want %d (%s)", tt.name, code, tt.want, stderr)
		}
	}
	out, _, _ := runCmd(t, "", "read", "--help")
	for _, want := range []string{"0  success", "1  usage", "2  unreadable", "3  findings"} {
		if !strings.Contains(out, want) {
			t.Errorf("read --help lacks %q", want)
		}
	}
}

func TestWriteFlagged(t *testing.T) {
	// A capture with a flagged negotiation and one with a clean one.
	flagged, clean := capturePath("go-client-nginx-417"), capturePath("curl-nginx-put-continue")
	dst := filepath.Join(t.TempDir(), "flagged.pcap")
	nd, stderr, code := runCmd(t, "", "read", "-f", "ndjson", "--write-flagged", dst, flagged, clean)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	recs, _ := parseNDJSON(t, nd)
	want := map[analyze.Conn]bool{}
	for _, r := range recs {
		if len(r.Flags) > 0 {
			want[r.Conn] = true
		}
	}
	if len(want) == 0 {
		t.Fatal("no flagged connection in the test input")
	}
	// Count the packets of those connections in the inputs.
	wantPackets := 0
	src, err := capture.Open([]string{flagged, clean}, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		seg, err := src.Next()
		if err != nil {
			break
		}
		a, b := seg.Src.String(), seg.Dst.String()
		if want[analyze.Conn{Client: a, Server: b}] || want[analyze.Conn{Client: b, Server: a}] {
			wantPackets++
		}
	}
	src.Close()
	got, err := capture.Open([]string{dst}, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	n := 0
	for {
		seg, err := got.Next()
		if err != nil {
			break
		}
		a, b := seg.Src.String(), seg.Dst.String()
		if !want[analyze.Conn{Client: a, Server: b}] && !want[analyze.Conn{Client: b, Server: a}] {
			t.Errorf("packet %d of %s -> %s is not of a flagged connection", seg.Packet, a, b)
		}
		n++
	}
	if n != wantPackets {
		t.Errorf("wrote %d packets, want %d", n, wantPackets)
	}
	// Reading the written file again finds the same flagged negotiations.
	again, _, code := runCmd(t, "", "read", "-f", "ndjson", "--flag", strings.Join(flagNames(recs), ","), dst)
	if code != exitOK {
		t.Fatal(code)
	}
	r2, _ := parseNDJSON(t, again)
	if len(r2) != countFlagged(recs) {
		t.Errorf("the flagged pcap holds %d flagged negotiations, want %d", len(r2), countFlagged(recs))
	}
	if tshark, err := exec.LookPath("tshark"); err == nil {
		out, err := exec.Command(tshark, "-r", dst, "-T", "fields", "-e", "frame.number").Output()
		if err != nil {
			t.Fatalf("tshark cannot read the pcap: %v", err)
		}
		if lines := strings.Count(string(out), "\n"); lines != wantPackets {
			t.Errorf("tshark reads %d packets, want %d", lines, wantPackets)
		}
	}
}

func flagNames(recs []*analyze.Record) []string {
	var out []string
	for _, r := range recs {
		for _, f := range r.Flags {
			if !slices.Contains(out, string(f)) {
				out = append(out, string(f))
			}
		}
	}
	return out
}

func countFlagged(recs []*analyze.Record) int {
	n := 0
	for _, r := range recs {
		if len(r.Flags) > 0 {
			n++
		}
	}
	return n
}

func TestProgressAlwaysOnNonTerminal(t *testing.T) {
	out, stderr, code := runCmd(t, "", "read", "-f", "ndjson", "--progress", "always", capturePath("go-client-nginx-417"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "packets") {
		t.Errorf("no progress on stderr: %q", stderr)
	}
	if strings.Contains(out, "packets,") {
		t.Errorf("progress leaked to stdout")
	}
	_, stderr, _ = runCmd(t, "", "read", "-f", "ndjson", capturePath("go-client-nginx-417"))
	if strings.Contains(stderr, "reading") {
		t.Errorf("auto progress on a non-terminal: %q", stderr)
	}
}
