package pipeline_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
)

// TestMappedFileCutUnderUs: a mapped capture truncated after it was opened
// (a rotating writer, a full disk) faults on the missing pages; the run
// must end with an error, not kill the process with SIGBUS.
func TestMappedFileCutUnderUs(t *testing.T) {
	raw := gunzipFile(t, "../testdata/corpus/direct/curl-nginx-post-continue.pcap.gz")
	for _, workers := range []int{1, 2} {
		path := filepath.Join(t.TempDir(), "cut.pcap")
		if err := os.WriteFile(path, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		src, err := capture.Open([]string{path}, capture.Options{MapMin: -1})
		if err != nil {
			t.Fatal(err)
		}
		// Cut the file well inside the body, on a page boundary.
		if err := os.Truncate(path, 64<<10); err != nil {
			t.Fatal(err)
		}
		_, err = pipeline.Run(context.Background(), src, pipeline.Options{
			Workers: workers,
			Analyze: analyze.Config{Emit: func(*analyze.Record) {}},
		})
		src.Close()
		if err == nil || !strings.Contains(err.Error(), "changed while it was read") {
			t.Errorf("%d workers: reading a mapped file cut under us: %v", workers, err)
		}
	}
}
