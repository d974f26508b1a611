package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/report"
)

// flaggedConns returns the connections (client, server) of the selected
// negotiations that carry a flag, and of the other legs of their hops.
func flaggedConns(sel *report.Output) map[analyze.Conn]bool {
	conns := map[analyze.Conn]bool{}
	ids := map[string]bool{}
	for _, r := range sel.Records {
		if r.Type == analyze.TypeNegotiation && len(r.Flags) > 0 {
			conns[r.Conn] = true
			ids[r.ID] = true
		}
	}
	for _, h := range sel.Hops {
		if ids[h.Downstream.ID] || ids[h.Upstream.ID] {
			conns[analyze.Conn{Client: h.Downstream.Client, Server: h.Downstream.Server}] = true
			conns[analyze.Conn{Client: h.Upstream.Client, Server: h.Upstream.Server}] = true
		}
	}
	return conns
}

// writeFlagged reads the capture files a second time and copies every
// packet of the connections in conns (flaggedConns), either direction, to a new pcap file at
// path. A pcap file holds one link type: the first packet copied sets it,
// and a packet of another link type is an error. It returns the number
// of packets written.
func writeFlagged(path string, files []string, conns map[analyze.Conn]bool) (n int, err error) {
	if out, err := os.Stat(path); err == nil {
		for _, in := range files {
			if st, err := os.Stat(in); err == nil && os.SameFile(st, out) {
				return 0, fmt.Errorf("%s is an input file", path)
			}
		}
	}
	src, err := capture.Open(files, capture.Options{})
	if err != nil {
		return 0, err
	}
	defer src.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriter(f)
	var pw *capture.PcapWriter
	for {
		seg, e := src.Next()
		if e == io.EOF {
			break
		}
		if e != nil {
			var w *capture.Warning
			if errors.As(e, &w) {
				continue // reported by the first pass
			}
			return n, e
		}
		src, dst := seg.Src.String(), seg.Dst.String()
		if !conns[analyze.Conn{Client: src, Server: dst}] && !conns[analyze.Conn{Client: dst, Server: src}] {
			continue
		}
		if pw == nil {
			if pw, err = capture.NewPcapWriter(bw, seg.LinkType, 0); err != nil {
				return n, err
			}
		}
		if err := pw.WriteSegment(seg); err != nil {
			return n, err
		}
		n++
	}
	if pw == nil {
		// No flagged connection: still a valid, empty capture.
		if _, err := capture.NewPcapWriter(bw, capture.LinkEthernet, 0); err != nil {
			return 0, err
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("writing %s: %w", path, err)
	}
	return n, nil
}
