package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// progressBar shows, on stderr, how far a file read has gone: captured
// bytes (of the files' total when no file is compressed, since a
// compressed file's size says nothing of what it holds), packets and
// negotiations so far.
type progressBar struct {
	p            *mpb.Progress
	bar          *mpb.Bar
	total        int64
	packets, neg atomic.Uint64
}

// startProgress starts a bar when mode asks for one ("always", or "auto"
// with stderr a terminal) and the input is files; it returns nil otherwise.
func startProgress(mode string, stderr io.Writer, files []string) *progressBar {
	switch mode {
	case "never":
		return nil
	case "auto":
		if !isTerminal(stderr) {
			return nil
		}
	}
	total := int64(0)
	for _, f := range files {
		size, ok := plainSize(f)
		if !ok {
			total = 0
			break
		}
		total += size
	}
	pb := &progressBar{total: total}
	opts := []mpb.ContainerOption{mpb.WithOutput(stderr), mpb.WithWidth(64)}
	if !isTerminal(stderr) {
		opts = append(opts, mpb.WithAutoRefresh())
	}
	pb.p = mpb.New(opts...)
	counts := decor.Any(func(decor.Statistics) string {
		return fmt.Sprintf("%d packets, %d negotiations", pb.packets.Load(), pb.neg.Load())
	}, decor.WCSyncSpaceR)
	if total > 0 {
		pb.bar = pb.p.AddBar(total,
			mpb.PrependDecorators(decor.Name("reading "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), counts))
	} else {
		pb.bar = pb.p.AddSpinner(0,
			mpb.PrependDecorators(decor.Name("reading "), decor.CurrentKibiByte("% .1f")),
			mpb.AppendDecorators(counts))
	}
	return pb
}

// plainSize returns the size of an uncompressed capture file; ok is false
// for stdin, a compressed file or one that cannot be opened.
func plainSize(path string) (int64, bool) {
	if path == "-" {
		return 0, false
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0, false
	}
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return 0, false
	}
	if bytes.HasPrefix(magic[:], []byte{0x1f, 0x8b}) || bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return 0, false
	}
	return st.Size(), true
}

// update is the pipeline's Progress callback.
func (pb *progressBar) update(cs capture.Stats, as analyze.Stats) {
	pb.packets.Store(cs.Packets)
	pb.neg.Store(as.Negotiations)
	cur := int64(cs.Bytes)
	if pb.total > 0 && cur >= pb.total {
		cur = pb.total - 1 // complete only at the end
	}
	pb.bar.SetCurrent(cur)
}

// finish completes the bar with the final counts and waits for it to be drawn.
func (pb *progressBar) finish(res *pipeline.Result) {
	if res != nil {
		pb.packets.Store(res.Capture.Packets)
		pb.neg.Store(res.Analyze.Negotiations)
		pb.bar.SetCurrent(int64(res.Capture.Bytes))
	}
	pb.bar.SetTotal(-1, true)
	pb.p.Wait()
}
