package pipeline

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expectscope/expectscope/capture"
)

// chunks hands the chunks of one mapped file to the workers, which frame
// and decode them too: there is no goroutine between them.
//
// With a reading goroutine handing chunks to decoder goroutines and
// decoded chunks to the workers, every chunk took five hand-offs between
// goroutines, and a goroutine woken by another lands on the waker's own
// core's queue: the other core takes it only after a back-off (the
// runtime's, to let the waker's core run it), some 100 us on a VM, about
// as long as the chunk's work. Two cores were both busy 80-85 % of the
// time. Here each worker takes the chunks in order and, finding one not
// decoded yet, decodes it itself (or, when another worker is at it, the
// next one, or spins until that worker is done): a worker waits for
// another only when it is the whole window of slots ahead. Whichever
// worker is ahead decodes, so the decoding goes to the less loaded one.
//
// The steps that depend on the chunks before (accepting a chunk only if it
// starts where the one before ended, framing it again if not; rebuilding
// its IPv4 fragments; numbering its packets; counting; stopping at a
// file error) are done once per chunk, in order, by the first worker to
// reach it (prepare): every worker takes the chunks in order, so it has
// prepared or seen prepared the one before.
type chunks struct {
	ctx  context.Context
	ch   *capture.Chunker
	sh   sharding
	nw   int
	n    int       // chunks in the file
	slot []*fbatch // chunk k is in slot[k%len(slot)]
	res  *Result
	warn func(error)
	// giveBack is the offset before which the mapped pages may go back
	// (Chunker.Release), and giving guards the Chunker's count of those
	// given back.
	giveBack atomic.Int64
	giving   sync.Mutex

	mu      sync.Mutex
	moved   *sync.Cond // a worker finished a chunk, or the end moved
	claimed int        // chunks 0..claimed-1 are claimed for decoding
	done    []int      // per worker, the chunks it is through with
	end     int        // the chunks to feed: n, less after a file error
	waiting int        // workers waiting on moved
	spins   int        // spinTries

	// Prepared state, in chunk order, under prepMu.
	prepMu   sync.Mutex
	prepared int
	want     int64  // where the next chunk must start
	packets  uint64 // packets in the chunks prepared
	fd       *decoderState
	err      error // a panic while preparing
	decErr   error // the first panic while framing or decoding
	progress func()
}

// spinTries bounds how often a worker looks whether a chunk another worker
// is decoding is done, yielding in between, before it blocks: the other
// worker is running on another core and done within a chunk's decoding
// (some 40 us), less than a wake-up takes. With one core the other worker
// can only finish if this one blocks.
func spinTries() int {
	if runtime.GOMAXPROCS(0) > 1 {
		return 200
	}
	return 0
}

// minDone is the number of chunks every worker is through with.
func (c *chunks) minDone() int {
	m := c.done[0]
	for _, d := range c.done[1:] {
		m = min(m, d)
	}
	return m
}

// claim claims the next chunk for decoding if the window has room for it:
// its slot is free once every worker is through with the chunk nb before.
// Called with mu held; returns nil when there is none to claim.
func (c *chunks) claim() *fbatch {
	k := c.claimed
	if k >= c.end || k >= c.minDone()+len(c.slot) {
		return nil
	}
	c.claimed++
	b := c.slot[k%len(c.slot)]
	b.reset(c.nw)
	b.idx = k
	if old := k - len(c.slot); old > 0 {
		// The chunks before old are through with (at most nb are in use
		// at once), and records of later chunks start at or after old's
		// bounds.
		c.giveBack.Store(c.ch.Start() + int64(old)*int64(c.ch.Size()))
	}
	return b
}

// release gives back the mapped pages the workers are through with, if
// no other worker is at it (the next call covers what it skips). On the
// worker's own time: a goroutine doing it aside was woken onto a busy
// core's queue and ran late, and the pages waiting for it were up to
// 30 MB of resident set more.
func (c *chunks) release() {
	if c.giving.TryLock() {
		off := c.giveBack.Load()
		c.ch.Release(off)
		afterRelease(c.ch, off)
		c.giving.Unlock()
	}
}

// decode frames and decodes the claimed chunk b and marks it decoded. A
// panic while framing (a file cut short under the mapping) leaves it
// unframed (start -1), which prepare frames again from where it must
// start and that fails there as reading in order would.
func (c *chunks) decode(b *fbatch) {
	c.release()
	func() {
		defer func() {
			if p := recover(); p != nil {
				c.failDecode(recovered(p, "framing chunk %d", b.idx))
				b.start = -1
			}
		}()
		c.frameAndDecode(b, guess(c.ch, b.idx))
	}()
	b.ready.Store(true)
	close(b.decoded)
}

func (c *chunks) failDecode(e error) {
	c.mu.Lock()
	if c.decErr == nil {
		c.decErr = e
	}
	c.mu.Unlock()
}

// frameAndDecode frames chunk b.idx from start and decodes each record as
// soon as it is framed, while the next record's header is fetched
// (Chunker.Frame). start < 0 leaves it empty.
func (c *chunks) frameAndDecode(b *fbatch, start int64) {
	b.start = start
	b.frames = b.frames[:0]
	b.segs = b.segs[:0]
	for k := range b.subs {
		b.subs[k] = b.subs[k][:0]
	}
	b.deferred = b.deferred[:0]
	b.minT, b.maxT = time.Time{}, time.Time{}
	b.ds = &decoderState{dec: capture.NewDecoder()}
	b.ferr = nil
	if start < 0 {
		return
	}
	defer b.ds.seeBatch(b)
	defer func() {
		if p := recover(); p != nil { // a bug in a decoder: framed again, without decoding
			c.failDecode(recovered(p, "decoding chunk %d", b.idx))
			b.frames, b.end, b.ferr = c.ch.Frame(b.idx, start, b.frames[:0], nil)
		}
	}()
	b.frames, b.end, b.ferr = c.ch.Frame(b.idx, start, b.frames, func(i int, f *capture.Frame) { decodeFrame(b.ds, b, c.sh, i, f) })
}

// await returns chunk k decoded, decoding it or later chunks meanwhile;
// nil when the run ends before k.
func (c *chunks) await(k int) *fbatch {
	tries := c.spins
	for {
		c.mu.Lock()
		if k >= c.end {
			c.mu.Unlock()
			return nil
		}
		if c.claimed > k {
			// Claimed: decoded, or being decoded by another worker.
			b := c.slot[k%len(c.slot)]
			c.mu.Unlock()
			for i := 0; !b.ready.Load(); i++ {
				if i >= tries {
					<-b.decoded
					break
				}
				c.mu.Lock()
				nb := c.claim()
				c.mu.Unlock()
				if nb != nil {
					c.decode(nb) // the next one meanwhile
				} else {
					runtime.Gosched()
				}
			}
			return b
		}
		if b := c.claim(); b != nil { // k itself
			c.mu.Unlock()
			c.decode(b)
			return b
		}
		// This worker is the whole window ahead of another.
		c.waiting++
		c.moved.Wait()
		c.waiting--
		c.mu.Unlock()
	}
}

// prepare does, once per chunk and in order, what depends on the chunks
// before k (see chunks); false when chunk k is not to be fed (a panic
// there ended the run).
func (c *chunks) prepare(k int, b *fbatch) (ok bool) {
	c.prepMu.Lock()
	defer c.prepMu.Unlock()
	if c.prepared > k {
		return c.err == nil || k < c.prepared-1
	}
	c.prepared = k + 1
	defer func() {
		if p := recover(); p != nil {
			c.err = recovered(p, "at chunk %d", k)
			c.stopAt(k)
			ok = false
		}
	}()
	if !c.ch.Follows(b.idx, b.start, c.want) {
		c.frameAndDecode(b, c.want) // a wrong guess: frame it again from where it starts
	}
	c.res.Capture = addCapture(c.res.Capture, b.ds.dec.Stats())
	see(c.res, b.ds)
	if len(b.deferred) > 0 {
		decodeDeferred(c.fd, b, c.sh)
	}
	b.pktOff = c.packets
	c.packets += uint64(len(b.frames))
	c.want = b.end
	stop := c.ctx.Err() != nil
	if b.ferr != nil {
		c.warn(c.ch.Fail(c.packets+1, b.end, b.ferr))
		stop = true
	}
	if stop {
		c.stopAt(k + 1)
	} else if c.progress != nil {
		c.progress()
	}
	return true
}

// stopAt ends the run before chunk k.
func (c *chunks) stopAt(k int) {
	c.mu.Lock()
	c.end = min(c.end, k)
	c.moved.Broadcast()
	c.mu.Unlock()
}

// through records that worker w is through with chunk k.
func (c *chunks) through(w, k int) {
	c.mu.Lock()
	c.done[w] = k + 1
	if c.waiting > 0 {
		c.moved.Broadcast()
	}
	c.mu.Unlock()
}

// run is worker w's loop over the chunks. After a panic in its own work
// it goes on through the chunks without feeding them, so that the others
// and the merger's rounds go on.
func (c *chunks) run(w *worker) {
	var perr error
	broken := false
	var tick capture.Segment
	for k := 0; ; k++ {
		b := c.await(k)
		if b == nil || !c.prepare(k, b) {
			break
		}
		if !broken {
			func() {
				defer func() {
					if p := recover(); p != nil {
						perr = recovered(p, "in worker %d", w.id)
						broken = true
						w.items, w.evs, w.warns = nil, nil, nil
					}
				}()
				beforeFeed(w.id, k)
				w.feedBatch(b, &tick)
			}()
		}
		c.through(w.id, k)
		if broken {
			// An ordered merger takes every worker's batches in turn:
			// this one's end nothing.
			w.send(recMsg{worker: w.id, end: true})
		} else {
			w.handOver()
		}
	}
	w.flushing = true
	if !broken {
		func() {
			defer func() {
				if p := recover(); p != nil {
					perr = recovered(p, "in worker %d at the final flush", w.id)
				}
			}()
			w.asm.FlushAll(w.now)
			w.an.Flush()
		}()
	}
	w.send(recMsg{worker: w.id, items: w.items, evs: w.evs, warns: w.warns, flush: true, done: true, asm: w.asm.Stats(), an: w.an.Stats(), err: perr})
}

// afterRelease is called after a worker gave back the pages before off;
// tests look at how many are kept.
var afterRelease = func(ch *capture.Chunker, off int64) {}

// beforeFeed is called before a worker feeds a chunk; tests make it panic.
var beforeFeed = func(worker, chunk int) {}

func runChunked(ctx context.Context, src capture.FrameSource, ch *capture.Chunker, opt Options, nw int) (res *Result, err error) {
	res = &Result{}
	acfg, userAll, userEmit, rcfg := workerConfigs(opt, nw)
	rcfg.StablePayloads = true // frames stay valid until src is closed

	c := &chunks{ctx: ctx, ch: ch, sh: shardingFor(rcfg, nw), nw: nw, n: ch.Len(), res: res,
		done: make([]int, nw), fd: &decoderState{dec: capture.NewDecoder()}}
	c.end = c.n
	c.spins = spinTries()
	c.moved = sync.NewCond(&c.mu)
	c.warn = func(e error) {
		res.Warnings = append(res.Warnings, e.Error())
		if opt.Warn != nil {
			opt.Warn(e)
		}
	}
	c.slot = make([]*fbatch, mappedBatches*nw)
	for i := range c.slot {
		c.slot[i] = newFbatch(nw)
	}

	ws := newWorkerSet(nw, acfg, rcfg, mergeCoalesce)
	if opt.Progress != nil {
		c.progress = func() { opt.Progress(res.Capture, ws.snapshot()) }
	}
	mergeDone := make(chan struct{})
	warnings, wErr := startMerger(ws.out, nw, acfg, userAll, userEmit, res, mergeDone)

	c.want = ch.Start()

	var wg sync.WaitGroup
	for _, w := range ws.workers {
		wg.Go(func() {
			debug.SetPanicOnFault(true) // a mapped file cut short under us faults: recovered as an error
			c.run(w)
		})
	}
	wg.Wait()
	<-mergeDone
	for _, e := range *warnings {
		c.warn(e)
	}
	res.Capture = addCapture(res.Capture, c.fd.dec.Stats())
	see(res, c.fd)
	res.Capture.FileErrors = src.Stats().FileErrors
	err = c.err
	if err == nil && c.decErr != nil {
		err = c.decErr
	}
	if err == nil && *wErr != nil {
		err = *wErr
	}
	return outcome(res, err)
}
