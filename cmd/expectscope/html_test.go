package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadHTML(t *testing.T) {
	out := filepath.Join(t.TempDir(), "r.html")
	_, stderr, code := runCmd(t, "", "read", "--summary", "--html", out, capturePath("curl-nginx-417-retry-desync"), capturePath("curl-go-slowread-late-100"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{`data-verdict="rejected">1<`, `data-verdict="timed-out">1<`, `id="l-`, `class="m v-rejected"`} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, _, code := runCmd(t, "", "read", "--html", filepath.Join(t.TempDir(), "no", "such", "dir.html"), capturePath("curl-nginx-417-retry-desync")); code != exitInput {
		t.Errorf("unwritable --html: exit %d, want %d", code, exitInput)
	}
}
