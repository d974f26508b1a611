package main

import (
	"errors"
	"fmt"
	"io"
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
	return createHTML(path, func(w io.Writer) error {
		return report.WriteHTML(w, sel, report.HTMLOptions{All: all})
	})
}

// createHTML creates the file at path (--html) and has write fill it
// (report's writers buffer their own output). An error write returns as
// an *exitError is passed on as it is; any other is the file's.
func createHTML(path string, write func(w io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return &exitError{exitInput, fmt.Errorf("--html: %w", err)}
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var ee *exitError
	if err != nil && !errors.As(err, &ee) {
		err = &exitError{exitInput, fmt.Errorf("--html: %w", err)}
	}
	return err
}

// writeHTMLSpill writes the HTML report (--html) of the records of sp that
// selected picks, with the selected hops, reading the spill in as many
// passes as report.HTMLBuilder asks for: a capture's records are never
// all in memory. c is their summary but for what the builder tallies.
func writeHTMLSpill(path string, sp *spill, patched map[string]*analyze.Record, hops []*analyze.Hop, selected func(*analyze.Record) bool, start time.Time, c func(*report.Counts)) error {
	if path == "" {
		return nil
	}
	return createHTML(path, func(w io.Writer) error {
		b := report.NewHTMLBuilder(report.HTMLOptions{}, hops, func(id string) *analyze.Record { return patched[id] }, start)
		for b.NextPass() {
			if err := sp.eachAhead(patched, func(r *analyze.Record) error {
				if selected(r) {
					b.Add(r)
				}
				return nil
			}); err != nil {
				return &exitError{exitInput, fmt.Errorf("reading back spilled records: %w", err)}
			}
		}
		counts := b.Counts()
		c(counts)
		return b.Write(w, counts)
	})
}
