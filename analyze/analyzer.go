// Package analyze parses HTTP/1.1 from reassembled TCP streams, pairs
// requests with their interim and final responses, and judges every
// Expect negotiation. It never prints; records go to Config.Emit.
package analyze

import (
	"hash/maphash"
	"net"
	"strconv"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

// Config tunes the analysis. Zero values take the defaults.
type Config struct {
	// All builds records for requests without Expect too (type exchange).
	All bool
	// NoWaitUnder: a body sent this soon after the headers, before any
	// answer, was never held back (shorter than any client's timer).
	NoWaitUnder time.Duration
	// MaxHeaderBytes bounds one header block; larger is a parse error.
	MaxHeaderBytes int
	// HuntBudget bounds the bytes scanned for a first message start on a
	// side before the connection is judged not HTTP.
	HuntBudget int64
	// RetryWindow is how long after a 417 a retry is looked for.
	RetryWindow time.Duration
	// MaxAwait bounds the 417 negotiations held while their retry is
	// looked for (about 1 KiB each, with their exchange): beyond it the
	// oldest is released as never retried (Stats.RetryWaitsDropped), so
	// that a flood of 417s costs bounded memory. Zero: DefaultMaxAwait.
	MaxAwait int
	// Emit receives each record once it is decided.
	Emit func(*Record)
}

func (c *Config) defaults() {
	if c.NoWaitUnder == 0 {
		c.NoWaitUnder = 10 * time.Millisecond
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.HuntBudget == 0 {
		c.HuntBudget = 1 << 20
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = 30 * time.Second
	}
	if c.MaxAwait <= 0 {
		c.MaxAwait = DefaultMaxAwait
	}
	if c.Emit == nil {
		c.Emit = func(*Record) {}
	}
}

// Stats counts what the analysis saw.
type Stats struct {
	Connections     uint64 `json:"connections"`
	HTTPConnections uint64 `json:"http_connections"`
	NonHTTP         uint64 `json:"non_http_streams"`
	Requests        uint64 `json:"requests"`
	Responses       uint64 `json:"responses"`
	Negotiations    uint64 `json:"negotiations"`
	OrphanResponses uint64 `json:"orphan_responses"`
	ParseErrors     uint64 `json:"parse_errors"`
	Gaps            uint64 `json:"gaps"`
	Resyncs         uint64 `json:"resyncs"`
	Tunnels         uint64 `json:"tunnels"`
	// RetryWaitsDropped counts 417 negotiations released before the end of
	// their retry window because too many were waiting (Config.MaxAwait).
	RetryWaitsDropped uint64 `json:"retry_waits_dropped"`
}

// Analyzer is a reassembly.StreamFactory: one per capture (or per
// worker shard; records carry everything needed to merge them).
type Analyzer struct {
	cfg   Config
	stats Stats
	now   time.Time // latest capture time seen: the only clock
	// 417'd negotiations waiting for their retry, by a hash of the
	// request's identity (see slotOf); a list may mix identities whose
	// hashes collide, so readers compare them (sameRequest).
	await map[uint64][]*exchange
	seed  maphash.Seed
	// awaitList holds the waiting negotiations in order of their 417, for
	// expiry; a slot is nil once its negotiation was retried. awaitBase is
	// the sequence number of awaitList[0] (exchange.awaitSeq indexes it),
	// awaiting the number of non-nil slots.
	awaitList []*exchange
	awaitBase int
	awaiting  int
	lastErr   error
}

// DefaultMaxAwait is Config.MaxAwait's default.
const DefaultMaxAwait = 1 << 13

// New returns an Analyzer.
func New(cfg Config) *Analyzer {
	cfg.defaults()
	return &Analyzer{cfg: cfg, await: map[uint64][]*exchange{}, seed: maphash.MakeSeed()}
}

// Stats returns the counts so far.
func (a *Analyzer) Stats() Stats { return a.stats }

// LastParseError returns the most recent parse error, for a warning line.
func (a *Analyzer) LastParseError() error { return a.lastErr }

// New implements reassembly.StreamFactory. The parser state is made only
// when the connection carries something besides its handshake, so that a
// flood of SYNs costs a small conn per tracked connection.
func (a *Analyzer) New(info reassembly.ConnInfo) reassembly.Stream {
	a.stats.Connections++
	c := &conn{a: a, firstPacket: info.FirstPacket, handshake: info.Handshake,
		ipA: info.A.Addr().As16(), portA: info.A.Port(), is4A: info.A.Addr().Is4(),
		ipB: info.B.Addr().As16(), portB: info.B.Port(), is4B: info.B.Addr().Is4()}
	if info.Handshake {
		c.rolesKnown = true
		c.client = reassembly.SideA
	}
	budget := a.cfg.HuntBudget
	if info.Handshake {
		// Seen from its first byte, an HTTP connection starts with a message
		// or after a short prefix (SOCKS, PROXY protocol): TLS and other
		// protocols are given up after this much instead of a full budget.
		budget = min(budget, handshakeHuntBudget)
	}
	c.parkedBudget = [2]int64{budget, budget}
	return c
}

// handshakeHuntBudget bounds hunting on a connection seen from its SYN.
const handshakeHuntBudget = 16 << 10

// Flush ends the analysis: negotiations still waiting for a retry are
// emitted as never retried. Call it after the assembler's FlushAll.
func (a *Analyzer) Flush() {
	clear(a.await)
	for i, e := range a.awaitList {
		// Each exchange is let go as its record is made: the records
		// need not wait in memory beside all the exchanges.
		a.awaitList[i] = nil
		if e != nil && e.waitingRetry {
			e.waitingRetry = false
			a.release(e)
		}
	}
	a.awaitBase += len(a.awaitList)
	a.awaitList = nil
	a.awaiting = 0
}

func (a *Analyzer) tick(at time.Time) {
	if at.After(a.now) {
		a.now = at
	}
	// Expire retry waits by capture time.
	a.expireAwait()
}

// expireAwait releases, oldest first, the waiting negotiations whose
// retry window has passed, and the oldest beyond Config.MaxAwait.
func (a *Analyzer) expireAwait() {
	for len(a.awaitList) > 0 {
		e := a.awaitList[0]
		if e != nil && a.awaiting <= a.cfg.MaxAwait && a.now.Sub(e.final.At) < a.cfg.RetryWindow {
			break
		}
		a.awaitList[0] = nil
		a.awaitList = a.awaitList[1:]
		a.awaitBase++
		if e == nil {
			continue
		}
		if a.awaiting > a.cfg.MaxAwait {
			a.stats.RetryWaitsDropped++
		}
		a.awaiting--
		e.waitingRetry = false
		a.dropAwait(e)
		a.release(e)
	}
}

// slotOf hashes the identity of "the same request" for linking a retry
// to its 417: client address, method, Host and target. A hash is an
// 8-byte map key that costs no allocation, in a map that churns through
// as many identities as there are clients.
func (a *Analyzer) slotOf(c *conn, rh *requestHead) uint64 {
	var h maphash.Hash
	h.SetSeed(a.seed)
	ip := c.clientAddr().Addr().As16()
	h.Write(ip[:])
	h.WriteString(rh.method)
	h.WriteByte(0)
	h.WriteString(rh.h.host)
	h.WriteByte(0)
	h.WriteString(rh.target)
	return h.Sum64()
}

// sameRequest reports whether request rh on c has the identity of e's.
func sameRequest(c *conn, rh *requestHead, e *exchange) bool {
	return rh.method == e.head.method && rh.target == e.head.target && rh.h.host == e.head.h.host &&
		c.clientAddr().Addr() == e.conn.clientAddr().Addr()
}

// noteRequest links a new request to an earlier 417 of the same request.
func (a *Analyzer) noteRequest(c *conn, e *exchange) {
	if len(a.await) == 0 {
		return
	}
	k := a.slotOf(c, e.head)
	list := a.await[k]
	for i, orig := range list {
		if orig == e || !orig.waitingRetry || orig.final.At.After(e.headersEnd) || !sameRequest(c, e.head, orig) {
			continue
		}
		orig.retriedBy = e.id
		e.retryOf = orig.id
		if e.head.h.expect != "" {
			// Sent again with Expect: a retry, but not the one RFC 9110
			// 10.1.1 asks for; keep waiting for one without Expect.
			return
		}
		orig.retriedWithoutExpect = true
		orig.waitingRetry = false
		a.awaitList[orig.awaitSeq-a.awaitBase] = nil
		a.awaiting--
		a.await[k] = append(list[:i:i], list[i+1:]...)
		if len(a.await[k]) == 0 {
			delete(a.await, k)
		}
		a.release(orig)
		return
	}
}

func (a *Analyzer) addAwait(c *conn, e *exchange) {
	e.waitingRetry = true
	k := a.slotOf(c, e.head)
	a.await[k] = append(a.await[k], e)
	e.awaitSeq = a.awaitBase + len(a.awaitList)
	a.awaitList = append(a.awaitList, e)
	a.awaiting++
	if a.awaiting > a.cfg.MaxAwait {
		a.expireAwait()
	}
}

func (a *Analyzer) dropAwait(e *exchange) {
	k := a.slotOf(e.conn, e.head)
	list := a.await[k]
	for i, x := range list {
		if x == e {
			a.await[k] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(a.await[k]) == 0 {
		delete(a.await, k)
	}
}

// release emits a retired exchange once nothing more can change it.
func (a *Analyzer) release(e *exchange) {
	if !e.retired || e.waitingRetry || e.emitted {
		return
	}
	e.emitted = true
	if r := e.record(); r != nil {
		a.cfg.Emit(r)
	}
}

// hostPort formats an endpoint as net.JoinHostPort does ("[::1]:80").
func hostPort(ap interface {
	String() string
}) string {
	return ap.String()
}

func joinHostPort(ip string, port uint16) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}
