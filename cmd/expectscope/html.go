package main

import (
	"bufio"
	"fmt"
	"os"
	"time"

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

// writeHTMLSpill writes the HTML report (--html) of the records of sp that
// selected picks, with the selected hops, reading the spill in as many
// passes as report.HTMLBuilder asks for: a capture's records are never
// all in memory. c is their summary but for what the builder tallies.
func writeHTMLSpill(path string, sp *spill, patched map[string]*analyze.Record, hops []*analyze.Hop, selected func(*analyze.Record) bool, start time.Time, c func(*report.Counts)) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return &exitError{exitInput, fmt.Errorf("--html: %w", err)}
	}
	b := report.NewHTMLBuilder(report.HTMLOptions{}, hops, func(id string) *analyze.Record { return patched[id] }, start)
	for err == nil && b.NextPass() {
		err = sp.eachAhead(patched, func(r *analyze.Record) error {
			if selected(r) {
				b.Add(r)
			}
			return nil
		})
		if err != nil {
			err = &exitError{exitInput, fmt.Errorf("reading back spilled records: %w", err)}
		}
	}
	if err == nil {
		counts := b.Counts()
		c(counts)
		bw := bufio.NewWriter(f)
		if err = b.Write(bw, counts); err == nil {
			err = bw.Flush()
		}
		if err != nil {
			err = &exitError{exitInput, fmt.Errorf("--html: %w", err)}
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &exitError{exitInput, fmt.Errorf("--html: %w", cerr)}
	}
	return err
}
