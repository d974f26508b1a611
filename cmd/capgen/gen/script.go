package gen

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/expectscope/expectscope/capture"
)

// Timing of the scripted network: a 200 µs round trip, servers that
// answer in 1 ms, uploads at about 1 Gbit/s.
const (
	halfRTT    = 100 * time.Microsecond
	serverTurn = time.Millisecond
	clientTurn = 200 * time.Microsecond
	segGap     = 12 * time.Microsecond
)

type generator struct {
	cfg Config
	rng *rand.Rand
	mix []scenario
	sum int
}

// scenario is one kind of session and its weight in the mix. An extra
// scenario is generated only when asked for by name (Config.Only), so
// that the default mix, and the bytes a seed gives, stay as they were.
type scenario struct {
	name   string
	weight int
	build  func(b *script)
	extra  bool
}

var scenarios = []scenario{
	{name: "continued", weight: 30, build: scContinued},
	{name: "rejected-retry-same", weight: 5, build: scRejectedRetrySame},
	{name: "rejected-retry-new", weight: 5, build: scRejectedRetryNew},
	{name: "rejected-no-retry", weight: 3, build: scRejectedNoRetry},
	{name: "rejected-retry-expect", weight: 2, build: scRejectedRetryExpectAgain},
	{name: "body-after-417", weight: 2, build: scBodyAfter417},
	{name: "final-413", weight: 4, build: scFinal(413, "Payload Too Large")},
	{name: "final-401", weight: 3, build: scFinal(401, "Unauthorized")},
	{name: "timeout-350ms", weight: 3, build: scTimeout(350 * time.Millisecond)},
	{name: "timeout-1s", weight: 2, build: scTimeout(time.Second)},
	{name: "no-wait", weight: 6, build: scNoWait},
	{name: "keep-alive", weight: 5, build: scKeepAlive},
	{name: "pipelined", weight: 4, build: scPipelined},
	{name: "chunked", weight: 5, build: scChunked},
	{name: "http10", weight: 3, build: scHTTP10},
	{name: "plain-post", weight: 8, build: scPlainPost},
	{name: "plain-get", weight: 8, build: scPlainGet},
	{name: "noise", weight: 10, build: scNoise},
	{name: "rejected-retry-pooled", weight: 3, build: scRejectedRetryPooled, extra: true},
	{name: "rejected-close-retry", weight: 2, build: scRejectedCloseRetry, extra: true},
}

// Scenarios returns the names of all scenarios, the extra ones last.
func Scenarios() []string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return n
}

// ExtraScenarios returns the names of the scenarios left out of the
// default mix.
func ExtraScenarios() []string {
	var n []string
	for _, s := range scenarios {
		if s.extra {
			n = append(n, s.name)
		}
	}
	return n
}

func mixFor(only []string) []scenario {
	if len(only) == 0 {
		return slices.DeleteFunc(slices.Clone(scenarios), func(s scenario) bool { return s.extra })
	}
	var m []scenario
	for _, s := range scenarios {
		if slices.Contains(only, s.name) {
			m = append(m, s)
		}
	}
	if len(m) == 0 {
		return scenarios
	}
	return m
}

func (g *generator) pick() scenario {
	if g.sum == 0 {
		for _, s := range g.mix {
			g.sum += s.weight
		}
	}
	n := g.rng.IntN(g.sum)
	for _, s := range g.mix {
		if n < s.weight {
			return s
		}
		n -= s.weight
	}
	return g.mix[0]
}

// tcpState is one direction's sequence space.
type tcpState struct{ next uint32 }

// script builds the packets of one session.
type script struct {
	g      *generator
	s      *session
	now    time.Duration
	conn   int
	seq    [2][2]tcpState // [conn][dir]
	name   string
	nreq   [2]int
	server netip.AddrPort
	host   string
}

func (s *session) exp0name() string { return s.name }

func (g *generator) build(idx int, start time.Time) *session {
	sc := g.pick()
	s := &session{idx: idx, start: start, name: sc.name}
	srv := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + idx%8)}), 80)
	if idx%5 == 4 {
		srv = netip.AddrPortFrom(srv.Addr(), 8080)
	}
	b := &script{g: g, s: s, name: sc.name, server: srv, host: "upload" + itoa(idx%8) + ".example"}
	b.open(0)
	sc.build(b)
	s.nconns = b.conn + 1
	return s
}

func (b *script) rng() *rand.Rand { return b.g.rng }

func (b *script) bodyLen() int {
	c := b.g.cfg
	if c.BodyMax == c.BodyMin {
		return c.BodyMin
	}
	return c.BodyMin + b.rng().IntN(c.BodyMax-c.BodyMin+1)
}

func (b *script) wait(d time.Duration) { b.now += d }

// emit appends one segment on the current connection.
func (b *script) emit(dir int, flags uint8, payload []byte) {
	c := b.conn
	st := &b.seq[c][dir]
	p := pkt{t: b.now, conn: uint8(c), dir: uint8(dir), flags: flags, seq: st.next, ack: b.seq[c][1-dir].next, payload: payload}
	if flags&capture.FlagACK == 0 {
		p.ack = 0
	}
	b.s.pkts = append(b.s.pkts, p)
	st.next += uint32(len(payload))
	if flags&(capture.FlagSYN|capture.FlagFIN) != 0 {
		st.next++
	}
}

// open starts connection c with a handshake.
func (b *script) open(c int) {
	b.conn = c
	b.s.conns[c] = endpoint{client: ClientAddr(b.s.idx, c), server: b.server}
	b.seq[c][0].next = b.rng().Uint32()
	b.seq[c][1].next = b.rng().Uint32()
	b.emit(0, capture.FlagSYN, nil)
	b.wait(halfRTT)
	b.emit(1, capture.FlagSYN|capture.FlagACK, nil)
	b.wait(halfRTT)
	b.emit(0, capture.FlagACK, nil)
	b.wait(clientTurn)
}

// close ends the current connection, the client first (or the server when serverFirst).
func (b *script) close(serverFirst bool) {
	if h := b.g.cfg.Hold; h > 0 {
		b.wait(h)
	}
	first, second := 0, 1
	if serverFirst {
		first, second = 1, 0
	}
	b.emit(first, capture.FlagFIN|capture.FlagACK, nil)
	b.wait(halfRTT)
	b.emit(second, capture.FlagFIN|capture.FlagACK, nil)
	b.wait(halfRTT)
	b.emit(first, capture.FlagACK, nil)
}

// send sends data from dir in MSS segments.
func (b *script) send(dir int, data []byte) {
	for len(data) > 0 {
		n := min(len(data), MSS)
		b.emit(dir, capture.FlagACK|capture.FlagPSH, data[:n])
		data = data[n:]
		if len(data) > 0 {
			b.wait(segGap)
		}
	}
}

// body sends data as an upload (the body of a request): MSS segments with
// the receiver's ACKs and the configured loss, reordering and retransmission.
func (b *script) body(data []byte) {
	cfg := b.g.cfg
	first := len(b.s.pkts)
	nseg := 0
	for len(data) > 0 {
		n := min(len(data), MSS)
		b.emit(0, capture.FlagACK, data[:n])
		data = data[n:]
		nseg++
		if nseg%cfg.AckEvery == 0 {
			b.emit(1, capture.FlagACK, nil)
		}
		if len(data) > 0 {
			b.wait(segGap)
		}
	}
	if cfg.Loss == 0 && cfg.Reorder == 0 && cfg.Retrans == 0 {
		return
	}
	// Impair the body segments after the first (the first body byte decides
	// verdicts, and its time must stay what the script says).
	pk := b.s.pkts
	var out []pkt
	out = append(out, pk[:first+1]...)
	for i := first + 1; i < len(pk); i++ {
		p := pk[i]
		if p.dir != 0 || len(p.payload) == 0 {
			out = append(out, p)
			continue
		}
		r := b.rng().Float64()
		switch {
		case r < cfg.Loss && i < len(pk)-1:
			b.s.gap = true
			continue
		case r < cfg.Loss+cfg.Reorder && i+1 < len(pk) && pk[i+1].dir == 0 && len(pk[i+1].payload) > 0:
			q := pk[i+1]
			p.t, q.t = q.t, p.t
			out = append(out, q, p)
			i++
			continue
		case r < cfg.Loss+cfg.Reorder+cfg.Retrans && i+1 < len(pk):
			out = append(out, p, pk[i+1])
			d := p
			d.t = pk[i+1].t
			out = append(out, d)
			i++
			continue
		}
		out = append(out, p)
	}
	b.s.pkts = out
}

func (b *script) fill(n int) []byte {
	if n <= len(filler) {
		return filler[:n]
	}
	f := make([]byte, n)
	for i := 0; i < n; i += len(filler) {
		copy(f[i:], filler)
	}
	return f
}

// request builds a request head.
func (b *script) request(method, target, version string, hdrs ...string) []byte {
	var sb strings.Builder
	sb.WriteString(method + " " + target + " " + version + "\r\n")
	sb.WriteString("Host: " + b.host + "\r\n")
	sb.WriteString("User-Agent: capgen/1.0\r\n")
	for _, h := range hdrs {
		sb.WriteString(h + "\r\n")
	}
	sb.WriteString("\r\n")
	return []byte(sb.String())
}

func response(version string, status int, reason string, hdrs ...string) []byte {
	var sb strings.Builder
	sb.WriteString(version + " " + itoa(status) + " " + reason + "\r\n")
	sb.WriteString("Server: capgen-httpd\r\n")
	for _, h := range hdrs {
		sb.WriteString(h + "\r\n")
	}
	sb.WriteString("\r\n")
	return []byte(sb.String())
}

var (
	resp100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")
	resp200 = response("HTTP/1.1", 200, "OK", "Content-Length: 2", "Content-Type: text/plain")
	ok2     = []byte("ok")
)

func ok() []byte { return append(slices.Clip(resp200), ok2...) }

// expect sends a request head carrying Expect on the current connection
// and records the expectation; it returns its index.
func (b *script) expect(head []byte, verdict string, status int, flags ...string) *Expectation {
	b.send(0, head)
	c := b.conn
	e := Expectation{
		Scenario:     b.name,
		Client:       b.s.conns[c].client.String(),
		Server:       b.s.conns[c].server.String(),
		Index:        b.nreq[c] + 1,
		HeadersEndAt: b.s.start.Add(b.now),
		Verdict:      verdict,
		Flags:        append([]string{}, flags...),
		Status:       status,
	}
	if e.Flags == nil {
		e.Flags = []string{}
	}
	b.nreq[c]++
	b.s.exp = append(b.s.exp, e)
	return &b.s.exp[len(b.s.exp)-1]
}

// plainUpload sends a request head without Expect, its body of n bytes,
// and the server's 200.
func (b *script) plainUpload(head []byte, n int) {
	b.plain(head)
	b.wait(segGap)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
}

// plain sends a request head without Expect.
func (b *script) plain(head []byte) {
	b.send(0, head)
	b.nreq[b.conn]++
}

func cl(n int) string { return "Content-Length: " + itoa(n) }

const exp100 = "Expect: 100-continue"

func scContinued(b *script) {
	n := b.bodyLen()
	b.expect(b.request("PUT", "/files/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100, "Content-Type: application/octet-stream"), "continued", 200)
	b.wait(serverTurn)
	b.send(1, resp100)
	b.wait(halfRTT * 2)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.close(false)
}

func resp417(conn string) []byte {
	h := []string{"Content-Length: 0"}
	if conn != "" {
		h = append(h, "Connection: "+conn)
	}
	return response("HTTP/1.1", 417, "Expectation Failed", h...)
}

func scRejectedRetrySame(b *script) {
	n := b.bodyLen()
	target := "/up/" + itoa(b.s.idx)
	b.expect(b.request("POST", target, "HTTP/1.1", cl(n), exp100), "rejected", 417, "retried-without-expect")
	b.wait(serverTurn)
	b.send(1, resp417(""))
	b.wait(clientTurn)
	b.plainUpload(b.request("POST", target, "HTTP/1.1", cl(n)), n)
	b.close(false)
}

func scRejectedRetryNew(b *script) { rejectedRetryNew(b, false) }

// scRejectedRetryExpectAgain: after a 417 with close, the request comes
// again on a new connection asking for 100-continue again (not linked: it
// cannot be told from another client's request); this time the server
// says 100.
func scRejectedRetryExpectAgain(b *script) { rejectedRetryNew(b, true) }

// rejectedRetryNew: a 417 with close, then the request again on a new
// connection, without Expect or, with expectAgain, asking for
// 100-continue again.
func rejectedRetryNew(b *script, expectAgain bool) { rejectedRetryNewAfter(b, expectAgain, true) }

// rejectedRetryNewAfter is rejectedRetryNew with a 417 that announces the
// close (the server closes), or not (the client closes).
func rejectedRetryNewAfter(b *script, expectAgain, announced bool) {
	n := b.bodyLen()
	target := "/up/" + itoa(b.s.idx)
	flag := "retried-without-expect"
	if expectAgain {
		flag = "no-retry-after-417"
	}
	b.expect(b.request("POST", target, "HTTP/1.1", cl(n), exp100), "rejected", 417, flag)
	b.wait(serverTurn)
	if announced {
		b.send(1, resp417("close"))
		b.wait(segGap)
	} else {
		b.send(1, resp417(""))
		b.wait(clientTurn)
	}
	b.close(announced)
	b.wait(clientTurn)
	b.open(1)
	if expectAgain {
		b.expect(b.request("POST", target, "HTTP/1.1", cl(n), exp100), "continued", 200)
		b.wait(serverTurn)
		b.send(1, resp100)
		b.wait(halfRTT * 2)
	} else {
		b.plain(b.request("POST", target, "HTTP/1.1", cl(n)))
		b.wait(segGap)
	}
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.close(false)
}

func scRejectedNoRetry(b *script) {
	n := b.bodyLen()
	b.expect(b.request("POST", "/once/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "rejected", 417, "no-retry-after-417")
	b.wait(serverTurn)
	b.send(1, resp417("close"))
	b.wait(segGap)
	b.close(true)
}

// scRejectedRetryPooled is a client with a pool of connections (Go's
// net/http): a GET leaves connection 0 idle; the upload, on a new
// connection 1, is refused with a 417 that keeps the connection, the
// client sends the body anyway, and its repeat without Expect goes out on
// the idle connection 0 while 1 is still open.
func scRejectedRetryPooled(b *script) {
	n := b.bodyLen()
	target := "/pool/" + itoa(b.s.idx)
	b.plain(b.request("GET", "/", "HTTP/1.1"))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.open(1)
	b.expect(b.request("POST", target, "HTTP/1.1", cl(n), exp100), "rejected", 417, "body-after-417", "retried-without-expect")
	b.wait(serverTurn)
	b.send(1, resp417(""))
	b.wait(clientTurn)
	b.body(b.fill(n))
	b.wait(segGap)
	b.conn = 0
	b.plainUpload(b.request("POST", target, "HTTP/1.1", cl(n)), n)
	b.close(false)
	b.conn = 1
	b.close(false)
}

// scRejectedCloseRetry: a 417 that keeps the connection, which the client
// closes all the same, then repeats the request without Expect on a new
// connection.
func scRejectedCloseRetry(b *script) { rejectedRetryNewAfter(b, false, false) }

func scBodyAfter417(b *script) {
	n := b.bodyLen()
	b.expect(b.request("POST", "/stubborn/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "rejected", 417, "body-after-417")
	b.wait(serverTurn)
	b.send(1, resp417(""))
	b.wait(clientTurn)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.close(true)
}

func scFinal(status int, reason string) func(b *script) {
	return func(b *script) {
		n := b.bodyLen()
		b.expect(b.request("PUT", "/big/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "final-before-body", status)
		b.wait(serverTurn)
		h := []string{"Content-Length: 0", "Connection: close"}
		if status == 401 {
			h = append(h, `WWW-Authenticate: Basic realm="up"`)
		}
		b.send(1, response("HTTP/1.1", status, reason, h...))
		b.wait(segGap)
		b.close(true)
	}
}

func scTimeout(d time.Duration) func(b *script) {
	return func(b *script) {
		n := b.bodyLen()
		b.expect(b.request("PUT", "/slow/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "timed-out", 200)
		b.wait(d)
		b.body(b.fill(n))
		b.wait(serverTurn)
		b.send(1, ok())
		b.wait(clientTurn)
		b.close(false)
	}
}

func scNoWait(b *script) {
	n := b.bodyLen()
	b.expect(b.request("POST", "/eager/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "no-wait", 200)
	b.wait(50 * time.Microsecond)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.close(false)
}

func scKeepAlive(b *script) {
	for i := range 3 {
		n := b.bodyLen() / (i + 1)
		b.expect(b.request("PUT", "/ka/"+itoa(b.s.idx)+"/"+itoa(i), "HTTP/1.1", cl(n), exp100), "continued", 201)
		b.wait(serverTurn)
		b.send(1, resp100)
		b.wait(halfRTT * 2)
		b.body(b.fill(n))
		b.wait(serverTurn)
		b.send(1, response("HTTP/1.1", 201, "Created", "Content-Length: 0"))
		b.wait(clientTurn)
	}
	b.close(false)
}

func scPipelined(b *script) {
	// Two GETs pipelined in one segment, answered in order, then an upload.
	two := append(b.request("GET", "/a", "HTTP/1.1"), b.request("GET", "/b", "HTTP/1.1")...)
	b.send(0, two)
	b.nreq[b.conn] += 2
	b.wait(serverTurn)
	b.send(1, append(ok(), ok()...))
	b.wait(clientTurn)
	n := b.bodyLen()
	b.expect(b.request("POST", "/after-pipeline/"+itoa(b.s.idx), "HTTP/1.1", cl(n), exp100), "continued", 200)
	b.wait(serverTurn)
	b.send(1, resp100)
	b.wait(halfRTT * 2)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.close(false)
}

func chunked(data []byte) []byte {
	var out []byte
	for len(data) > 0 {
		n := min(len(data), 4096)
		out = append(out, strings.ToLower(strconvHex(n))+"\r\n"...)
		out = append(out, data[:n]...)
		out = append(out, "\r\n"...)
		data = data[n:]
	}
	return append(out, "0\r\n\r\n"...)
}

func strconvHex(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var buf [16]byte
	i := len(buf)
	for n > 0 {
		i--
		buf[i] = digits[n&15]
		n >>= 4
	}
	return string(buf[i:])
}

func scChunked(b *script) {
	n := b.bodyLen()
	b.expect(b.request("POST", "/stream/"+itoa(b.s.idx), "HTTP/1.1", "Transfer-Encoding: chunked", exp100), "continued", 200)
	b.wait(serverTurn)
	b.send(1, resp100)
	b.wait(halfRTT * 2)
	b.body(chunked(b.fill(n)))
	b.wait(serverTurn)
	b.send(1, ok())
	b.wait(clientTurn)
	b.close(false)
}

func scHTTP10(b *script) {
	n := b.bodyLen()
	b.expect(b.request("POST", "/old/"+itoa(b.s.idx), "HTTP/1.0", cl(n), exp100), "no-wait", 200, "expect-on-http10")
	b.wait(100 * time.Microsecond)
	b.body(b.fill(n))
	b.wait(serverTurn)
	b.send(1, append(response("HTTP/1.0", 200, "OK", "Content-Length: 2"), ok2...))
	b.wait(segGap)
	b.close(true)
}

func scPlainPost(b *script) {
	n := b.bodyLen()
	b.plainUpload(b.request("POST", "/form/"+itoa(b.s.idx), "HTTP/1.1", cl(n), "Content-Type: application/x-www-form-urlencoded"), n)
	b.close(false)
}

func scPlainGet(b *script) {
	n := b.bodyLen()
	b.plain(b.request("GET", "/download/"+itoa(b.s.idx), "HTTP/1.1"))
	b.wait(serverTurn)
	b.send(1, response("HTTP/1.1", 200, "OK", cl(n)))
	b.wait(segGap)
	b.send(1, b.fill(n))
	b.wait(clientTurn)
	b.close(false)
}

func scNoise(b *script) {
	b.s.conns[0].server = netip.AddrPortFrom(b.server.Addr(), 443)
	n := min(b.bodyLen(), len(noise)-1)
	off := b.rng().IntN(len(noise) - n)
	b.send(0, noise[:300])
	b.wait(serverTurn)
	b.send(1, noise[off:off+min(n, 4000)])
	b.wait(clientTurn)
	b.send(0, noise[off:off+n])
	b.wait(serverTurn)
	b.close(false)
}
