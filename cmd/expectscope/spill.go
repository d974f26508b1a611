package main

import (
	"bufio"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/expectscope/expectscope/analyze"
)

// spillRunBytes is how much encoded record data a spill buffers before
// it sorts the run and writes it out.
const spillRunBytes = 4 << 20

// spillHeld is how many records a spill keeps as they are before it
// writes any to disk: most captures have fewer, and encoding and decoding
// them again costs more than reading the capture (a record is 1-3 KiB).
const spillHeld = 4096

// spillEntry is one buffered record: its sort key and either the record
// itself (held) or its JSON.
type spillEntry struct {
	sec      int64
	nsec     int32
	id       string
	seq      uint64 // emit order
	rec      *analyze.Record
	off, end int // in spill.buf when rec is nil
	leg      legInfo
}

// legInfo is what decides whether a record may be a leg of a proxied
// request (analyze.Correlate): see candidates.
type legInfo struct {
	clientHost, serverHost, server string
	xff, xrid                      string
	// interim is true for a record that got a 100 or a 417: with a
	// proxy's Via or Server, or from a proven proxy, it is a one-leg hop.
	interim, named bool
}

// spillRun is one sorted run in the records file.
type spillRun struct{ off, size int64 }

// spill keeps the records of a run on disk, in sorted runs, so that read
// holds a bounded number of them whatever the size of the capture. Up to
// spillHeld records are held in memory instead, and if no more come they
// never go to disk. Emit may be called from several goroutines.
type spill struct {
	mu sync.Mutex
	// held is true while every record is in entries as it came.
	held    bool
	recs    *os.File // runs of JSON lines
	legs    *os.File // legDesc of every record, in run order
	legsW   *bufio.Writer
	recsOff int64
	buf     []byte
	entries []spillEntry
	runs    []spillRun
	seq     uint64
	n       int
	err     error
	// serverHosts are the hosts of every server seen: only a record whose
	// client is one of them (or that names its origin) can be an upstream leg.
	serverHosts map[string]bool
	// mayBeLeg is false while no record can be a leg for candidates: none
	// forwarded (X-Forwarded-For, X-Request-ID), no 100 or 417 naming an
	// intermediary, and no client host that is also a server's. Client
	// hosts are remembered as bits of clientBits (a Bloom filter of one
	// hash): a false match costs candidates' passes, not a wrong answer.
	mayBeLeg   bool
	clientBits *[1 << 14]uint64
	seed       maphash.Seed
	enc        recEncoder
	order      []int32 // for sortedOrder
}

func newSpill() (*spill, error) {
	recs, err := os.CreateTemp("", "expectscope-records-*")
	if err != nil {
		return nil, err
	}
	os.Remove(recs.Name()) // gone when closed, even if we are killed
	legs, err := os.CreateTemp("", "expectscope-legs-*")
	if err != nil {
		recs.Close()
		return nil, err
	}
	os.Remove(legs.Name())
	return &spill{held: true, recs: recs, legs: legs, legsW: bufio.NewWriterSize(legs, 64<<10), serverHosts: map[string]bool{},
		clientBits: new([1 << 14]uint64), seed: maphash.MakeSeed()}, nil
}

// Close releases the temporary files.
func (s *spill) Close() {
	s.recs.Close()
	s.legs.Close()
}

// hostOf is the host of an endpoint, as analyze.Correlate takes it.
func hostOf(ep string) string {
	h, _, err := net.SplitHostPort(ep)
	if err != nil {
		return ep
	}
	return h
}

// Emit stores one record; use it as analyze.Config.Emit.
func (s *spill) Emit(r *analyze.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	e := spillEntry{sec: r.HeadersEndAt.Unix(), nsec: int32(r.HeadersEndAt.Nanosecond()), id: r.ID, seq: s.seq}
	if s.held && len(s.entries) == spillHeld {
		if s.err = s.unhold(); s.err != nil {
			return
		}
	}
	if s.held {
		e.rec = r
	} else if s.err = s.encode(&e, r); s.err != nil {
		return
	}
	s.seq++
	s.n++
	e.leg = legInfo{clientHost: hostOf(r.Conn.Client), serverHost: hostOf(r.Conn.Server), server: r.Conn.Server,
		xff: r.Request.XForwardedFor, xrid: r.Request.XRequestID}
	got417 := r.Final != nil && r.Final.Status == 417
	got100 := false
	for _, i := range r.Interim {
		got100 = got100 || i.Status == 100
	}
	e.leg.interim = got417 || got100
	// candidates looks at named only for a record with an interim.
	e.leg.named = e.leg.interim && r.Final != nil && (r.Final.Via != "" || analyze.ProxyProduct(r.Final.Server) != "")
	if !s.serverHosts[e.leg.serverHost] {
		s.serverHosts[e.leg.serverHost] = true
		s.mayBeLeg = s.mayBeLeg || s.clientSeen(e.leg.serverHost, false)
	}
	s.clientSeen(e.leg.clientHost, true)
	s.mayBeLeg = s.mayBeLeg || s.serverHosts[e.leg.clientHost] ||
		e.leg.xff != "" || e.leg.xrid != "" || e.leg.interim && e.leg.named
	s.entries = append(s.entries, e)
	if len(s.buf) >= spillRunBytes {
		s.err = s.flushRun()
	}
}

// encode appends the encoding of r (appendRecord) to buf for e.
func (s *spill) encode(e *spillEntry, r *analyze.Record) error {
	e.off = len(s.buf)
	s.buf = s.enc.append(s.buf, r)
	e.end = len(s.buf)
	e.rec = nil
	return nil
}

// unhold encodes the held records: from now on records go to disk.
func (s *spill) unhold() error {
	if !s.held {
		return nil
	}
	s.held = false
	// A run fills buf to spillRunBytes and a record more: grown by
	// doubling it would be copied some 20 times on the way.
	s.buf = make([]byte, 0, spillRunBytes+64<<10)
	for i := range s.entries {
		if err := s.encode(&s.entries[i], s.entries[i].rec); err != nil {
			return err
		}
	}
	return nil
}

func compareKey(asec int64, ansec int32, aid string, bsec int64, bnsec int32, bid string) int {
	if c := cmp.Compare(asec, bsec); c != 0 {
		return c
	}
	if c := cmp.Compare(ansec, bnsec); c != 0 {
		return c
	}
	return strings.Compare(aid, bid)
}

// sortEntries sorts the buffered records as report.Sort does.
func (s *spill) sortEntries() {
	slices.SortFunc(s.entries, func(a, b spillEntry) int { return compareEntries(&a, &b) })
}

// compareEntries orders records as report.Sort does, then in emit order:
// a total order, so an unstable sort gives what a stable one would.
func compareEntries(a, b *spillEntry) int {
	if c := compareKey(a.sec, a.nsec, a.id, b.sec, b.nsec, b.id); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// sortedOrder is the order of the buffered records, sorted: indices are
// moved, not the entries (some 150 bytes each, sorting them in place was
// most of the time of writing a run).
func (s *spill) sortedOrder() []int32 {
	order := s.order[:0]
	for i := range s.entries {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(a, b int32) int { return compareEntries(&s.entries[a], &s.entries[b]) })
	s.order = order
	return order
}

// flushRun sorts the buffered records and writes them as a run.
func (s *spill) flushRun() error {
	if err := s.unhold(); err != nil {
		return err
	}
	if len(s.entries) == 0 {
		return nil
	}
	w := bufio.NewWriterSize(io.NewOffsetWriter(s.recs, s.recsOff), 256<<10)
	start := s.recsOff
	var hdr [3 * binary.MaxVarintLen64]byte
	for _, i := range s.sortedOrder() {
		e := &s.entries[i]
		if _, err := w.Write(s.buf[e.off:e.end]); err != nil {
			return err
		}
		// The leg descriptor: where the record is, its emit order, then
		// the strings and flags candidates looks at.
		n := binary.PutUvarint(hdr[:], uint64(s.recsOff))
		n += binary.PutUvarint(hdr[n:], uint64(e.end-e.off))
		n += binary.PutUvarint(hdr[n:], e.seq)
		s.legsW.Write(hdr[:n])
		for _, str := range []string{e.leg.clientHost, e.leg.serverHost, e.leg.server, e.leg.xff, e.leg.xrid} {
			n := binary.PutUvarint(hdr[:], uint64(len(str)))
			s.legsW.Write(hdr[:n])
			s.legsW.WriteString(str)
		}
		var fl byte
		if e.leg.interim {
			fl |= 1
		}
		if e.leg.named {
			fl |= 2
		}
		s.legsW.WriteByte(fl)
		s.recsOff += int64(e.end - e.off)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	s.runs = append(s.runs, spillRun{start, s.recsOff - start})
	s.buf = s.buf[:0]
	clear(s.entries)
	s.entries = s.entries[:0]
	return nil
}

// finish writes the last run; no Emit may follow.
func (s *spill) finish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		s.sortEntries() // entries stay: they are the records
		return s.err
	}
	if s.err == nil {
		s.err = s.flushRun()
	}
	if s.err == nil {
		s.err = s.legsW.Flush()
	}
	s.buf, s.entries = nil, nil
	if s.err != nil {
		return fmt.Errorf("spilling records to a temporary file: %w", s.err)
	}
	return nil
}

// legDesc is one record's entry in the legs file.
type legDesc struct {
	off, size, seq uint64
	rec            *analyze.Record // when held
	legInfo
}

// eachLeg calls fn for every record's descriptor.
func (s *spill) eachLeg(fn func(d *legDesc)) error {
	if s.held {
		for i := range s.entries {
			e := &s.entries[i]
			fn(&legDesc{seq: e.seq, rec: e.rec, legInfo: e.leg})
		}
		return nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.legs, 0, 1<<62), 64<<10)
	var d legDesc
	str := func() (string, error) {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return "", err
		}
		b := make([]byte, n)
		_, err = io.ReadFull(r, b)
		return string(b), err
	}
	for {
		var err error
		if d.off, err = binary.ReadUvarint(r); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if d.size, err = binary.ReadUvarint(r); err != nil {
			return err
		}
		if d.seq, err = binary.ReadUvarint(r); err != nil {
			return err
		}
		for _, p := range []*string{&d.clientHost, &d.serverHost, &d.server, &d.xff, &d.xrid} {
			if *p, err = str(); err != nil {
				return err
			}
		}
		fl, err := r.ReadByte()
		if err != nil {
			return err
		}
		d.interim, d.named = fl&1 != 0, fl&2 != 0
		fn(&d)
	}
}

// forwardedIPs lists the addresses an X-Forwarded-For names, trimmed as
// analyze.Correlate reads them.
func forwardedIPs(xff string) []string {
	var ips []string
	for f := range strings.SplitSeq(xff, ",") {
		ips = append(ips, strings.Trim(strings.TrimSpace(f), "[]\""))
	}
	return ips
}

// candidates returns, in emit order, the records that can take part in a
// hop of analyze.Correlate; the others cannot, so correlating these alone
// gives the same hops (but for Correlate's bound of 512 waiting legs per
// method and target, which now counts possible legs only). A record can be:
//
//   - an upstream leg only if its client's host is the host of a server
//     (sameHost), or it carries X-Forwarded-For or X-Request-ID;
//   - a downstream leg only if its server's host is the client host of
//     such an upstream leg, or its client is named in such an
//     X-Forwarded-For, or it carries X-Request-ID;
//   - a one-leg hop only if it got a 100 or 417 whose response names an
//     intermediary (Via, a proxy-only Server) or from a server that is
//     the downstream leg's server of some pair.
func (s *spill) candidates() ([]*analyze.Record, error) {
	if !s.mayBeLeg {
		return nil, nil // what the first pass below would find, known without it
	}
	upHosts := map[string]bool{}
	fwdIPs := map[string]bool{}
	isUp := func(d *legDesc) bool {
		return s.serverHosts[d.clientHost] || d.xff != "" || d.xrid != ""
	}
	anyUp, anyNamed := false, false
	err := s.eachLeg(func(d *legDesc) {
		anyNamed = anyNamed || d.interim && d.named
		if !isUp(d) {
			return
		}
		anyUp = true
		if s.serverHosts[d.clientHost] {
			upHosts[d.clientHost] = true
		}
		if d.xff != "" {
			for _, ip := range forwardedIPs(d.xff) {
				fwdIPs[ip] = true
			}
		}
	})
	if err != nil {
		return nil, err
	}
	isDown := func(d *legDesc) bool {
		return upHosts[d.serverHost] || fwdIPs[d.clientHost] || d.xrid != ""
	}
	if !anyUp && !anyNamed {
		// No leg can be upstream (so none downstream, and no proxy to
		// find), and no 100 or 417 names an intermediary: the usual
		// capture, spared two more passes over every leg.
		return nil, nil
	}
	proxies := map[string]bool{}
	if anyUp { // else no leg is downstream: isDown needs an upstream leg's host or X-Request-ID
		if err := s.eachLeg(func(d *legDesc) {
			if isDown(d) {
				proxies[d.server] = true
			}
		}); err != nil {
			return nil, err
		}
	}
	type at struct {
		off, size, seq uint64
		rec            *analyze.Record
	}
	var want []at
	if err := s.eachLeg(func(d *legDesc) {
		if isUp(d) || isDown(d) || d.interim && (d.named || proxies[d.server]) {
			want = append(want, at{d.off, d.size, d.seq, d.rec})
		}
	}); err != nil {
		return nil, err
	}
	slices.SortFunc(want, func(a, b at) int { return cmp.Compare(a.seq, b.seq) })
	recs := make([]*analyze.Record, 0, len(want))
	in := newInterner()
	for _, w := range want {
		if w.rec != nil {
			recs = append(recs, w.rec)
			continue
		}
		b := make([]byte, w.size)
		if _, err := s.recs.ReadAt(b, int64(w.off)); err != nil {
			return nil, err
		}
		n, k := binary.Uvarint(b)
		if k <= 0 || n != uint64(len(b)-k) {
			return nil, fmt.Errorf("spilled record at %d: bad length", w.off)
		}
		r, err := decodeRecordIn(b[k:], in)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// clientSeen reports whether host may have been a record's client host
// (set: and remembers that it was).
func (s *spill) clientSeen(host string, set bool) bool {
	h := maphash.String(s.seed, host) % (uint64(len(s.clientBits)) * 64)
	w, bit := &s.clientBits[h/64], uint64(1)<<(h%64)
	seen := *w&bit != 0
	if set {
		*w |= bit
	}
	return seen
}

// runReader reads one sorted run.
type runReader struct {
	r   *bufio.Reader
	cur *analyze.Record
	buf []byte
	in  *interner
}

func (rr *runReader) next() error {
	n, err := binary.ReadUvarint(rr.r)
	if err == io.EOF {
		rr.cur = nil
		return nil
	}
	if err != nil {
		return err
	}
	if cap(rr.buf) < int(n) {
		rr.buf = make([]byte, n)
	}
	b := rr.buf[:n]
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return fmt.Errorf("spilled record: %w", noEOF(err))
	}
	rr.cur, err = decodeRecordIn(b, rr.in)
	return err
}

// noEOF turns a clean end in the middle of a record into the truncation it is.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

type runHeap []*runReader

func (h runHeap) Len() int { return len(h) }
func (h runHeap) Less(i, j int) bool {
	a, b := h[i].cur, h[j].cur
	return compareKey(a.HeadersEndAt.Unix(), int32(a.HeadersEndAt.Nanosecond()), a.ID,
		b.HeadersEndAt.Unix(), int32(b.HeadersEndAt.Nanosecond()), b.ID) < 0
}
func (h runHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)   { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// errStop ends each early without an error.
var errStop = errors.New("stop")

// each calls fn for every record in report order (report.Sort), merging
// the runs; a record in patched is replaced by its patched copy. It can
// be called again for another pass.
func (s *spill) each(patched map[string]*analyze.Record, fn func(r *analyze.Record) error) error {
	var rl analyze.RetryLinks // see analyze.RetryLinks: retries seen by another worker
	visit := func(r *analyze.Record) error {
		if p := patched[r.ID]; p != nil {
			r = p
		}
		rl.Complete(r)
		return fn(r)
	}
	if s.held {
		for _, e := range s.entries {
			if err := visit(e.rec); err != nil {
				if err == errStop {
					return nil
				}
				return err
			}
		}
		return nil
	}
	h := make(runHeap, 0, len(s.runs))
	in := newInterner()
	for _, run := range s.runs {
		rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(s.recs, run.off, run.size), 16<<10), in: in}
		if err := rr.next(); err != nil {
			return err
		}
		if rr.cur != nil {
			h = append(h, rr)
		}
	}
	heap.Init(&h)
	for h.Len() > 0 {
		rr := h[0]
		if err := visit(rr.cur); err != nil {
			if err == errStop {
				return nil
			}
			return err
		}
		if err := rr.next(); err != nil {
			return err
		}
		if rr.cur == nil {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	return nil
}

// eachAhead is each with the reading back on a goroutine of its own, a
// few batches of records ahead of fn: decoding spilled records was most
// of the serial end of a run of many records (with two cores, 237 000
// records took 0.8 s to render, one core busy). With one core, or records
// held in memory, it is each.
func (s *spill) eachAhead(patched map[string]*analyze.Record, fn func(r *analyze.Record) error) error {
	if s.held || runtime.GOMAXPROCS(0) < 2 {
		return s.each(patched, fn)
	}
	const batchLen = 256
	batches := make(chan []*analyze.Record, 4)
	stop := make(chan struct{})
	var readErr error
	go func() {
		defer close(batches)
		send := func(b []*analyze.Record) bool {
			select {
			case batches <- b:
				return true
			case <-stop:
				return false
			}
		}
		b := make([]*analyze.Record, 0, batchLen)
		readErr = s.each(patched, func(r *analyze.Record) error {
			if b = append(b, r); len(b) == batchLen {
				if !send(b) {
					return errStop
				}
				b = make([]*analyze.Record, 0, batchLen)
			}
			return nil
		})
		if readErr == nil && len(b) > 0 {
			send(b)
		}
	}()
	var fnErr error
	for b := range batches {
		for _, r := range b {
			if fnErr != nil {
				break
			}
			if fnErr = fn(r); fnErr != nil {
				close(stop) // the reader stops; what it sent is drained
			}
		}
	}
	switch {
	case fnErr == errStop:
		return nil
	case fnErr != nil:
		return fnErr
	}
	return readErr
}
