package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestMaxConnsFlag: --max-conns bounds the connections tracked at once;
// a proxy capture (both legs open together) evicts beyond one, and says so.
func TestMaxConnsFlag(t *testing.T) {
	const capture = "../../testdata/corpus/proxy/haproxy_go_origin.pcap.gz"
	evicted := func(args ...string) uint64 {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"read", "-f", "json"}, append(args, capture)...), nil, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		defer func() {
			// Evictions lose exchanges: the run must say so, and how to avoid it.
			warned := strings.Contains(errb.String(), "open connection(s) evicted") && strings.Contains(errb.String(), "raise --max-conns")
			if warned != (len(args) > 0) {
				t.Errorf("%v: stderr %q", args, errb.String())
			}
		}()
		var doc struct {
			Summary struct {
				Input map[string]uint64 `json:"input"`
			} `json:"summary"`
		}
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Summary.Input["evicted_conns"]
	}
	if n := evicted(); n != 0 {
		t.Errorf("default limits evicted %d connections", n)
	}
	if n := evicted("--max-conns", "1"); n == 0 {
		t.Errorf("--max-conns 1 evicted nothing on a capture with concurrent connections")
	}
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"read", "--max-buffered-bytes", "-5", capture}, nil, &bytes.Buffer{}, &errb); code != exitUsage {
		t.Errorf("negative --max-buffered-bytes: exit %d, want %d", code, exitUsage)
	}
}
