package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

func liveRecord(id, target string, typ string) *analyze.Record {
	return &analyze.Record{Type: typ, ID: id, Verdict: analyze.Rejected,
		Conn:         analyze.Conn{Client: "127.0.0.1:5000", Server: "127.0.0.1:80"},
		Request:      analyze.Request{Method: "PUT", Target: target},
		Final:        &analyze.Final{Status: 417},
		HeadersEndAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Flags:        []analyze.Flag{"retried-without-expect"}}
}

// flushCounter counts Flush calls: the stream flushes after every record.
type flushCounter struct {
	bytes.Buffer
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return nil }

func TestRecordStreamNDJSON(t *testing.T) {
	var w flushCounter
	st := newRecordStream(&w, "ndjson", false)
	defer st.Close()
	st.FailOn = []string{"retried-without-expect"}
	st.Emit(liveRecord("1-1", "/a", analyze.TypeNegotiation))
	if n := strings.Count(w.String(), "\n"); n != 1 || w.flushes != 1 {
		t.Fatalf("after one record: %d lines, %d flushes", n, w.flushes)
	}
	st.Emit(liveRecord("1-2", "/b", analyze.TypeExchange)) // not shown without --all
	st.Match = func(r *analyze.Record) bool { return r.Request.Target != "/skip" }
	st.Emit(liveRecord("2-1", "/skip", analyze.TypeNegotiation))
	if n := strings.Count(w.String(), "\n"); n != 1 {
		t.Fatalf("an exchange or a filtered record was printed:\n%s", w.String())
	}
	if all, shown := st.Counts(); all != 3 || shown != 1 {
		t.Fatalf("all %d, shown %d", all, shown)
	}
	if err := st.Finish(map[string]uint64{"kernel_drops": 3}, nil); err != nil {
		t.Fatal(err)
	}
	if !st.Failed() {
		t.Error("--fail-on retried-without-expect did not match the shown record")
	}
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	var sum struct {
		Type         string            `json:"type"`
		Negotiations int               `json:"negotiations"`
		Input        map[string]uint64 `json:"input"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Type != "summary" || sum.Negotiations != 1 || sum.Input["kernel_drops"] != 3 {
		t.Errorf("summary %+v", sum)
	}
}

func TestRecordStreamTableEscapes(t *testing.T) {
	var w bytes.Buffer
	st := newRecordStream(&w, "table", false)
	defer st.Close()
	st.Emit(liveRecord("1-1", "/evil\x1b[2J\r\n", analyze.TypeNegotiation))
	out := w.String()
	if strings.Contains(out, "\x1b") || strings.Count(out, "\n") != 2 {
		t.Errorf("wire text reached the terminal raw:\n%q", out)
	}
	if !strings.Contains(out, "rejected") || !strings.Contains(out, "417") {
		t.Errorf("line misses the verdict or status: %q", out)
	}
}

func TestLiveUsageErrors(t *testing.T) {
	ddd := filepath.Join(t.TempDir(), "ddd")
	if err := os.WriteFile(ddd, []byte("1\n6 0 0 262144\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"live"}, exitUsage, "-i IFACE is required"},
		{[]string{"live", "-i", "no-such-if0"}, exitInput, "interfaces: "},
		{[]string{"live", "-i", "lo", "--format", "json"}, exitUsage, "cannot stream"},
		{[]string{"live", "-i", "lo", "--fanout", "70000"}, exitUsage, "--fanout"},
		{[]string{"live", "-i", "lo", "--bpf-ddd", "x", "--port", "80"}, exitUsage, "replaces"},
		{[]string{"live", "-i", "any", "--bpf-ddd", ddd}, exitInput, "cannot be used on any"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, strings.NewReader(""), &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}
