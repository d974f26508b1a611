// Package analyze parses HTTP/1.1 from reassembled TCP streams, pairs
// requests with their interim and final responses, and judges every
// Expect negotiation. It never prints; records go to Config.Emit.
package analyze

import (
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
	// LinkEvents, when set, takes retry linking out of the Analyzer: it
	// receives every request and every 417 as a LinkEvent, in the order
	// they happen, for a RetryLinker that sees the events of several
	// Analyzers (the pipeline's workers); records are emitted unlinked,
	// a 417 as never retried (no-retry-after-417), at once.
	LinkEvents func(LinkEvent)
}

// LinkEvent is a request (Request), a 417 answering an Expect, or the
// client's close of a connection that had such a 417 (End: FIN or RST;
// Conn, Packet and Now are set), for a RetryLinker elsewhere
// (Config.LinkEvents).
type LinkEvent struct {
	Request bool
	End     bool
	Expect  bool   // the request asks for 100-continue
	First   bool   // the request is its connection's first
	Packet  uint64 // for End: the packet at which the client closed
	ID      string
	// Conn tells the request's connection apart from the others of the
	// capture (its first packet's number).
	Conn     uint64
	Identity RequestIdentity
	// At is when the request's headers ended, or the 417 came; Now the
	// Analyzer's capture clock then (the latest time it was given).
	At, Now time.Time
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
	// linker holds 417'd negotiations until their retry is known.
	linker  *RetryLinker[*exchange]
	lastErr error
	packet  uint64 // see AtPacket
	// hunted joins a side's held tail and its next bytes for hunting:
	// the side keeps only the tail that may still matter (see huntTail).
	hunted []byte
	// freeParses are parser states to reuse (see newParse).
	freeParses []*parse
}

// DefaultMaxAwait is Config.MaxAwait's default.
const DefaultMaxAwait = 1 << 13

// New returns an Analyzer.
func New(cfg Config) *Analyzer {
	cfg.defaults()
	a := &Analyzer{cfg: cfg}
	a.linker = NewRetryLinker(cfg.RetryWindow, cfg.MaxAwait, a.retryDecided)
	return a
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
func (a *Analyzer) Flush() { a.linker.Flush() }

func (a *Analyzer) tick(at time.Time) {
	if at.After(a.now) {
		a.now = at
	}
	if a.linker.Waiting() > 0 { // called for every segment: nothing to do, mostly
		a.linker.Advance(a.now) // retry waits expire by capture time
	}
}

// identityOf is the identity of request rh on c for retry linking.
func identityOf(c *conn, rh *requestHead) RequestIdentity {
	return RequestIdentity{Client: c.clientAddr().Addr(), Method: rh.method, Host: rh.h.host, Target: rh.target}
}

// noteRequest links a new request to an earlier 417 of the same request.
func (a *Analyzer) noteRequest(c *conn, e *exchange) {
	if a.cfg.LinkEvents != nil {
		a.cfg.LinkEvents(LinkEvent{Request: true, ID: e.id, Conn: c.firstPacket, Identity: identityOf(c, e.head), At: e.headersEnd, Now: a.now, Expect: e.head.h.expect != "", First: c.nreq == 1})
		return
	}
	if a.linker.Waiting() == 0 {
		return
	}
	e.retryOf = a.linker.Request(e.id, c.firstPacket, identityOf(c, e.head), e.headersEnd, e.head.h.expect != "", c.nreq == 1)
}

// addAwait holds a 417'd negotiation until its retry is known.
func (a *Analyzer) addAwait(c *conn, e *exchange) {
	c.refused = true
	if a.cfg.LinkEvents != nil {
		a.cfg.LinkEvents(LinkEvent{ID: e.id, Conn: c.firstPacket, Identity: identityOf(c, e.head), At: e.final.At, Now: a.now})
		return
	}
	e.waitingRetry = true
	a.linker.Rejected(e.id, c.firstPacket, identityOf(c, e.head), e.final.At, e)
}

// clientClosed tells the retry linker that the client of c, which had a
// 417, closed it at the current packet: a client that reconnects to
// repeat does so right after.
func (a *Analyzer) clientClosed(c *conn) {
	if a.cfg.LinkEvents != nil {
		a.cfg.LinkEvents(LinkEvent{End: true, Conn: c.firstPacket, Packet: a.packet, Now: a.now})
		return
	}
	a.linker.ClientClosed(c.firstPacket, a.packet)
}

// AtPacket tells the Analyzer the number of the packet its next calls
// come from (the retry linker compares when a client closed a connection
// with when another opened).
func (a *Analyzer) AtPacket(n uint64) { a.packet = n }

// retryDecided releases a 417'd negotiation with what came of its wait.
func (a *Analyzer) retryDecided(e *exchange, o RetryOutcome) {
	e.waitingRetry = false
	e.retriedBy, e.retriedWithoutExpect = o.RetriedBy, o.WithoutExpect
	if o.Dropped {
		a.stats.RetryWaitsDropped++
	}
	a.release(e)
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
