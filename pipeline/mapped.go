package pipeline

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expectscope/expectscope/capture"
)

// The sharded path for memory-mapped files.
//
// When every input is mapped (capture.FrameSource), frames stay valid
// until the source is closed, so nothing is copied and even decoding
// leaves the reading goroutine:
//
//   - the calling goroutine only frames records (a few loads per record,
//     no system call) into frame batches of frameBatch records, numbered
//     by position, and sends each batch to the decoders and, in the same
//     order, to every worker;
//   - nw decoder goroutines, each with its own capture.Decoder, decode
//     whole batches in any order, splitting the segments of a batch by
//     shard (the symmetric 4-tuple hash of sharded.go);
//   - each worker takes every batch in reading order, waits until it is
//     decoded and feeds its own segments to its Assembler, then ticks it
//     to the latest capture time of the batches so far (all workers see
//     all batches, so they share one capture clock and end at the same
//     last time);
//   - an IPv4 fragment depends on the fragments before it: decoders defer
//     it, and worker 0, which takes batches in order, decodes the deferred
//     frames of each batch with one Decoder before it feeds the batch;
//     the others wait for that only in batches that have such frames.
//     Rebuilt segments are merged into the shard's segments by packet
//     number, so each connection still sees its packets in capture order.
//
// A batch returns to the free list once every worker is done with it, so
// at most mappedBatches batches (and the mapped pages under them) are in
// flight. Records go to the merger of sharded.go as in runSharded.
const (
	frameBatch    = 512
	mappedBatches = 4 // per worker
	// mergeCoalesce is how many messages (about one per batch) a worker
	// gives the merger at once on the mapped paths (worker.send).
	mergeCoalesce = 8
)

type fbatch struct {
	base   uint64 // packet number of frames[0], minus one
	frames []capture.Frame
	// segs are the decoded segments, each decoded in place (a segment is
	// some 190 bytes: copying it into a slice per shard cost more than
	// deciding its shard), and subs the indices of each shard's, in order.
	segs     []capture.Segment
	subs     [][]uint32
	minT     time.Time           // earliest time of a segment in segs
	maxT     time.Time           // latest time of a segment in segs
	deferred []int               // frames deferred to worker 0 (IPv4 fragments)
	frag     [][]capture.Segment // segments rebuilt from those, by shard
	fragMax  time.Time
	decoded  chan struct{}
	fragged  chan struct{}
	refs     atomic.Int32
	// ready is decoded's closing, for a worker on the chunked path to
	// look at while it spins (chunks.await).
	ready atomic.Bool

	// Chunked framing (runChunked): the chunk, where its framing started
	// and ended, why it ended early, its decoder, and the number of the
	// packets before it, added to the chunk-relative numbers of its
	// segments by the workers.
	idx    int
	start  int64
	end    int64
	ferr   error
	ds     *decoderState
	pktOff uint64
}

// newFbatch makes a batch for nw workers. Its segments get the room of
// a full batch at once: grown by append, the eight batches of two
// workers left some 1.5 MB behind them, each page of it faulted in.
func newFbatch(nw int) *fbatch {
	return &fbatch{
		frames: make([]capture.Frame, 0, frameBatch),
		segs:   make([]capture.Segment, 0, frameBatch),
		subs:   make([][]uint32, nw),
		frag:   make([][]capture.Segment, nw),
	}
}

func (b *fbatch) reset(nw int) {
	b.frames = b.frames[:0]
	// Not cleared: a segment points into the mapping and at global
	// locations, nothing the collector frees, and decoding overwrites it
	// whole (clearing was 2 % of the CPU).
	b.segs = b.segs[:0]
	for i := range b.subs {
		b.subs[i] = b.subs[i][:0]
		b.frag[i] = b.frag[i][:0]
	}
	b.deferred = b.deferred[:0]
	b.minT, b.maxT, b.fragMax = time.Time{}, time.Time{}, time.Time{}
	b.ferr, b.ds, b.pktOff = nil, nil, 0
	b.decoded = make(chan struct{})
	b.fragged = make(chan struct{})
	b.ready.Store(false)
	b.refs.Store(int32(nw))
}

// decoderState is what one decoder goroutine counted.
type decoderState struct {
	dec         *capture.Decoder
	first, last time.Time
}

// seeBatch widens d's first and last times to b's segments'.
func (d *decoderState) seeBatch(b *fbatch) {
	if !b.minT.IsZero() {
		d.see(b.minT)
		d.see(b.maxT)
	}
}

func (d *decoderState) see(t time.Time) {
	if d.first.IsZero() || t.Before(d.first) {
		d.first = t
	}
	if t.After(d.last) {
		d.last = t
	}
}

func runMapped(ctx context.Context, src capture.FrameSource, opt Options, nw int) (res *Result, err error) {
	res = &Result{}
	acfg, userAll, userEmit, rcfg := workerConfigs(opt, nw)
	sh := shardingFor(rcfg, nw)
	rcfg.StablePayloads = true // frames stay valid until src is closed

	nb := mappedBatches * nw
	free := make(chan *fbatch, nb)
	for range nb {
		b := newFbatch(nw)
		b.reset(nw)
		free <- b
	}
	release := func(b *fbatch) {
		if b.refs.Add(-1) == 0 {
			b.reset(nw)
			free <- b
		}
	}

	// Decoders.
	decodeCh := make(chan *fbatch, nb)
	decs := make([]*decoderState, nw+1) // the last one decodes fragments (worker 0)
	for i := range decs {
		decs[i] = &decoderState{dec: capture.NewDecoder()}
	}
	var decodeErr error
	var decodeErrOnce sync.Once
	var dwg sync.WaitGroup
	for i := range nw {
		d := decs[i]
		dwg.Add(1)
		go func() {
			debug.SetPanicOnFault(true) // a mapped file cut short under us faults: recovered as an error
			defer dwg.Done()
			for b := range decodeCh {
				decodeBatch(d, b, sh, func(e error) { decodeErrOnce.Do(func() { decodeErr = e }) })
				close(b.decoded)
			}
		}()
	}

	ws := newWorkerSet(nw, acfg, rcfg, mergeCoalesce)
	out := ws.out
	var wg sync.WaitGroup
	ins := startMapped(ws.workers, &wg, nb, release, decs[nw], sh)

	mergeDone := make(chan struct{})
	warnings, wErr := startMerger(out, nw, acfg, userAll, userEmit, res, mergeDone)

	warn := func(e error) {
		res.Warnings = append(res.Warnings, e.Error())
		if opt.Warn != nil {
			opt.Warn(e)
		}
	}
	var frames, bytes uint64
	send := func(b *fbatch) {
		decodeCh <- b
		for _, in := range ins {
			in <- b
		}
	}
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = recovered(p, "at packet %d", frames)
			}
		}()
		b := <-free
		b.base = 0
		for {
			if frames&1023 == 0 && ctx.Err() != nil {
				break
			}
			b.frames = append(b.frames, capture.Frame{})
			e := src.NextFrame(&b.frames[len(b.frames)-1])
			if e != nil {
				b.frames = b.frames[:len(b.frames)-1]
				if e == io.EOF {
					break
				}
				var w *capture.Warning
				warn(e)
				if errors.As(e, &w) {
					continue
				}
				break
			}
			frames++
			bytes += uint64(len(b.frames[len(b.frames)-1].Data))
			if len(b.frames) == frameBatch {
				send(b)
				b = <-free
				b.base = frames
			}
			if opt.Progress != nil && frames&4095 == 0 {
				opt.Progress(capture.Stats{Packets: frames, Bytes: bytes}, ws.snapshot())
			}
		}
		send(b)
	}()
	close(decodeCh)
	for _, in := range ins {
		close(in)
	}
	wg.Wait()
	dwg.Wait()
	<-mergeDone
	for _, e := range *warnings {
		warn(e)
	}
	res.Capture = src.Stats()
	for _, d := range decs {
		res.Capture = addCapture(res.Capture, d.dec.Stats())
		if !d.first.IsZero() && (res.First.IsZero() || d.first.Before(res.First)) {
			res.First = d.first
		}
		if d.last.After(res.Last) {
			res.Last = d.last
		}
	}
	if err == nil && decodeErr != nil {
		err = decodeErr
	}
	if err == nil && *wErr != nil {
		err = *wErr
	}
	return outcome(res, err)
}

// decodeBatch decodes the frames of b into its shards. A panic (a bug in
// a decoder) is reported, and b still counts as decoded.
func decodeBatch(d *decoderState, b *fbatch, sh sharding, fail func(error)) {
	defer d.seeBatch(b)
	defer func() {
		if p := recover(); p != nil {
			fail(recovered(p, "decoding packets %d-%d", b.base+1, b.base+uint64(len(b.frames))))
		}
	}()
	for i := range b.frames {
		decodeFrame(d, b, sh, i, &b.frames[i])
	}
}

// decodeFrame decodes f, the i-th frame of b, into b's shards.
func decodeFrame(d *decoderState, b *fbatch, sh sharding, i int, f *capture.Frame) {
	n := len(b.segs)
	if n < cap(b.segs) {
		// Not zeroed: DecodeFrame overwrites a segment whole.
		b.segs = b.segs[:n+1]
		if k := n + writeAhead; k < cap(b.segs) {
			b.segs[:k+1][k].PrefetchWrite()
		}
	} else {
		b.segs = append(b.segs, capture.Segment{})
	}
	seg := &b.segs[n]
	ok, deferred := d.dec.DecodeFrame(f, b.base+uint64(i)+1, seg, false)
	if deferred || !ok {
		*seg = capture.Segment{}
		b.segs = b.segs[:len(b.segs)-1]
		if deferred {
			b.deferred = append(b.deferred, i)
		}
		return
	}
	seg.Raw = nil // frames are not needed past the decoder
	if t := seg.Time; b.minT.IsZero() || t.Before(b.minT) {
		b.minT = t
	}
	if seg.Time.After(b.maxT) {
		b.maxT = seg.Time
	}
	k := sh.of(seg.Src, seg.Dst)
	b.subs[k] = append(b.subs[k], uint32(len(b.segs)-1))
}

// decodeDeferred decodes the deferred frames of b, in order, with the one
// decoder that sees them all (worker 0's).
func decodeDeferred(d *decoderState, b *fbatch, sh sharding) {
	defer close(b.fragged)
	var seg capture.Segment
	for _, i := range b.deferred {
		ok, _ := d.dec.DecodeFrame(&b.frames[i], b.base+uint64(i)+1, &seg, true)
		if !ok {
			continue
		}
		seg.Raw = nil
		d.see(seg.Time)
		if seg.Time.After(b.fragMax) {
			b.fragMax = seg.Time
		}
		k := sh.of(seg.Src, seg.Dst)
		b.frag[k] = append(b.frag[k], seg)
	}
}

// runMapped is a worker's loop on the mapped path; fd is the fragment
// decoder (worker 0 only).
func (w *worker) runMapped(in <-chan *fbatch, release func(*fbatch), fd *decoderState, sh sharding) {
	var perr error
	defer func() {
		if p := recover(); p != nil {
			perr = recovered(p, "in worker %d", w.id)
			for b := range in { // keep the reader and the others from blocking
				<-b.decoded
				if fd != nil && len(b.deferred) > 0 {
					select {
					case <-b.fragged:
					default:
						close(b.fragged)
					}
				}
				release(b)
				// An ordered merger takes every worker's batches in
				// turn: this one's end nothing.
				w.send(recMsg{worker: w.id, end: true})
			}
		}
		w.flushing = true
		func() {
			defer func() {
				if p := recover(); p != nil && perr == nil {
					perr = recovered(p, "in worker %d at the final flush", w.id)
				}
			}()
			w.asm.FlushAll(w.now)
			w.an.Flush()
		}()
		w.send(recMsg{worker: w.id, items: w.items, evs: w.evs, warns: w.warns, flush: true, done: true, asm: w.asm.Stats(), an: w.an.Stats(), err: perr})
	}()
	var tick capture.Segment
	for b := range in {
		<-b.decoded
		if len(b.deferred) > 0 {
			if fd != nil {
				decodeDeferred(fd, b, sh)
			} else {
				<-b.fragged
			}
		}
		w.feedBatch(b, &tick)
		release(b)
		w.handOver()
	}
}

// feedBatch feeds the worker's segments of b, decoded and with its
// fragments rebuilt, in packet order, then ticks its clock to b's latest
// time.
func (w *worker) feedBatch(b *fbatch, tick *capture.Segment) {
	{
		var frag []capture.Segment
		if len(b.deferred) > 0 {
			frag = b.frag[w.id]
			if b.fragMax.After(w.now) {
				w.now = b.fragMax
			}
		}
		mine := b.subs[w.id]
		for i, j := 0, 0; i < len(mine) || j < len(frag); {
			if k := i + segmentsAhead; k < len(mine) {
				b.segs[mine[k]].Prefetch()
			}
			var s *capture.Segment
			if j == len(frag) || i < len(mine) && b.segs[mine[i]].Packet < frag[j].Packet {
				s = &b.segs[mine[i]]
				i++
			} else {
				s = &frag[j]
				j++
			}
			s.Packet += b.pktOff
			w.feed(s)
		}
		if b.maxT.After(w.now) {
			w.now = b.maxT
		}
		if w.now.After(tick.Time) {
			tick.Time = w.now
			w.key = afterBatch
			w.asm.Add(tick)
		}
	}
}

// segmentsAhead is how far ahead of the segment it feeds a worker
// prefetches one (capture.Segment.Prefetch).
const segmentsAhead = 4

// writeAhead is how far ahead of the segment it decodes into a decoder
// prefetches one for writing.
const writeAhead = 4

// startMapped starts each worker's runMapped on a channel of nb batches;
// worker 0 decodes IPv4 fragments with fd (nil: the batches come with
// them decoded).
func startMapped(workers []*worker, wg *sync.WaitGroup, nb int, release func(*fbatch), fd *decoderState, sh sharding) []chan *fbatch {
	ins := make([]chan *fbatch, len(workers))
	for i, w := range workers {
		ins[i] = make(chan *fbatch, nb)
		var wfd *decoderState
		if i == 0 {
			wfd = fd
		}
		wg.Add(1)
		go func() { debug.SetPanicOnFault(true); defer wg.Done(); w.runMapped(ins[i], release, wfd, sh) }()
	}
	return ins
}

func addCapture(a, b capture.Stats) capture.Stats {
	a.Packets += b.Packets
	a.Bytes += b.Bytes
	a.TCP += b.TCP
	a.NonTCP += b.NonTCP
	a.Truncated += b.Truncated
	a.Fragments += b.Fragments
	a.Reassembled += b.Reassembled
	a.DecodeErrs += b.DecodeErrs
	a.FileErrors += b.FileErrors
	return a
}

// Chunked framing.
//
// A single mapped pcap or pcapng file is framed in parallel too (capture.Chunker):
// it is cut in chunks of chunkSize bytes (512 KiB, more for large
// records: maxChunkSize); the workers themselves take the chunks, each
// guessing where its first record starts, framing and decoding its
// records, numbering packets from the chunk's start (see chunks, in
// chunked.go). The first worker to reach a chunk in order accepts it only
// if it started where the one before ended, in the pcapng interface table
// that one ended in (Chunker.Follows; and frames and decodes it again from
// there if not: the guess was wrong), decodes its IPv4 fragments in order
// and numbers its packets; every worker then feeds its segments as in
// runMapped. A record that cannot be read ends the file there with the
// warning reading from the start gives.
var chunkSize = 512 << 10 // a variable for tests

// maxChunkSize bounds the chunks grown for large records (Chunker): 8 MiB
// holds 128 records of 64 KiB. Tests set it to chunkSize.
var maxChunkSize = 8 << 20

// guess is capture.Chunker.Guess; tests replace it with worse guesses.
var guess = (*capture.Chunker).Guess

// see widens res's first and last times to those d decoded.
func see(res *Result, d *decoderState) {
	if !d.first.IsZero() && (res.First.IsZero() || d.first.Before(res.First)) {
		res.First = d.first
	}
	if d.last.After(res.Last) {
		res.Last = d.last
	}
}
