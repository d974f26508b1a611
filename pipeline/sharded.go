package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/reassembly"
)

// Sharding.
//
// The calling goroutine reads and decodes segments and appends each to the
// current batch of the worker that owns its connection: shard =
// symmetricHash(4-tuple) % workers, the same for both directions, so a
// connection is reassembled in order by one worker. A batch holds up to
// batchSegs segments whose payloads are copied into the batch's own arena
// (Segment.Payload aliases the reader's buffer); batches are recycled
// through a free list, so the reader can run at most batchesPerWorker
// batches ahead of each worker and memory stays bounded.
//
// Time: every batch carries the reader's capture time when it was sent;
// a worker ticks its assembler to that time after the batch, so idle
// connections are flushed by capture time on every worker, whatever
// traffic that worker itself sees. Source ticks (see Options.Workers)
// send every worker's pending batch at once with the tick's time.
//
// Records: workers hand their records to one merging goroutine, which
// calls Analyze.Emit (never concurrently). The order of Emit calls
// depends on scheduling; callers that print sort the records (by
// headers_end_at, then id: ids carry the packet number of the
// connection's first segment, so they are the same for any worker count).
//
// Retries on another connection: the Analyzer links a request repeated
// after a 417 by client IP, method, Host and target, across connections.
// With sharding by 4-tuple the retry may land in another worker. Sharding
// by client address instead would keep them together but would put a
// capture of one client and one server (loopback, a single proxy) on
// one core. So connections are sharded by 4-tuple and the workers link
// nothing themselves: their Analyzers (Config.LinkEvents) report each
// request and each 417 as a LinkEvent instead, and hand a 417 over as if
// never retried. The merger feeds the events of all workers, in capture
// order, to one analyze.RetryLinker, holds each 417 until it decides, and
// then sets the same flags a single Analyzer would. Workers analyze with
// All (a plain request can be a retry; the merger drops plain exchanges
// unless the caller asked for All).
//
// Epochs: every epochPackets segments (and at every source tick) the
// reader sends every worker its batch, even empty, as the end of an
// epoch; a worker hands its records to the merger at the end of each
// epoch, and the merger takes the epochs of all workers in turn (see
// startMerger), which needs every worker to have each one.
const (
	epochPackets     = 4096
	batchSegs        = 256
	batchArena       = 512 << 10
	batchesPerWorker = 8
)

type batch struct {
	segs  []capture.Segment
	arena []byte
	now   time.Time // reader's capture time when the batch was sent
	upTo  uint64    // the number of the last packet read then
	end   bool      // the last batch of an epoch (see epochPackets)
}

func (b *batch) reset() {
	b.segs = b.segs[:0]
	b.arena = b.arena[:0]
}

// add copies seg into the batch; false when the arena has no room.
func (b *batch) add(seg *capture.Segment) bool {
	if len(b.arena)+len(seg.Payload) > cap(b.arena) && len(b.segs) > 0 {
		return false
	}
	b.segs = append(b.segs, *seg)
	s := &b.segs[len(b.segs)-1]
	s.Raw = nil // frames are not needed past the decoder
	if len(seg.Payload) > cap(b.arena)-len(b.arena) {
		s.Payload = slices.Clone(seg.Payload) // larger than an arena: rare
		return true
	}
	off := len(b.arena)
	b.arena = append(b.arena, seg.Payload...)
	s.Payload = b.arena[off:len(b.arena):len(b.arena)]
	return true
}

// sharding gives each worker whole shards of the reassembly's (see
// reassembly.Shards): both directions of a connection go to one worker,
// and each worker's Assembler, given the whole Config, evicts exactly the
// connections one Assembler would.
// A shard's worker is looked up, not taken modulo the number of workers:
// a division per packet was 1 % of the CPU.
type sharding struct {
	shards int
	worker []uint8 // by shard
}

func shardingFor(rcfg reassembly.Config, nw int) sharding {
	s := sharding{shards: reassembly.Shards(rcfg.MaxConns)}
	s.worker = make([]uint8, s.shards)
	for i := range s.worker {
		s.worker[i] = uint8(i % nw)
	}
	return s
}

func (s sharding) of(src, dst netip.AddrPort) int {
	return int(s.worker[reassembly.ShardOf(src, dst, s.shards)])
}

// recMsg carries a worker's records (and, when done, its final state) to
// the merger.
type recMsg struct {
	worker int
	items  []item
	evs    []analyze.LinkEvent
	warns  []error
	end    bool      // the last message of a batch
	now    time.Time // with end: the worker's capture clock after the batch
	// flush marks what a worker decides after its last batch (the final
	// flush, and done): the merger takes it as it comes.
	flush bool
	done  bool
	asm   reassembly.Stats
	an    analyze.Stats
	err   error
}

type worker struct {
	id   int
	in   chan *batch
	free chan *batch
	out  chan<- []recMsg
	// coalesce is how many messages go to the merger together (pending
	// until then); 1 sends each at once.
	coalesce int
	pending  []recMsg
	asm      *reassembly.Assembler
	an       *analyze.Analyzer
	items    []item
	evs      []analyze.LinkEvent
	key      uint64 // of the items decided now (see item)
	warns    []error
	now      time.Time

	lastParseErr error
	flushing     bool // past the last batch: records go out marked flush
	// stats is a snapshot for Progress, guarded by mu.
	mu    *sync.Mutex
	stats *analyze.Stats
}

// feed adds one segment, keeping the first parse errors as warnings.
func (w *worker) feed(s *capture.Segment) {
	w.key = 2 * s.Packet
	w.an.AtPacket(s.Packet)
	w.asm.Add(s)
	if pe := w.an.LastParseError(); pe != nil && pe != w.lastParseErr {
		w.lastParseErr = pe
		if w.an.Stats().ParseErrors <= 10 {
			w.warns = append(w.warns, pe)
		}
	}
}

// handOver sends the records and warnings made since the last batch to
// the merger, with the end of the batch (even when there are none: an
// ordered merger waits for it), and snapshots the counters for Progress.
func (w *worker) handOver() {
	w.send(recMsg{worker: w.id, items: w.items, evs: w.evs, warns: w.warns, end: true, now: w.now})
	w.items, w.evs, w.warns = nil, nil, nil
	st := w.an.Stats()
	w.mu.Lock()
	*w.stats = st
	w.mu.Unlock()
}

func (w *worker) run(last *time.Time) {
	var perr error
	defer func() {
		if p := recover(); p != nil {
			perr = recovered(p, "in worker %d", w.id)
			for b := range w.in { // keep the reader from blocking
				if b.end { // and the merger's rounds going
					w.send(recMsg{worker: w.id, end: true})
				}
				b.reset()
				w.free <- b
			}
		}
		func() {
			defer func() {
				if p := recover(); p != nil && perr == nil {
					perr = recovered(p, "in worker %d at the final flush", w.id)
				}
			}()
			w.flushing = true
			w.asm.FlushAll(*last)
			w.an.Flush()
		}()
		w.send(recMsg{worker: w.id, items: w.items, evs: w.evs, warns: w.warns, flush: true, done: true, asm: w.asm.Stats(), an: w.an.Stats(), err: perr})
	}()
	var tick capture.Segment
	for b := range w.in {
		for i := range b.segs {
			s := &b.segs[i]
			w.feed(s)
		}
		if b.now.After(w.now) {
			w.now = b.now
			tick.Time = b.now
			w.key = 2*b.upTo + 1
			w.asm.Add(&tick)
		}
		end := b.end
		b.reset()
		w.free <- b
		if end {
			w.handOver()
		}
	}
}

// workerConfigs are the analysis and reassembly configurations of nw
// workers, and what the caller asked of the analysis: the workers record
// plain exchanges too (retry candidates for the merger), which the merger
// passes on only if All was asked.
func workerConfigs(opt Options, nw int) (acfg analyze.Config, userAll bool, userEmit func(*analyze.Record), rcfg reassembly.Config) {
	acfg = opt.Analyze
	userAll, userEmit = acfg.All, acfg.Emit
	acfg.All = true
	return acfg, userAll, userEmit, shareLimits(opt.Reassembly, nw)
}

func runSharded(ctx context.Context, src capture.Source, opt Options, nw int) (res *Result, err error) {
	res = &Result{}
	acfg, userAll, userEmit, rcfg := workerConfigs(opt, nw)
	sh := shardingFor(rcfg, nw)

	ws := newWorkerSet(nw, acfg, rcfg, 1) // live traffic: records go out as they are decided
	out, workers := ws.out, ws.workers
	var last time.Time // written by the reader before the inputs close
	cur := make([]*batch, nw)
	var wg sync.WaitGroup
	for i := range workers {
		w := workers[i]
		w.in, w.free = make(chan *batch, batchesPerWorker), make(chan *batch, batchesPerWorker+1)
		for range batchesPerWorker {
			w.free <- &batch{segs: make([]capture.Segment, 0, batchSegs), arena: make([]byte, 0, batchArena)}
		}
		cur[i] = <-w.free
		wg.Add(1)
		go func() { defer wg.Done(); w.run(&last) }()
	}

	mergeDone := make(chan struct{})
	warnings, wErr := startMerger(out, nw, acfg, userAll, userEmit, res, mergeDone)

	warn := func(e error) {
		res.Warnings = append(res.Warnings, e.Error())
		if opt.Warn != nil {
			opt.Warn(e)
		}
	}
	var upTo uint64
	send := func(i int, now time.Time, end bool) {
		b := cur[i]
		b.now, b.upTo, b.end = now, upTo, end
		workers[i].in <- b
		cur[i] = <-workers[i].free
	}
	var n uint64
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = recovered(p, "at packet %d", src.Stats().Packets)
			}
		}()
		for {
			if n&1023 == 0 && ctx.Err() != nil {
				break
			}
			seg, e := src.Next()
			if e != nil {
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
			if seg.Time.After(last) {
				last = seg.Time
			}
			if isTick(seg) {
				for i := range cur {
					send(i, last, true)
				}
				continue
			}
			upTo = seg.Packet
			n++
			if res.First.IsZero() || seg.Time.Before(res.First) {
				res.First = seg.Time
			}
			i := sh.of(seg.Src, seg.Dst)
			if !cur[i].add(seg) {
				upTo-- // not this one yet
				send(i, last, false)
				upTo++
				cur[i].add(seg)
			}
			if n%epochPackets == 0 {
				for i := range cur {
					send(i, last, true)
				}
			} else if len(cur[i].segs) == batchSegs {
				send(i, last, false)
			}
			if opt.Progress != nil && n&4095 == 0 {
				opt.Progress(src.Stats(), ws.snapshot())
			}
		}
	}()
	for i, w := range workers {
		b := cur[i]
		b.now, b.upTo, b.end = last, upTo, true
		w.in <- b
		close(w.in)
	}
	wg.Wait()
	<-mergeDone
	for _, e := range *warnings {
		warn(e)
	}
	res.Capture = src.Stats()
	res.Last = last
	if err == nil && *wErr != nil {
		err = *wErr
	}
	return outcome(res, err)
}

// recsPerMsg is the most items a worker holds before it sends them to
// the merger.
const recsPerMsg = 256

// workerSet is the workers of one sharded run, each with its own
// assembler and analyzer, and the snapshot of their counts for Progress.
type workerSet struct {
	out     chan []recMsg
	mu      sync.Mutex
	stats   []analyze.Stats
	workers []*worker
}

func newWorkerSet(nw int, acfg analyze.Config, rcfg reassembly.Config, coalesce int) *workerSet {
	ws := &workerSet{out: make(chan []recMsg, nw*4), stats: make([]analyze.Stats, nw), workers: make([]*worker, nw)}
	for i := range ws.workers {
		w := &worker{id: i, out: ws.out, mu: &ws.mu, stats: &ws.stats[i], coalesce: coalesce}
		cfg := acfg
		cfg.Emit = func(r *analyze.Record) {
			w.items = append(w.items, item{key: w.key, rec: r})
			w.sendFull()
		}
		cfg.LinkEvents = func(ev analyze.LinkEvent) {
			w.evs = append(w.evs, ev)
			w.items = append(w.items, item{key: w.key, ev: int32(len(w.evs) - 1)})
			w.sendFull()
		}
		w.an = analyze.New(cfg)
		w.asm = reassembly.NewAssembler(w.an, rcfg)
		ws.workers[i] = w
	}
	return ws
}

// sendFull sends the items decided so far when they are many: the final
// flush decides the records of every connection still open at once, and
// sent in parts they do not all wait in memory for the last one.
func (w *worker) sendFull() {
	if len(w.items) >= recsPerMsg {
		w.send(recMsg{worker: w.id, items: w.items, evs: w.evs, flush: w.flushing})
		w.items, w.evs = nil, nil
	}
}

// send passes msg to the merger, with the messages pending before it. A
// batch's end with nothing in it waits until there are coalesce of them:
// reading a file, the merger is then woken once for several batches
// without records (most, in uploads), where each wake-up was a hand-off
// between cores: a goroutine woken by a worker waits on that worker's
// core until the other core takes it (chunks), which holds up the worker
// that core was to run. Records go at once: held back, they were colder
// in the merger's cache, which cost more than the wake-ups saved.
func (w *worker) send(msg recMsg) {
	w.pending = append(w.pending, msg)
	if len(w.pending) >= w.coalesce || len(msg.items) > 0 || len(msg.warns) > 0 || msg.flush || msg.done {
		w.out <- w.pending
		w.pending = nil
	}
}

// snapshot sums the workers' counts as of their last batch.
func (ws *workerSet) snapshot() analyze.Stats {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var st analyze.Stats
	for _, s := range ws.stats {
		st = addAnalyze(st, s)
	}
	return st
}

// outcome is a run's result: its error, or ErrNoInput when not one
// packet could be read.
func outcome(res *Result, err error) (*Result, error) {
	if err != nil {
		return res, err
	}
	if res.Capture.Packets == 0 && len(res.Warnings) > 0 {
		return res, fmt.Errorf("%w: %s", ErrNoInput, res.Warnings[0])
	}
	return res, nil
}

// shareLimits divides the global reassembly limits among nw workers.
func shareLimits(rcfg reassembly.Config, nw int) reassembly.Config {
	if rcfg.MaxConns <= 0 {
		rcfg.MaxConns = reassembly.DefaultMaxConns
	}
	if rcfg.MaxBufferedTotal <= 0 {
		rcfg.MaxBufferedTotal = reassembly.DefaultMaxBufferedTotal
	}
	// MaxConns stays whole: each Assembler caps its shards only.
	rcfg.MaxBufferedTotal = max(rcfg.MaxBufferedTotal/nw, 1<<20)
	return rcfg
}

// startMerger starts the goroutine that takes the records and retry-link
// events of nw workers from out, links retries across workers (one
// analyze.RetryLinker for all) and emits the records, and adds up the
// workers' final counts in res. It closes done when every worker has
// finished; only then may the warnings and the first worker error be read.
//
// The merger takes the batches in rounds: batch k of every worker (on
// the mapped paths every worker takes every batch; streamed, every epoch
// of the reader), its items merged by packet number, then batch k+1. The
// linker so sees the events in capture order, as the Analyzer of a
// single worker does, and decides what that one would, whatever the
// number of workers and however they ran.
//
// What a worker decides after its last batch (its final flush: the
// records of every connection still open, possibly millions) is taken as
// it comes once that worker's batches are merged: in turn, one worker's
// flush would wait in memory for another's. Its events, few, wait for the
// end and are linked in worker order, with the records they concern.
func startMerger(out <-chan []recMsg, nw int, acfg analyze.Config, all bool, emit func(*analyze.Record), res *Result, done chan<- struct{}) (*[]error, *error) {
	m := newMerger(acfg, all, emit, nw)
	warnings := new([]error)
	wErr := new(error)
	finished := 0
	take := func(msg recMsg) {
		*warnings = append(*warnings, msg.warns...)
		if msg.done {
			finished++
			res.Reassembly = addReasm(res.Reassembly, msg.asm)
			res.Analyze = addAnalyze(res.Analyze, msg.an)
			if msg.err != nil && *wErr == nil {
				*wErr = msg.err
			}
		}
	}
	go func() {
		defer close(done)
		defer func() { res.Analyze.RetryWaitsDropped += m.linker.Dropped() }()
		queued := make([][]recMsg, nw)
		ends := make([]int, nw)  // batch ends queued, per worker
		over := make([]bool, nw) // past its last batch
		for msgs := range out {
			for _, msg := range msgs {
				queued[msg.worker] = append(queued[msg.worker], msg)
				if msg.flush || msg.done {
					over[msg.worker] = true
				}
				if msg.end {
					ends[msg.worker]++
				}
				for moved := true; moved; {
					moved = false
					for w, q := range queued { // a flush once the worker's batches are merged
						for len(q) > 0 && (q[0].flush || q[0].done) {
							m.late(q[0])
							take(q[0])
							q = q[1:]
							moved = true
						}
						queued[w] = q
					}
					ready, any := true, false
					for w := range queued {
						if ends[w] > 0 {
							any = true
						} else if !over[w] {
							ready = false // its batch is still to come
						}
					}
					if !ready || !any {
						continue
					}
					batches := make([][]recMsg, nw)
					for w, q := range queued {
						if ends[w] == 0 {
							continue // past its last batch
						}
						i := slices.IndexFunc(q, func(m recMsg) bool { return m.end })
						batches[w] = q[:i+1]
						queued[w] = q[i+1:]
						ends[w]--
					}
					m.round(batches)
					for _, b := range batches {
						for _, msg := range b {
							take(msg)
						}
					}
					moved = true
				}
				if finished == nw {
					m.finish()
					return
				}
			}
		}
	}()
	return warnings, wErr
}

func addReasm(a, b reassembly.Stats) reassembly.Stats {
	a.Connections += b.Connections
	a.Evicted += b.Evicted
	a.IdleFlushed += b.IdleFlushed
	a.Retransmitted += b.Retransmitted
	a.OutOfOrder += b.OutOfOrder
	a.Overlaps += b.Overlaps
	a.Conflicts += b.Conflicts
	a.Gaps += b.Gaps
	a.GapBytes += b.GapBytes
	a.BufferedPeak += b.BufferedPeak // an upper bound: the peaks of workers need not coincide
	a.DroppedBuffers += b.DroppedBuffers
	return a
}

func addAnalyze(a, b analyze.Stats) analyze.Stats {
	a.Connections += b.Connections
	a.HTTPConnections += b.HTTPConnections
	a.NonHTTP += b.NonHTTP
	a.Requests += b.Requests
	a.Responses += b.Responses
	a.Negotiations += b.Negotiations
	a.OrphanResponses += b.OrphanResponses
	a.ParseErrors += b.ParseErrors
	a.Gaps += b.Gaps
	a.Resyncs += b.Resyncs
	a.Tunnels += b.Tunnels
	return a
}

// item is one thing a worker decided, in the order it decided it: a
// record, or (rec nil) the retry-link event evs[ev] of its message. key
// places it among the items other workers decided in the same batch: the
// number of the packet being fed, or afterBatch for what the batch's
// clock tick decided.
type item struct {
	key uint64
	rec *analyze.Record
	ev  int32
}

const afterBatch = math.MaxUint64

// merger emits the workers' records and links 417s to retries that
// happened in another worker, with one analyze.RetryLinker fed every
// worker's events (see startMerger for their order). A 417 is held from
// its event until the linker decides (a retry without Expect, its window
// passed, too many waiting, the end), as a single Analyzer holds it.
type merger struct {
	all    bool
	emit   func(*analyze.Record)
	linker *analyze.RetryLinker[string]
	// held are the 417s the linker holds, with their record once it
	// came (nil before); decided the outcomes of those whose record has
	// not come yet, retryOf the 417 a request repeats until its record
	// comes.
	held    map[string]*analyze.Record
	decided map[string]analyze.RetryOutcome
	retryOf map[string]string
	// lateItems are the events of each worker's final flush, linked at
	// the end, with the records of the requests among them (lateReqs).
	lateItems [][]lateItem
	lateReqs  map[string]bool
}

type lateItem struct {
	rec *analyze.Record
	ev  analyze.LinkEvent
}

func newMerger(acfg analyze.Config, all bool, emit func(*analyze.Record), nw int) *merger {
	if acfg.RetryWindow == 0 {
		acfg.RetryWindow = 30 * time.Second // analyze's default
	}
	if emit == nil {
		emit = func(*analyze.Record) {}
	}
	m := &merger{all: all, emit: emit, held: map[string]*analyze.Record{}, decided: map[string]analyze.RetryOutcome{},
		retryOf: map[string]string{}, lateItems: make([][]lateItem, nw), lateReqs: map[string]bool{}}
	m.linker = analyze.NewRetryLinker(acfg.RetryWindow, acfg.MaxAwait, m.retryDecided)
	return m
}

// round takes one batch of every worker (batches[w] its messages, nil for
// a worker past its last batch), item by item in capture order: by key,
// then worker.
func (m *merger) round(batches [][]recMsg) {
	type cursor struct{ msg, i int }
	cur := make([]cursor, len(batches))
	head := func(w int) *item {
		c := &cur[w]
		for c.msg < len(batches[w]) && c.i == len(batches[w][c.msg].items) {
			c.msg, c.i = c.msg+1, 0
		}
		if c.msg == len(batches[w]) {
			return nil
		}
		return &batches[w][c.msg].items[c.i]
	}
	var clock time.Time
	for _, b := range batches {
		if len(b) > 0 && b[len(b)-1].now.After(clock) {
			clock = b[len(b)-1].now
		}
	}
	for {
		best := -1
		var bi *item
		for w := range batches {
			if it := head(w); it != nil && (bi == nil || it.key < bi.key) {
				best, bi = w, it
			}
		}
		if best < 0 {
			break
		}
		msg := &batches[best][cur[best].msg]
		cur[best].i++
		if bi.rec != nil {
			m.record(bi.rec)
		} else {
			m.event(&msg.evs[bi.ev])
		}
	}
	if !clock.IsZero() {
		m.linker.Advance(clock)
	}
}

// late takes a message of a worker's final flush: records go on at once
// but for the requests whose events are among the flush's; events wait.
func (m *merger) late(msg recMsg) {
	for _, it := range msg.items {
		switch {
		case it.rec == nil:
			ev := msg.evs[it.ev]
			switch _, ok := m.held[ev.ID]; {
			case ev.Request:
				m.lateReqs[ev.ID] = true
			case !ev.End && !ok:
				m.held[ev.ID] = nil // its record, should it come first, waits
			}
			m.lateItems[msg.worker] = append(m.lateItems[msg.worker], lateItem{ev: ev})
		case m.lateReqs[it.rec.ID]:
			m.lateItems[msg.worker] = append(m.lateItems[msg.worker], lateItem{rec: it.rec})
		default:
			m.record(it.rec)
		}
	}
}

func (m *merger) event(ev *analyze.LinkEvent) {
	m.linker.Advance(ev.Now)
	if ev.End {
		m.linker.ClientClosed(ev.Conn, ev.Packet)
		return
	}
	if ev.Request {
		if orig := m.linker.Request(ev.ID, ev.Conn, ev.Identity, ev.At, ev.Expect, ev.First); orig != "" {
			m.retryOf[ev.ID] = orig
		}
		return
	}
	if _, ok := m.held[ev.ID]; !ok {
		m.held[ev.ID] = nil
	}
	m.linker.Rejected(ev.ID, ev.Conn, ev.Identity, ev.At, ev.ID)
}

func (m *merger) record(r *analyze.Record) {
	if orig, ok := m.retryOf[r.ID]; ok {
		delete(m.retryOf, r.ID)
		if r.RetryOf == nil {
			r.RetryOf = &orig
		}
	}
	if o, ok := m.decided[r.ID]; ok {
		delete(m.decided, r.ID)
		link(r, o)
	} else if h, ok := m.held[r.ID]; ok && h == nil {
		m.held[r.ID] = r
		return
	}
	m.out(r)
}

func (m *merger) retryDecided(id string, o analyze.RetryOutcome) {
	r, ok := m.held[id]
	delete(m.held, id)
	if !ok || r == nil {
		if o.RetriedBy != "" { // else the record, when it comes, is right as it is
			m.decided[id] = o
		}
		return
	}
	link(r, o)
	m.out(r)
}

func (m *merger) out(r *analyze.Record) {
	if r.Type == analyze.TypeExchange && !m.all {
		return
	}
	m.emit(r)
}

// finish links the events of the final flushes, in worker order, then
// releases every 417 still held.
func (m *merger) finish() {
	for w, items := range m.lateItems {
		for i := range items {
			if items[i].rec != nil {
				m.record(items[i].rec)
			} else {
				m.event(&items[i].ev)
			}
		}
		m.lateItems[w] = nil
	}
	m.linker.Flush()
	for id, r := range m.held { // a 417 the linker never saw: not expected
		if r != nil {
			m.out(r)
		}
		delete(m.held, id)
	}
}

// link records what came of a 417 another worker's Analyzer released at
// once, with the flags the Analyzer sets (RFC 9110 10.1.1): a retry
// without Expect turns no-retry-after-417 into retried-without-expect;
// one that asks for 100-continue again is named but leaves
// no-retry-after-417 set.
func link(orig *analyze.Record, o analyze.RetryOutcome) {
	if o.RetriedBy != "" {
		analyze.MarkRetried(orig, o.RetriedBy, o.WithoutExpect)
	}
}
