package analyze

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

// dirState is where a direction's parser stands.
type dirState uint8

const (
	stHead      dirState = iota // at a message boundary, reading a header block
	stHunt                      // looking for a message start (mid-stream, after a gap or garbage)
	stBody                      // inside a message body
	stPending                   // request only: headers done, body may or may not follow
	stTunnel                    // CONNECT/Upgrade: bytes are no longer HTTP
	stDead                      // not HTTP; ignore the rest
	stAmbiguous                 // request only: after an early final, a request head that may be the refused body (see ambiguity)
)

// dir is one direction's incremental parser state.
type dir struct {
	state  dirState
	buf    []byte // partial header block, or the unmatched tail while hunting
	body   bodyReader
	cur    *exchange // the exchange whose body is being read
	budget int64     // hunting bytes left before the side is judged not HTTP
	amb    *ambiguity
}

// ambiguity holds a request head that came right after an early final
// without close, until it is known whether the server reads those bytes
// as a new request or as the body it declined: having answered 417 and
// kept the connection, nginx reads and discards as many bytes as the
// refused request's Content-Length said, and HAProxy, given the client's
// repeat, sends it upstream as exactly that body. The two framings put
// the next message at different offsets; whichever comes first decides:
// a request line there confirms its framing, anything else the other.
// A response, a gap or the end before then settles it as a request.
type ambiguity struct {
	rh       *requestHead
	at       time.Time // when the head ended
	bodyAt   time.Time // the first byte after the head (zero: none yet)
	lastAt   time.Time
	head     int64 // the head's length
	off      int64 // bytes since the early final, the head included
	withheld int64 // the refused request's Content-Length: where its body would end
	own      int64 // where the head's own request would end
	peek     []byte
}

// exchange is one request and everything that answered it.
type exchange struct {
	conn       *conn
	id         string
	head       *requestHead
	headersEnd time.Time

	bodyMode     bodyMode
	bodyStart    time.Time
	bodyEnd      time.Time
	bodyWire     int64
	bodyData     int64
	bodyComplete bool
	reqDone      bool // the client is finished with this request's bytes

	interim []Interim
	final   *Final
	// earlyFinal: the final came before any body byte of a request that
	// declared one; afterEarly says what the client sent next.
	earlyFinal bool
	afterEarly string
	misframed  bool
	firstGap   time.Time

	retryOf, retriedBy   string
	retriedWithoutExpect bool
	waitingRetry         bool
	retired, emitted     bool
	connEnd              string
	endAt                time.Time
	// serverEnd is when the server had closed or reset as the exchange
	// retired (zero: it had not). Taken then, not when the record is
	// made: a 417 held for its retry is recorded later, and what the
	// connection did meanwhile must not change it (nor depend on whether
	// the retry was looked for here or by the merger of several workers).
	serverEnd time.Time
}

// conn follows one TCP connection: it implements reassembly.Stream.
//
// It is what every tracked connection costs the analysis (a flood of
// SYNs, or a million idle keep-alive connections), so it holds only what
// outlives a message, in 128 bytes: the parser state (parse, about 270
// bytes) is made on the first data, gap or end, and dropped again
// whenever both directions stand between messages with nothing held
// (park), or hunt with a few bytes held (a connection picked up in the
// middle of a body holds one), and when the connection closes (exchanges
// waiting for a retry after a 417 keep their conn); the parked fields
// keep the little of it that matters then. Endpoints are kept as plain bytes (a
// netip.AddrPort is 32 bytes with a pointer), without IPv6 zones, which
// addresses decoded from packets do not have.
type conn struct {
	a            *Analyzer
	p            *parse        // nil until needed, and while parked
	ends         *[2]time.Time // FIN or RST time of each side, once one ended
	firstPacket  uint64
	rtt          time.Duration
	parkedBudget [2]int64
	ipA, ipB     [16]byte // reassembly's sides A and B
	portA, portB uint16
	nreq         uint32
	parkedState  [2]dirState
	parkedTail   [2][maxParkedTail]byte // a short buf, while hunting
	parkedLen    [2]uint8
	client       reassembly.Side
	is4A, is4B   bool
	rolesKnown   bool
	handshake    bool // A's SYN was captured (reassembly.ConnInfo.Handshake)
	hasRTT       bool
	http         bool
	sawData      bool // some bytes were delivered
	closed       bool
	refused      bool // a 417 on it went to the retry linker
}

func endpointOf(ip [16]byte, port uint16, is4 bool) netip.AddrPort {
	a := netip.AddrFrom16(ip)
	if is4 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, port)
}

// ended is when side ended (FIN or RST), or the zero time.
func (c *conn) ended(side reassembly.Side) time.Time {
	if c.ends == nil {
		return time.Time{}
	}
	return c.ends[side]
}

// parse is the parser state of a connection in the middle of a message.
type parse struct {
	dirs  [2]dir // indexed by reassembly.Side
	queue []*exchange
}

// maxParkedTail is the longest buf a parked direction keeps.
const maxParkedTail = 7

// parser returns the parser state, restoring it if the connection was
// parked.
func (c *conn) parser() *parse {
	if c.p == nil {
		c.p = c.a.newParse()
		for i := range c.p.dirs {
			d := &c.p.dirs[i]
			d.state = c.parkedState[i]
			d.budget = c.parkedBudget[i]
			if n := c.parkedLen[i]; n > 0 {
				d.buf = append(d.buf[:0], c.parkedTail[i][:n]...)
				c.parkedLen[i] = 0
			}
		}
	}
	return c.p
}

// park drops the parser state when nothing in it would be missed: no
// exchange open, no more than maxParkedTail bytes held, no body being
// read.
func (c *conn) park() {
	p := c.p
	if p == nil || len(p.queue) > 0 {
		return
	}
	for i := range p.dirs {
		d := &p.dirs[i]
		if d.state == stBody || d.state == stPending || d.state == stAmbiguous || len(d.buf) > maxParkedTail || d.cur != nil {
			return
		}
	}
	for i := range p.dirs {
		c.parkedState[i] = p.dirs[i].state
		c.parkedBudget[i] = p.dirs[i].budget
		c.parkedLen[i] = uint8(copy(c.parkedTail[i][:], p.dirs[i].buf))
	}
	c.p = nil
	c.a.recycle(p)
}

// maxFreeParses bounds the parser states an Analyzer keeps for reuse.
const maxFreeParses = 256

// newParse returns a parser state, one given back by a connection that
// parked or closed if there is one: most connections park between
// messages, and making a new one each time they speak again was a tenth
// of the memory allocated on a capture of many short uploads.
func (a *Analyzer) newParse() *parse {
	if n := len(a.freeParses); n > 0 {
		p := a.freeParses[n-1]
		a.freeParses = a.freeParses[:n-1]
		return p
	}
	return &parse{}
}

// recycle takes back p, which nothing refers to any more, keeping its
// buffers unless they grew large.
func (a *Analyzer) recycle(p *parse) {
	if len(a.freeParses) == maxFreeParses {
		return
	}
	for i := range p.dirs {
		d := &p.dirs[i]
		buf, line := d.buf[:0], d.body.line[:0]
		if cap(buf) > 4<<10 {
			buf = nil
		}
		if cap(line) > 1<<10 {
			line = nil
		}
		*d = dir{buf: buf}
		d.body.line = line
	}
	clear(p.queue[:cap(p.queue)])
	p.queue = p.queue[:0]
	a.freeParses = append(a.freeParses, p)
}

// endpoints is the connection's Conn, its two strings cut from one.
func (c *conn) endpoints() Conn {
	var buf [2*len("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%zone]:65535") + 8]byte
	b := c.clientAddr().AppendTo(buf[:0])
	n := len(b)
	b = c.serverAddr().AppendTo(b)
	s := string(b)
	return Conn{Client: s[:n], Server: s[n:]}
}

func (c *conn) clientAddr() netip.AddrPort {
	if c.client == reassembly.SideA {
		return endpointOf(c.ipA, c.portA, c.is4A)
	}
	return endpointOf(c.ipB, c.portB, c.is4B)
}

func (c *conn) serverAddr() netip.AddrPort {
	if c.client == reassembly.SideA {
		return endpointOf(c.ipB, c.portB, c.is4B)
	}
	return endpointOf(c.ipA, c.portA, c.is4A)
}

func (c *conn) Handshake(rtt time.Duration) { c.rtt, c.hasRTT = rtt, true }

func (c *conn) Data(side reassembly.Side, b []byte, at time.Time) {
	c.a.tick(at)
	if c.closed {
		return
	}
	c.sawData = true
	if c.p == nil && (c.parkedState[side] == stDead || c.parkedState[side] == stTunnel) {
		// Bytes on a side given up (not HTTP) or tunnelled are ignored
		// (the parsers return at once): no need to unpark for them.
		return
	}
	c.parser()
	defer c.park()
	if !c.rolesKnown {
		c.huntRoles(side, b, at)
		return
	}
	if side == c.client {
		c.feedRequest(b, at)
	} else {
		c.feedResponse(b, at)
	}
}

// huntRoles decides who is the client when the handshake was not
// captured: the side whose bytes start a request (or the other side of
// the one whose bytes start a response).
func (c *conn) huntRoles(side reassembly.Side, b []byte, at time.Time) {
	d := &c.p.dirs[side]
	data, off, isReq, ok := c.hunt(d, b, true, true)
	if !ok {
		return
	}
	c.rolesKnown = true
	if isReq {
		c.client = side
	} else {
		c.client = side.Other()
	}
	// The other side's bytes so far were hunted in either mode; it goes on
	// hunting for its own kind of message.
	other := &c.p.dirs[side.Other()]
	other.state = stHunt
	d.state = stHead
	rest := data[off:]
	if isReq {
		c.feedRequest(rest, at)
	} else {
		c.feedResponse(rest, at)
	}
}

// hunt appends b to the side's unmatched tail and looks for a message
// start. It returns the buffer and offset to resume from.
func (c *conn) hunt(d *dir, b []byte, wantReq, wantResp bool) (data []byte, off int, isReq, ok bool) {
	if d.state == stDead {
		return nil, 0, false, false
	}
	if len(d.buf) == 0 && !c.http && startsTLSHello(b) {
		// A TLS handshake: nothing after it is plaintext HTTP, and a
		// "message start" hunted out of ciphertext would be a coincidence.
		c.giveUp()
		return nil, 0, false, false
	}
	data = b
	if len(d.buf) > 0 {
		c.a.hunted = append(append(c.a.hunted[:0], d.buf...), b...)
		data = c.a.hunted
	}
	off, isReq = findMessageStart(data, wantReq, wantResp)
	if off >= 0 {
		if len(d.buf) > 0 {
			data = append([]byte(nil), data...) // hunted is reused by every side
		}
		d.buf = d.buf[:0]
		if d.budget < c.a.cfg.HuntBudget || !c.handshake {
			c.a.stats.Resyncs++
		}
		return data, off, isReq, true
	}
	d.budget -= int64(len(b))
	if d.budget <= 0 && !c.http {
		d.state = stDead
		d.buf = nil
		c.a.stats.NonHTTP++
		return nil, 0, false, false
	}
	// Keep the tail that may hold the start of a message cut across
	// chunks: short on bytes that are not HTTP (bodies, TLS), and so is
	// what a connection picked up mid-stream holds while it hunts.
	data = data[huntTail(data, wantReq):]
	if cap(d.buf) > 4<<10 && cap(d.buf) > 4*len(data) {
		d.buf = make([]byte, 0, len(data))
	}
	d.buf = append(d.buf[:0], data...)
	return nil, 0, false, false
}

// giveUp judges the whole connection not HTTP: both sides ignore the
// rest of their bytes.
func (c *conn) giveUp() {
	for i := range c.p.dirs {
		d := &c.p.dirs[i]
		d.state = stDead
		d.buf = nil
	}
	c.a.stats.NonHTTP++
}

// startsTLSHello reports whether b begins with a TLS record holding a
// ClientHello or ServerHello (record type 22, version 3.x, a length a
// record may have, handshake type 1 or 2): the first bytes of TLS, as
// no HTTP message or proxy prefix (SOCKS, PROXY protocol) begins.
func startsTLSHello(b []byte) bool {
	if len(b) < 6 || b[0] != 0x16 || b[1] != 3 || b[2] > 4 {
		return false
	}
	n := int(b[3])<<8 | int(b[4])
	return n >= 4 && n <= 16384+2048 && (b[5] == 1 || b[5] == 2)
}

// readHead accumulates a header block. It returns the complete block and
// the bytes after it, or ok=false when more bytes are needed.
func (c *conn) readHead(d *dir, b []byte) (block, rest []byte, ok bool, err error) {
	if len(d.buf) == 0 {
		// Skip empty lines before a message (RFC 9112 2.2).
		for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
			b = b[1:]
		}
		if len(b) == 0 {
			return nil, nil, false, nil
		}
		if i := headerEnd(b, 0); i >= 0 {
			if i > c.a.cfg.MaxHeaderBytes {
				return nil, nil, false, parseErr(ErrHeaderTooLarge, b[:32])
			}
			return b[:i], b[i:], true, nil
		}
	}
	from := len(d.buf)
	if len(d.buf)+len(b) > c.a.cfg.MaxHeaderBytes {
		near := d.buf
		if len(near) == 0 {
			near = b
		}
		d.buf = d.buf[:0]
		return nil, nil, false, parseErr(ErrHeaderTooLarge, near)
	}
	d.buf = append(d.buf, b...)
	i := headerEnd(d.buf, from)
	if i < 0 {
		return nil, nil, false, nil
	}
	block = d.buf[:i]
	rest = b[len(b)-(len(d.buf)-i):]
	d.buf = d.buf[:0]
	return block, rest, true, nil
}

func (c *conn) parseError(d *dir, err error) {
	c.a.stats.ParseErrors++
	c.a.lastErr = fmt.Errorf("connection %s -> %s: %w", c.clientAddr(), c.serverAddr(), err)
	d.state = stHunt
	d.buf = d.buf[:0]
	// It looked like HTTP: hunt past an oversized or broken message (a
	// header bomb) further than past bytes that never did.
	d.budget = max(d.budget, 4*c.a.cfg.HuntBudget)
}

// feedRequest runs the client-side parser over b.
func (c *conn) feedRequest(b []byte, at time.Time) {
	d := &c.p.dirs[c.client]
	for len(b) > 0 {
		switch d.state {
		case stDead, stTunnel:
			return
		case stHunt:
			data, off, _, ok := c.hunt(d, b, true, false)
			if !ok {
				return
			}
			d.state = stHead
			b = data[off:]
		case stHead:
			if len(d.buf) == 0 && !startsRequest(b) {
				// Not a request line (a SOCKS handshake, TLS, a body we lost
				// track of): look for the next request instead of reading a
				// header block that is not one.
				d.state = stHunt
				continue
			}
			block, rest, ok, err := c.readHead(d, b)
			if err != nil {
				c.parseError(d, err)
				return
			}
			if !ok {
				return
			}
			rh, err := parseRequestHead(block)
			if err != nil {
				c.parseError(d, err)
				b = rehunt(block, rest)
				continue
			}
			c.startRequest(rh, at)
			b = rest
		case stPending:
			e := d.cur
			if e.final != nil && e.bodyWire == 0 {
				// A final came before any body byte: the next bytes are either
				// the body (Go sends it anyway) or a new request (curl's retry).
				// A prefix too short to tell is taken as a request: after an
				// early final, clients that withhold are the common case.
				data := b
				if len(d.buf) > 0 {
					data = append(d.buf, b...)
				}
				switch looksLikeRequest(data) {
				case guessMaybe:
					// Too short to tell: hold the bytes until more come.
					d.buf = append(d.buf[:0], data...)
					return
				case guessYes:
					if c.mayBeWithheld(e) && headerEnd(data, 0) < 0 && len(data) <= c.a.cfg.MaxHeaderBytes {
						// Whether the head is a request or the refused body
						// is told from the whole head: hold it until it is.
						d.buf = append(d.buf[:0], data...)
						return
					}
					d.buf = d.buf[:0]
					if rest, ok := c.holdAmbiguous(d, e, data, at); ok {
						b = rest
						continue
					}
					c.newRequestAfter(d, e)
					if len(data) > len(b) {
						data = append([]byte(nil), data...)
					}
					b = data
					continue
				}
				if len(data) > len(b) {
					data = append([]byte(nil), data...)
				}
				d.buf = d.buf[:0]
				b = data
				e.afterEarly = "body"
			}
			d.state = stBody
		case stAmbiguous:
			a := d.amb
			if at.Sub(a.at) > maxAmbiguity {
				c.settle(d, false)
				continue
			}
			at0 := min(a.withheld, a.own)
			if a.off < at0 {
				n := min(int64(len(b)), at0-a.off)
				if a.bodyAt.IsZero() {
					a.bodyAt = at
				}
				a.lastAt = at
				a.off += n
				b = b[n:]
				if len(b) == 0 {
					return
				}
			}
			data := b
			if len(a.peek) > 0 {
				data = append(a.peek, b...)
			}
			g := looksLikeRequest(data)
			if g == guessMaybe {
				a.peek = append(a.peek[:0], data...)
				return
			}
			// A request line where the refused body would end: it was that
			// body; none there: a request. The reverse at the end of the
			// head's own request.
			c.settle(d, (g == guessYes) == (at0 == a.withheld))
			b = data
		case stBody:
			e := d.cur
			n, done, err := d.body.consume(b)
			if n > 0 {
				if e.bodyStart.IsZero() {
					e.bodyStart = at
				}
				e.bodyEnd = at
			}
			e.bodyWire, e.bodyData = d.body.wire, d.body.data
			b = b[n:]
			if err != nil {
				c.parseError(d, err)
				e.reqDone = true
				d.cur = nil
				c.retire()
				return
			}
			if done {
				c.bodyDone(d, e)
			}
		}
	}
}

// maxAmbiguity bounds how long (in capture time) a request head after an
// early final is held undecided: a repeat is noted to the retry linker
// only once it is decided, and must be before the 417's retry window
// ends; a large upload repeated whole would otherwise stay undecided
// until its last byte. Later, it is taken as the request it looks like.
const maxAmbiguity = 5 * time.Second

// holdAmbiguous starts an ambiguity when data, the bytes after early
// final e, hold a whole request head whose own framing ends elsewhere than
// e's declared body would; it returns the bytes after the head.
func (c *conn) holdAmbiguous(d *dir, e *exchange, data []byte, at time.Time) (rest []byte, ok bool) {
	if !c.mayBeWithheld(e) {
		return nil, false
	}
	withheld := e.head.h.contentLength
	i := headerEnd(data, 0)
	if i < 0 || i > c.a.cfg.MaxHeaderBytes {
		return nil, false
	}
	rh, err := parseRequestHead(data[:i])
	if err != nil || rh.h.chunked || rh.h.te || rh.method == "CONNECT" {
		return nil, false
	}
	own := int64(i) + max(rh.h.contentLength, 0)
	if own == withheld {
		return nil, false // both framings end there: nothing tells them apart
	}
	d.amb = &ambiguity{rh: rh, at: at, head: int64(i), off: int64(i), withheld: withheld, own: own}
	d.state = stAmbiguous
	return data[i:], true
}

// mayBeWithheld reports whether bytes after early final e could be its
// body as the server reads it: it declared a length.
func (c *conn) mayBeWithheld(e *exchange) bool {
	return e.bodyMode == bodyLength && e.head.h.contentLength > 0
}

// settle ends the ambiguity of the client side d: the bytes after the
// early final were its body (asBody) or a new request.
func (c *conn) settle(d *dir, asBody bool) {
	a, e := d.amb, d.cur
	d.amb = nil
	if asBody {
		e.afterEarly = "body"
		e.bodyStart, e.bodyEnd = a.at, a.at
		if !a.lastAt.IsZero() {
			e.bodyEnd = a.lastAt
		}
		c.skipBody(d, e, a.off)
		return
	}
	c.newRequestAfter(d, e)
	c.startRequest(a.rh, a.at)
	if r := d.cur; r != nil && a.off > a.head {
		r.bodyStart, r.bodyEnd = a.bodyAt, a.lastAt
		c.skipBody(d, r, a.off-a.head)
	}
}

// skipBody counts n bytes of e's body, read past already.
func (c *conn) skipBody(d *dir, e *exchange, n int64) {
	d.body.remaining -= n
	d.body.wire += n
	d.body.data += n
	e.bodyWire, e.bodyData = d.body.wire, d.body.data
	if d.body.remaining > 0 {
		d.state = stBody
		return
	}
	c.bodyDone(d, e)
}

// bodyDone ends request e, whose body the client side d has read whole.
func (c *conn) bodyDone(d *dir, e *exchange) {
	e.bodyComplete = true
	e.reqDone = true
	d.cur = nil
	d.state = stHead
	c.retire()
}

// newRequestAfter ends early final e: the client side d's next bytes are
// a new request.
func (c *conn) newRequestAfter(d *dir, e *exchange) {
	e.afterEarly = "new-request"
	e.reqDone = true
	d.cur = nil
	d.state = stHead
	c.retire()
}

// settleAny settles an ambiguity of the client side before a response or
// a gap (as a request: the server answered, or nothing more will tell)
// or the end (ending: as the refused body if the bytes stopped exactly
// where it would end, short of the head's own request's end).
func (c *conn) settleAny(ending bool) {
	if c.p == nil || !c.rolesKnown {
		return
	}
	d := &c.p.dirs[c.client]
	if a := d.amb; a != nil {
		c.settle(d, ending && a.off == a.withheld && a.off < a.own && len(a.peek) == 0)
		return
	}
	if e := d.cur; d.state == stPending && e != nil && e.final != nil && e.bodyWire == 0 && len(d.buf) > 0 &&
		looksLikeRequest(d.buf) == guessYes {
		// A request head held whole before it was told from a body: a
		// request, its head left to read as it was before the hold.
		c.newRequestAfter(d, e)
	}
}

// exchangeID names the nth request of the connection whose first packet
// is given: "firstPacket-n".
func exchangeID(firstPacket uint64, n uint32) string {
	var b [24]byte
	id := strconv.AppendUint(b[:0], firstPacket, 10)
	id = append(id, '-')
	return string(strconv.AppendUint(id, uint64(n), 10))
}

// startRequest opens an exchange for a parsed request head.
func (c *conn) startRequest(rh *requestHead, at time.Time) {
	c.http = true
	c.a.stats.Requests++
	c.nreq++
	e := &exchange{
		conn:       c,
		id:         exchangeID(c.firstPacket, c.nreq),
		head:       rh,
		headersEnd: at,
	}
	if rh.h.expect != "" {
		c.a.stats.Negotiations++
	}
	c.p.queue = append(c.p.queue, e)
	c.a.noteRequest(c, e)
	d := &c.p.dirs[c.client]
	switch {
	case rh.h.chunked:
		e.bodyMode = bodyChunked
	case rh.h.te:
		// A request with a non-chunked coding cannot be framed (RFC 9112 6.3).
		e.bodyMode = bodyNone
	case rh.h.contentLength > 0:
		e.bodyMode = bodyLength
	}
	if e.bodyMode == bodyNone {
		e.bodyComplete = true
		e.reqDone = true
		d.state = stHead
		if rh.method == "CONNECT" {
			d.cur = e // tunnel decided by the response
		}
		return
	}
	d.body.reset(e.bodyMode, rh.h.contentLength)
	d.cur = e
	d.state = stPending
}

// pendingFinal returns the oldest exchange still owed a final response.
func (c *conn) pendingFinal() *exchange {
	for _, e := range c.p.queue {
		if e.final == nil {
			return e
		}
	}
	return nil
}

// feedResponse runs the server-side parser over b.
func (c *conn) feedResponse(b []byte, at time.Time) {
	c.settleAny(false)
	d := &c.p.dirs[c.client.Other()]
	for len(b) > 0 {
		switch d.state {
		case stDead, stTunnel:
			return
		case stHunt:
			data, off, _, ok := c.hunt(d, b, false, true)
			if !ok {
				return
			}
			d.state = stHead
			b = data[off:]
		case stHead:
			if len(d.buf) == 0 && !startsResponse(b) {
				d.state = stHunt
				if c.http {
					// A response without a status line on a connection
					// already speaking HTTP: malformed, counted (RFC 9112 4).
					c.parseError(d, parseErr(ErrBadStatusLine, b))
				}
				continue
			}
			block, rest, ok, err := c.readHead(d, b)
			if err != nil {
				c.parseError(d, err)
				return
			}
			if !ok {
				return
			}
			rh, err := parseResponseHead(block)
			if err != nil {
				c.parseError(d, err)
				b = rehunt(block, rest)
				continue
			}
			c.response(d, rh, at)
			b = rest
		case stBody:
			n, done, err := d.body.consume(b)
			b = b[n:]
			if err != nil {
				c.parseError(d, err)
				return
			}
			if done {
				d.state = stHead
			}
		case stPending:
			d.state = stHead
		}
	}
}

// response pairs a response head with its request: a 1xx is interim and
// never consumes the request (the classic pairing bug), a final does.
func (c *conn) response(d *dir, rh *responseHead, at time.Time) {
	c.http = true
	c.a.stats.Responses++
	e := c.pendingFinal()
	if e == nil {
		c.a.stats.OrphanResponses++
		if rh.status >= 200 {
			// The server answered bytes the client sent as a body: it took them
			// for a request (RFC 9112 9.3 desync).
			for i := len(c.p.queue) - 1; i >= 0; i-- {
				if p := c.p.queue[i]; p.earlyFinal && p.afterEarly == "body" {
					p.misframed = true
					break
				}
			}
		}
		c.frameResponse(d, rh, "")
		c.retire()
		return
	}
	if rh.status < 200 && rh.status != 101 {
		e.interim = append(e.interim, Interim{Status: rh.status, Reason: rh.reason, At: at, Headers: rh.h.fields})
		// A 1xx has no content (RFC 9110 15.2); some servers send one anyway.
		d.state = stHead
		if rh.h.contentLength > 0 {
			d.body.reset(bodyLength, rh.h.contentLength)
			d.state = stBody
		}
		return
	}
	e.final = &Final{
		Status:     rh.status,
		Reason:     rh.reason,
		Version:    rh.version,
		Server:     rh.h.server,
		Via:        rh.h.via,
		Connection: rh.h.connection,
		At:         at,
	}
	if e.bodyWire == 0 && e.bodyMode != bodyNone {
		e.earlyFinal = true
	}
	// An early final without close after an earlier early final that was
	// followed by a new request: the server's answer tells whether it took
	// that request as the withheld body.
	if i := c.indexOf(e); i > 0 {
		prev := c.p.queue[i-1]
		if prev.earlyFinal && prev.afterEarly == "new-request" && !closeAnnounced(prev) && rh.status == 400 {
			prev.misframed = true
		}
	}
	if e.head.h.expect != "" && rh.status == 417 {
		c.a.addAwait(c, e)
	}
	c.frameResponse(d, rh, e.head.method)
	if rh.status == 101 || (e.head.method == "CONNECT" && rh.status/100 == 2) {
		c.a.stats.Tunnels++
		d.state = stTunnel
		c.p.dirs[c.client].state = stTunnel
	}
	c.retire()
}

func (c *conn) indexOf(e *exchange) int {
	for i, x := range c.p.queue {
		if x == e {
			return i
		}
	}
	return -1
}

// closeAnnounced reports whether either side said the connection closes
// after this exchange (RFC 9112 9.6), so no framing follows it.
func closeAnnounced(e *exchange) bool {
	if hasToken(e.head.h.connection, "close") {
		return true
	}
	if e.final != nil && hasToken(e.final.Connection, "close") {
		return true
	}
	if e.final != nil && e.final.Version == "HTTP/1.0" && !hasToken(e.final.Connection, "keep-alive") {
		return true
	}
	return false
}

// frameResponse sets the body framing of a final response (RFC 9112 6.3).
func (c *conn) frameResponse(d *dir, rh *responseHead, method string) {
	d.state = stHead
	switch {
	case method == "HEAD" || rh.status == 204 || rh.status == 304 || rh.status < 200:
		return
	case rh.h.chunked:
		d.body.reset(bodyChunked, 0)
	case rh.h.te:
		d.body.reset(bodyClose, 0)
	case rh.h.contentLength >= 0:
		if rh.h.contentLength == 0 {
			return
		}
		d.body.reset(bodyLength, rh.h.contentLength)
	default:
		d.body.reset(bodyClose, 0)
	}
	d.state = stBody
}

// retire hands finished exchanges, oldest first, to the analyzer.
func (c *conn) retire() {
	for len(c.p.queue) > 0 {
		e := c.p.queue[0]
		if e.final == nil || !e.reqDone {
			return
		}
		// An early final without close leaves the next bytes' framing open:
		// wait for the server's next final to see how it framed them.
		if e.earlyFinal && !closeAnnounced(e) && len(c.p.queue) < 2 {
			return
		}
		if e.earlyFinal && len(c.p.queue) >= 2 && c.p.queue[1].final == nil && e.afterEarly == "new-request" && !closeAnnounced(e) {
			return
		}
		// The slot is cleared so that the queue's array does not keep the
		// exchange alive on an idle keep-alive connection.
		c.p.queue[0] = nil
		c.p.queue = c.p.queue[1:]
		if len(c.p.queue) == 0 {
			c.p.queue = nil
		}
		c.finish(e, "", time.Time{})
	}
}

// finish marks an exchange retired and releases it.
func (c *conn) finish(e *exchange, end string, at time.Time) {
	e.retired = true
	e.connEnd = end
	e.endAt = at
	e.serverEnd = c.ended(c.client.Other())
	if e.endAt.IsZero() {
		e.endAt = c.a.now
	}
	c.a.release(e)
}

func (c *conn) Gap(side reassembly.Side, n int64, at time.Time) {
	c.a.tick(at)
	c.parser()
	defer c.park()
	c.a.stats.Gaps++
	c.settleAny(false)
	for _, e := range c.p.queue {
		if e.firstGap.IsZero() {
			e.firstGap = at
		}
	}
	if !c.rolesKnown {
		d := &c.p.dirs[side]
		d.buf = d.buf[:0]
		return
	}
	d := &c.p.dirs[side]
	switch d.state {
	case stBody:
		if n >= 0 && d.body.mode == bodyLength && n < d.body.remaining {
			d.body.remaining -= n
			d.body.wire += n
			d.body.data += n
			if d.cur != nil {
				d.cur.bodyWire, d.cur.bodyData = d.body.wire, d.body.data
			}
			return
		}
		if d.body.mode == bodyClose {
			return
		}
	case stDead, stTunnel:
		return
	}
	// Framing is lost: resynchronise at the next message start.
	if d.cur != nil && side == c.client {
		d.cur.reqDone = true
		d.cur = nil
	}
	d.state = stHunt
	d.buf = d.buf[:0]
	d.budget = 1 << 62 // a known HTTP stream may be hunted through any length
}

func (c *conn) End(side reassembly.Side, reason reassembly.EndReason, at time.Time) {
	c.a.tick(at)
	if c.ends == nil {
		c.ends = new([2]time.Time)
	}
	sideFirst := c.ends[side].IsZero()
	if sideFirst {
		c.ends[side] = at
	}
	if c.refused && sideFirst && c.rolesKnown && side == c.client {
		c.a.clientClosed(c)
	}
	if c.p == nil {
		return // parked: no exchange open, nothing pending (see park)
	}
	c.settleAny(true)
	defer c.park()
	d := &c.p.dirs[side]
	if !c.rolesKnown {
		return
	}
	if side == c.client {
		if d.cur != nil && d.state == stPending && len(d.buf) > 0 {
			// Held bytes that never became a request line were body.
			held := append([]byte(nil), d.buf...)
			d.buf = d.buf[:0]
			d.cur.afterEarly = "body"
			d.state = stBody
			c.feedRequest(held, c.ended(side))
		}
		if d.cur != nil && d.state == stPending {
			if d.cur.final != nil {
				d.cur.afterEarly = "close"
			}
			d.cur.reqDone = true
			d.cur = nil
		}
	}
	c.retire()
}

func (c *conn) Close(reason reassembly.EndReason, at time.Time) {
	c.a.tick(at)
	if c.closed {
		return
	}
	c.closed = true
	c.settleAny(true)
	if c.p == nil {
		// Parked, or never said a word: nothing is open or held.
		if c.http {
			c.a.stats.HTTPConnections++
		} else if c.sawData && c.parkedState[0] != stDead && c.parkedState[1] != stDead {
			c.a.stats.NonHTTP++
		}
		return
	}
	if c.http {
		c.a.stats.HTTPConnections++
	} else if c.sawData && c.p.dirs[0].state != stDead && c.p.dirs[1].state != stDead {
		// Bytes flowed and none was HTTP, though fewer than the hunt
		// budget: not HTTP either (a side judged dead was counted then).
		c.a.stats.NonHTTP++
	}
	for _, e := range c.p.queue {
		e.reqDone = true
		if e.earlyFinal && e.afterEarly == "" {
			e.afterEarly = "close"
		}
		c.finish(e, reason.String(), at)
	}
	p := c.p
	c.p = nil
	c.a.recycle(p)
}

// facts gathers what the exchange showed, for Judge.
func (e *exchange) facts() Facts {
	c := e.conn
	f := Facts{
		Version:       e.head.version,
		Expect:        e.head.h.expect,
		ContentLength: e.head.h.contentLength,
		Chunked:       e.head.h.chunked,
		HeadersEnd:    e.headersEnd,
		Interim:       e.interim,
		BodyStart:     e.bodyStart,
		BodyEnd:       e.bodyEnd,
		BodyComplete:  e.bodyComplete,
		Final:         e.final,
		End:           e.endAt,
		FirstGap:      e.firstGap,
		Misframed:     e.misframed,
	}
	f.ServerEnd = e.serverEnd
	if !e.retired {
		f.ServerEnd = c.ended(c.client.Other())
	}
	return f
}

// record builds the output record, or nil for a plain exchange that is
// not wanted.
func (e *exchange) record() *Record {
	c := e.conn
	a := c.a
	isNeg := e.head.h.expect != ""
	unsolicited := false
	if !isNeg {
		for _, i := range e.interim {
			if i.Status == 100 {
				unsolicited = true
			}
		}
		if !a.cfg.All {
			return nil
		}
	}
	f := e.facts() // a value: on the stack, not one more allocation per record
	j := Judge(&f, a.cfg.NoWaitUnder)
	// The record and the values its pointer fields point to are made in
	// one allocation, its endpoints' strings in another.
	blk := &struct {
		r         Record
		cl        int64
		bs, be    time.Time
		rtt       float64
		retryOf   string
		retriedBy string
	}{}
	r := &blk.r
	*r = Record{
		Type:            TypeNegotiation,
		ID:              e.id,
		Conn:            c.endpoints(),
		Interim:         e.interim,
		Final:           e.final,
		HeadersEndAt:    e.headersEnd,
		BodyBytes:       e.bodyWire,
		BodyDataBytes:   e.bodyData,
		BodyComplete:    e.bodyComplete,
		Verdict:         j.Verdict,
		Flags:           j.Flags,
		Wait100Ms:       j.Wait100Ms,
		ClientWaitMs:    j.ClientWaitMs,
		LostMs:          j.LostMs,
		TimeoutGuess:    j.TimeoutGuess,
		AfterEarlyFinal: e.afterEarly,
		ConnEnd:         e.connEnd,
		Packet:          c.firstPacket,
	}
	h := &e.head.h
	r.Request = Request{
		Method: e.head.method, Target: e.head.target, Version: e.head.version,
		Host: h.host, Expect: h.expect, Chunked: h.chunked, UserAgent: h.userAgent,
		Via: h.via, XForwardedFor: h.xff, XRequestID: h.xRequestID, Connection: h.connection,
	}
	if h.contentLength >= 0 {
		blk.cl = h.contentLength
		r.Request.ContentLength = &blk.cl
	}
	if r.Interim == nil {
		r.Interim = []Interim{}
	}
	if !e.bodyStart.IsZero() {
		blk.bs, blk.be = e.bodyStart, e.bodyEnd
		r.BodyStartAt, r.BodyEndAt = &blk.bs, &blk.be
	}
	if c.hasRTT {
		blk.rtt = *ms(c.rtt)
		r.RTTMs = &blk.rtt
	}
	if e.retryOf != "" {
		blk.retryOf = e.retryOf
		r.RetryOf = &blk.retryOf
	}
	if e.retriedBy != "" {
		blk.retriedBy = e.retriedBy
		r.RetriedBy = &blk.retriedBy
	}
	if isNeg && e.final != nil && e.final.Status == 417 {
		if e.retriedWithoutExpect {
			r.Flags = append(r.Flags, FlagRetriedWithoutExpect)
		} else {
			r.Flags = append(r.Flags, FlagNoRetryAfter417)
		}
	}
	if !isNeg {
		r.Type = TypeExchange
		r.Verdict = ""
		r.Flags = nil
		r.Wait100Ms, r.ClientWaitMs, r.LostMs, r.TimeoutGuess = nil, nil, nil, nil
		if unsolicited {
			r.Flags = []Flag{FlagUnsolicited100}
		}
	}
	if r.Flags == nil {
		r.Flags = []Flag{}
	}
	if f.FirstGap.IsZero() {
		r.Gaps = 0
	} else {
		r.Gaps = 1
	}
	r.Diagnosis = Diagnose(r)
	return r
}

// rehunt returns the bytes after a malformed header block's first byte,
// so hunting can find a message that started inside it (HTTP after a
// SOCKS handshake arrives glued to the handshake's bytes).
func rehunt(block, rest []byte) []byte {
	out := make([]byte, 0, len(block)-1+len(rest))
	out = append(out, block[1:]...)
	return append(out, rest...)
}

// startsRequest reports whether b, at a message boundary, may begin a
// request (leading empty lines allowed).
func startsRequest(b []byte) bool {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	if len(b) == 0 {
		return true
	}
	for i, c := range b {
		if c == ' ' {
			return i > 0
		}
		if !isTokenChar(c) || i > 32 {
			return false
		}
	}
	return true
}

// startsResponse reports whether b, at a message boundary, may begin a
// status line.
func startsResponse(b []byte) bool {
	for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	const p = "HTTP/"
	n := min(len(b), len(p))
	return string(b[:n]) == p[:n]
}
