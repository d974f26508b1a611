package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/netip"
	"slices"
	"strings"
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
// one core. So connections are sharded by 4-tuple and the merger links
// what the workers could not: workers analyze with All (plain exchanges
// are retry candidates; the merger drops them unless the caller asked
// for All), a 417 negotiation a worker released as never retried is held
// by the merger, and at the end it is linked to the earliest request with
// the same identity that ended its headers within RetryWindow after the
// 417 (and was not a retry already), as the Analyzer does within one
// worker, with the same flags and a fresh diagnosis.
const (
	batchSegs        = 256
	batchArena       = 512 << 10
	batchesPerWorker = 8
)

type batch struct {
	segs  []capture.Segment
	arena []byte
	now   time.Time // reader's capture time when the batch was sent
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
type sharding struct{ shards, workers int }

func shardingFor(rcfg reassembly.Config, nw int) sharding {
	return sharding{reassembly.Shards(rcfg.MaxConns), nw}
}

func (s sharding) of(src, dst netip.AddrPort) int {
	return reassembly.ShardOf(src, dst, s.shards) % s.workers
}

// recMsg carries a worker's records (and, when done, its final state) to
// the merger.
type recMsg struct {
	worker int
	recs   []*analyze.Record
	warns  []error
	end    bool // the last message of a batch
	// flush marks what a worker decides after its last batch (the final
	// flush, and done): an ordered merger takes it as it comes.
	flush bool
	done  bool
	asm   reassembly.Stats
	an    analyze.Stats
	err   error
}

type worker struct {
	id    int
	in    chan *batch
	free  chan *batch
	out   chan<- recMsg
	asm   *reassembly.Assembler
	an    *analyze.Analyzer
	recs  []*analyze.Record
	warns []error
	now   time.Time

	lastParseErr error
	flushing     bool // past the last batch: records go out marked flush
	// stats is a snapshot for Progress, guarded by mu.
	mu    *sync.Mutex
	stats *analyze.Stats
}

// feed adds one segment, keeping the first parse errors as warnings.
func (w *worker) feed(s *capture.Segment) {
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
	w.out <- recMsg{worker: w.id, recs: w.recs, warns: w.warns, end: true}
	w.recs, w.warns = nil, nil
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
			w.asm.FlushAll(*last)
			w.an.Flush()
		}()
		w.out <- recMsg{worker: w.id, recs: w.recs, warns: w.warns, done: true, asm: w.asm.Stats(), an: w.an.Stats(), err: perr}
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
			w.asm.Add(&tick)
		}
		b.reset()
		w.free <- b
		w.handOver()
	}
}

func runSharded(ctx context.Context, src capture.Source, opt Options, nw int) (res *Result, err error) {
	res = &Result{}
	acfg := opt.Analyze
	userAll := acfg.All
	userEmit := acfg.Emit
	acfg.All = true // plain exchanges are retry candidates for the merger
	rcfg := shareLimits(opt.Reassembly, nw)
	sh := shardingFor(rcfg, nw)

	ws := newWorkerSet(nw, acfg, rcfg)
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
	warnings, wErr := startMerger(out, nw, false, acfg.RetryWindow, userAll, userEmit, res, mergeDone)

	warn := func(e error) {
		res.Warnings = append(res.Warnings, e.Error())
		if opt.Warn != nil {
			opt.Warn(e)
		}
	}
	send := func(i int, now time.Time) {
		b := cur[i]
		b.now = now
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
					send(i, last)
				}
				continue
			}
			n++
			if res.First.IsZero() || seg.Time.Before(res.First) {
				res.First = seg.Time
			}
			i := sh.of(seg.Src, seg.Dst)
			if !cur[i].add(seg) {
				send(i, last)
				cur[i].add(seg)
			}
			if len(cur[i].segs) == batchSegs {
				send(i, last)
			}
			if opt.Progress != nil && n&4095 == 0 {
				opt.Progress(src.Stats(), ws.snapshot())
			}
		}
	}()
	for i, w := range workers {
		b := cur[i]
		b.now = last
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

// recsPerMsg is the most records a worker holds before it sends them to
// the merger.
const recsPerMsg = 256

// workerSet is the workers of one sharded run, each with its own
// assembler and analyzer, and the snapshot of their counts for Progress.
type workerSet struct {
	out     chan recMsg
	mu      sync.Mutex
	stats   []analyze.Stats
	workers []*worker
}

func newWorkerSet(nw int, acfg analyze.Config, rcfg reassembly.Config) *workerSet {
	ws := &workerSet{out: make(chan recMsg, nw*4), stats: make([]analyze.Stats, nw), workers: make([]*worker, nw)}
	for i := range ws.workers {
		w := &worker{id: i, out: ws.out, mu: &ws.mu, stats: &ws.stats[i]}
		cfg := acfg
		cfg.MaxAwait = shareAwait(acfg.MaxAwait, nw)
		cfg.Emit = func(r *analyze.Record) {
			w.recs = append(w.recs, r)
			// The final flush decides the records of every connection
			// still open and every 417 still waiting at once: sent in
			// parts, they do not all wait in memory for the last one.
			if len(w.recs) >= recsPerMsg {
				w.out <- recMsg{worker: w.id, recs: w.recs, flush: w.flushing}
				w.recs = nil
			}
		}
		w.an = analyze.New(cfg)
		w.asm = reassembly.NewAssembler(w.an, rcfg)
		ws.workers[i] = w
	}
	return ws
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

// shareAwait divides the 417s held for a retry among nw workers, as
// shareLimits does the reassembly limits: the bound is on the process.
// The merger still links a 417 a worker released early to a retry it
// sees within its own bounds (maxCands, maxPending).
func shareAwait(n, nw int) int {
	if n <= 0 {
		n = analyze.DefaultMaxAwait
	}
	return max(n/nw, 1024)
}

// startMerger starts the goroutine that takes the records of nw workers
// from out, links retries across workers and emits them, and adds up the
// workers' final counts in res. It closes done when every worker has
// finished; only then may the warnings and the first worker error be read.
// startMerger merges the workers' records. ordered, when every worker
// takes every batch (the mapped paths), makes the merger take the batches
// in turn, worker 0's first batch, worker 1's, ..., then every worker's
// second: what it links and when it gives up waiting for a retry then
// depends on the capture, not on how the workers ran (messages are
// queued until their turn; a worker is at most the batches in flight
// ahead of another). What workers decide in their final flush, which can
// be any number of records, is taken as it comes: in turn, one worker's
// flush would wait in memory for another's, or, held back, run after it
// instead of beside it (a capture with a million connections open: 57
// instead of 37 s). Streamed runs hand each worker only its own batches,
// so a worker without traffic would hold the others up: their records are
// taken as they come.
func startMerger(out <-chan recMsg, nw int, ordered bool, window time.Duration, all bool, emit func(*analyze.Record), res *Result, done chan<- struct{}) (*[]error, *error) {
	m := newMerger(window, all, emit)
	warnings := new([]error)
	wErr := new(error)
	take := func(msg recMsg) {
		for _, r := range msg.recs {
			m.add(r)
		}
		*warnings = append(*warnings, msg.warns...)
		if msg.done {
			res.Reassembly = addReasm(res.Reassembly, msg.asm)
			res.Analyze = addAnalyze(res.Analyze, msg.an)
			if msg.err != nil && *wErr == nil {
				*wErr = msg.err
			}
		}
	}
	go func() {
		defer close(done)
		finished := 0
		if !ordered {
			for msg := range out {
				take(msg)
				if msg.done {
					if finished++; finished == nw {
						m.finish()
						return
					}
				}
			}
			return
		}
		queued := make([][]recMsg, nw)
		over := make([]bool, nw) // past its last batch
		turn := 0
		for msg := range out {
			queued[msg.worker] = append(queued[msg.worker], msg)
			for moved := true; moved; {
				moved = false
				for w := range queued { // flushes as they come
					for len(queued[w]) > 0 && (queued[w][0].flush || queued[w][0].done) {
						take(queued[w][0])
						if queued[w][0].done {
							finished++
						}
						queued[w] = queued[w][1:]
						over[w] = true
						moved = true
					}
				}
				for k := 0; k < nw && over[turn]; k++ {
					turn = (turn + 1) % nw
				}
				if over[turn] {
					continue // every worker is past its last batch
				}
				q := queued[turn]
				i := slices.IndexFunc(q, func(m recMsg) bool { return m.end })
				if i < 0 {
					continue // the worker whose turn it is has not ended its batch
				}
				for _, m := range q[:i+1] {
					take(m)
				}
				queued[turn] = slices.Delete(q, 0, i+1)
				turn = (turn + 1) % nw
				moved = true
			}
			if finished == nw {
				m.finish()
				return
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

// retryKey is the identity of "the same request", as the Analyzer keys
// it (client IP, method, Host, target), hashed: the merger keeps one per
// candidate, and a hash is 8 bytes where the strings were about 100.
type retryKey uint64

func keyOfRecord(r *analyze.Record) retryKey {
	ip := r.Conn.Client
	if ap, err := netip.ParseAddrPort(ip); err == nil {
		ip = ap.Addr().String()
	}
	h := fnv.New64a()
	for _, s := range [...]string{ip, r.Request.Method, r.Request.Host, r.Request.Target} {
		h.Write([]byte(s))
		h.Write([]byte{0}) // no field can run into the next
	}
	return retryKey(h.Sum64())
}

// retryCand is what the merger remembers of a record that may turn out
// to be the retry of a 417 another worker saw: not the record, which is
// emitted at once and may be large.
type retryCand struct {
	at       int64 // the request's headers end, Unix nanoseconds
	key      retryKey
	id       string
	rec      *analyze.Record // set while the record itself is held (a pending 417)
	noExpect bool
	linked   bool
}

// merger emits the workers' records and links 417s to retries that
// happened in another worker.
//
// A retry is often emitted before the 417 it repeats is released (a
// worker holds a 417 for the retry window): then only the 417 learns of
// the link (RetriedBy); the retry's RetryOf stays nil in what was
// emitted. A consumer that needs both ends completes them from the 417s.
type merger struct {
	window time.Duration
	all    bool
	emit   func(*analyze.Record)
	// cands are records not (yet) known as a retry, by identity.
	cands map[retryKey][]*retryCand
	// pending are 417 negotiations released as never retried.
	pending []*analyze.Record
	maxSeen time.Time
	adds    int
	// minAt is at most the earliest candidate's at, and scanned the adds
	// at the last scan of cands by prune: a scan costs a pass over every
	// identity remembered, so it is made only when some candidate may be
	// old enough to forget and not more often than once per candidate
	// added since (it was a third of the merger's time on a capture of
	// 237 000 records, where none ever was old enough).
	minAt   int64
	scanned int
	// fifo bounds cands: the oldest candidates are forgotten beyond
	// maxCands (a flood of requests degrades cross-worker linking, not memory).
	fifo []*retryCand
}

// maxCands bounds the retry candidates the merger remembers (about 90
// bytes each, 6 MiB in all), and maxPending the 417s it holds for a retry in another
// worker: beyond it the older half is linked with the candidates seen so
// far and emitted (a flood of 417s degrades cross-worker linking, not
// memory).
var (
	maxCands   = 1 << 16
	maxPending = 1 << 13
)

func newMerger(window time.Duration, all bool, emit func(*analyze.Record)) *merger {
	if window == 0 {
		window = 30 * time.Second // analyze's default
	}
	if emit == nil {
		emit = func(*analyze.Record) {}
	}
	return &merger{window: window, all: all, emit: emit, cands: map[retryKey][]*retryCand{}}
}

func unretried417(r *analyze.Record) bool {
	return r.Type == analyze.TypeNegotiation && r.Final != nil && r.Final.Status == 417 && r.RetriedBy == nil && r.Request.Expect != ""
}

func (m *merger) add(r *analyze.Record) {
	if r.Type != analyze.TypeNegotiation && r.Type != analyze.TypeExchange {
		m.out(r)
		return
	}
	if r.HeadersEndAt.After(m.maxSeen) {
		m.maxSeen = r.HeadersEndAt
	}
	pending := unretried417(r)
	if r.RetryOf == nil {
		k := keyOfRecord(r)
		c := &retryCand{at: r.HeadersEndAt.UnixNano(), key: k, id: r.ID, noExpect: r.Request.Expect == ""}
		if len(m.cands) == 0 || c.at < m.minAt {
			m.minAt = c.at
		}
		if pending {
			c.rec = r
		}
		m.cands[k] = append(m.cands[k], c)
		m.fifo = append(m.fifo, c)
		if len(m.fifo) > maxCands {
			m.forget(m.fifo[0])
			m.fifo[0] = nil
			m.fifo = m.fifo[1:]
		}
	}
	if pending {
		m.pending = append(m.pending, r) // emitted by prune or finish
		if len(m.pending) > maxPending {
			m.resolveOldest(len(m.pending) / 2)
		}
	} else {
		m.out(r)
	}
	if m.adds++; m.adds&4095 == 0 {
		m.prune()
	}
}

func (m *merger) out(r *analyze.Record) {
	if r.Type == analyze.TypeExchange && !m.all {
		return
	}
	m.emit(r)
}

// prune forgets candidates too old for any 417 still to come: a worker
// releases a never-retried 417 once its capture time passed the 417 by
// the retry window, and workers run close together in capture time.
func (m *merger) prune() {
	// 417s old enough that every retry must have been seen are linked and
	// emitted now, so that a long (live) run does not hold them to the end.
	if len(m.pending) > 0 && m.pending[0].Final.At.Before(m.maxSeen.Add(-2*m.window)) {
		old := m.pending
		m.pending = nil
		var keep []*analyze.Record
		for _, r := range old {
			if r.Final.At.Before(m.maxSeen.Add(-2 * m.window)) {
				m.pending = append(m.pending, r)
			} else {
				keep = append(keep, r)
			}
		}
		m.resolve()
		m.pending = keep
	}
	limit := m.maxSeen.Add(-3 * m.window)
	if limit.UnixNano() <= m.minAt || m.adds-m.scanned < len(m.cands) {
		return
	}
	m.scanned = m.adds
	// The identities of the pending 417s, made once: a scan of pending
	// per key would cost maxPending hashes for every identity remembered.
	pending := make(map[retryKey]bool, len(m.pending))
	for _, r := range m.pending {
		pending[keyOfRecord(r)] = true
	}
	m.minAt = math.MaxInt64
	for k, list := range m.cands {
		i := 0
		for i < len(list) && list[i].at < limit.UnixNano() && !pending[k] {
			i++
		}
		if i == len(list) {
			delete(m.cands, k)
			continue
		} else if i > 0 {
			m.cands[k] = slices.Clone(list[i:])
		}
		for _, c := range list[i:] {
			m.minAt = min(m.minAt, c.at)
		}
	}
	if len(m.cands) == 0 {
		m.fifo = nil
	}
}

// resolveOldest links and emits the n pending 417s with the earliest 417.
func (m *merger) resolveOldest(n int) {
	slices.SortFunc(m.pending, func(a, b *analyze.Record) int {
		if c := a.Final.At.Compare(b.Final.At); c != 0 {
			return c
		}
		if c := a.HeadersEndAt.Compare(b.HeadersEndAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	keep := slices.Clone(m.pending[n:])
	m.pending = m.pending[:n]
	m.resolve()
	m.pending = keep
}

func (m *merger) forget(c *retryCand) {
	list := m.cands[c.key]
	if i := slices.Index(list, c); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(m.cands, c.key)
	} else {
		m.cands[c.key] = list
	}
}

// finish links the pending 417s, in the order of their 417, each to the
// earliest candidate (by headers end, then id), and emits them.
func (m *merger) finish() {
	m.resolve()
	clear(m.cands)
}

func (m *merger) resolve() {
	byTime := func(a, b *retryCand) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	}
	slices.SortFunc(m.pending, func(a, b *analyze.Record) int {
		if c := a.Final.At.Compare(b.Final.At); c != 0 {
			return c
		}
		if c := a.HeadersEndAt.Compare(b.HeadersEndAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	for _, list := range m.cands {
		slices.SortFunc(list, byTime)
	}
	for _, orig := range m.pending {
		for _, c := range m.cands[keyOfRecord(orig)] {
			if final := orig.Final.At.UnixNano(); c.id == orig.ID || c.linked || c.at < final || c.at-final >= int64(m.window) {
				continue
			}
			link(orig, c)
			break
		}
		m.out(orig)
	}
	m.pending = nil
}

// link records that c repeated the request orig got a 417 for, with the
// flags the Analyzer sets (RFC 9110 10.1.1): a retry without Expect turns
// no-retry-after-417 into retried-without-expect; one that asks for
// 100-continue again is linked but leaves no-retry-after-417 set.
func link(orig *analyze.Record, c *retryCand) {
	id, cid := orig.ID, c.id
	orig.RetriedBy = &cid
	c.linked = true
	if c.rec != nil { // not emitted yet
		c.rec.RetryOf = &id
	}
	if c.noExpect {
		if i := slices.Index(orig.Flags, analyze.FlagNoRetryAfter417); i >= 0 {
			orig.Flags[i] = analyze.FlagRetriedWithoutExpect
		} else {
			orig.Flags = append(orig.Flags, analyze.FlagRetriedWithoutExpect)
		}
	}
	orig.Diagnosis = analyze.Diagnose(orig)
}
