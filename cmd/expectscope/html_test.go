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
	// From standard input, which otherwise streams its records: the
	// report is written all the same, with what a file gives.
	fromStdin := filepath.Join(t.TempDir(), "stdin.html")
	stdout, stderr, code := runCmd(t, string(gunzip(t, capturePath("curl-nginx-417-retry-desync"))), "read", "-f", "ndjson", "--html", fromStdin, "-")
	if code != 0 {
		t.Fatalf("--html from stdin: exit %d: %s", code, stderr)
	}
	fromFile := filepath.Join(t.TempDir(), "file.html")
	fileOut, _, _ := runCmd(t, "", "read", "-f", "ndjson", "--html", fromFile, capturePath("curl-nginx-417-retry-desync"))
	got, err := os.ReadFile(fromStdin)
	if err != nil {
		t.Fatalf("--html from stdin wrote no report: %v", err)
	}
	want, err := os.ReadFile(fromFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) || stdout != fileOut {
		t.Errorf("--html from stdin: report or output differs from the file's")
	}
}
