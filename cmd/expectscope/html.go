package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/report"
)

// writeHTMLFile writes the selected output as a self-contained HTML
// report to path (--html); all is every record read, to draw the other
// leg of a hop.
func writeHTMLFile(path string, sel *report.Output, all []*analyze.Record) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return &exitError{exitInput, fmt.Errorf("--html: %w", err)}
	}
	bw := bufio.NewWriter(f)
	err = report.WriteHTML(bw, sel, report.HTMLOptions{All: all})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &exitError{exitInput, fmt.Errorf("--html: %w", err)}
	}
	return nil
}
