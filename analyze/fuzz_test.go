package analyze

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/reassembly"
)

// The fuzz targets here take net/http as a differential oracle on the
// inputs both parsers accept. Our parser is deliberately more tolerant
// than net/http in these ways, so the oracle is consulted only on inputs
// both accept:
//
//   - a request line splits at the first and the last space, so a target
//     holding spaces ("GET /a b HTTP/1.1") is kept whole (net/http refuses);
//   - field names are not checked to be tokens, and a field line with
//     spaces before the colon is accepted (net/http refuses: RFC 9112 5.1
//     says a server MUST reject it, a passive observer need not);
//   - obs-fold (RFC 9112 5.2) continues the previous value, as net/textproto does;
//   - bare LF ends a line (net/textproto too, RFC 9112 2.2 allows it);
//   - in chunked bodies a bare LF ends a chunk line and CRs before the LF
//     after chunk data are skipped (net/http refuses both, erratum 7633);
//   - a Transfer-Encoding other than chunked is framed as in RFC 9112 6.3
//     (close-delimited for a response) instead of being refused.
//
// And stricter: more than maxHeaderFields fields, or a block over
// MaxHeaderBytes, is a parse error (header bombs); chunk sizes over 2^60
// are refused.

// corpusPayloads returns the TCP payloads of a few shipped captures, as
// seeds.
func corpusPayloads(f *testing.F) (client, server [][]byte) {
	f.Helper()
	names := []string{
		"curl-nginx-put-continue.pcap.gz", "curl-chunked-expect-multi.pcap.gz",
		"curl-nginx-417-retry-desync.pcap.gz", "raw-pipelined-expect.pcap.gz",
		"curl-rawsrv-double-100.pcap.gz", "curl-http10-expect-multi.pcap.gz",
	}
	for _, n := range names {
		src, err := capture.Open([]string{filepath.Join("..", "testdata", "corpus", "direct", n)}, capture.Options{})
		if err != nil {
			if os.IsNotExist(errors.Unwrap(err)) {
				continue
			}
			f.Fatal(err)
		}
		for {
			seg, err := src.Next()
			if err != nil {
				break
			}
			if len(seg.Payload) == 0 {
				continue
			}
			p := bytes.Clone(seg.Payload)
			if seg.Dst.Port() < seg.Src.Port() {
				client = append(client, p)
			} else {
				server = append(server, p)
			}
		}
		src.Close()
	}
	return client, server
}

var headSeedsReq = []string{
	putExpect,
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
	"POST /p HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\nExpect: foo\r\n\r\n",
	"PUT /x HTTP/1.1\nHost: h\nContent-Length: 5, 5\n\n",
	"PUT /x HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\nContent-Length: 3\r\n\r\n",
	"PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
	"GET http://e.com/\x1b[2J HTTP/1.1\r\nHost: e.com\r\n\r\n",
	"PUT /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
	"PUT /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
}

var headSeedsResp = []string{
	"HTTP/1.1 100 Continue\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
	"HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.0 200\r\nServer: x\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVia: 1.1 p\r\n\r\n",
	"HTTP/1.1 100 Continue\r\nContent-Length: 4\r\n\r\n",
	"HTTP/1.1 999 X\nContent-Length: 1\n\n",
}

// headBlock cuts data at the end of its header block, as the connection
// parser would hand it over.
func headBlock(data []byte) ([]byte, bool) {
	i := headerEnd(data, 0)
	if i < 0 || i > 64<<10 {
		return nil, false
	}
	return data[:i], true
}

func FuzzRequestHead(f *testing.F) {
	for _, s := range headSeedsReq {
		f.Add([]byte(s))
	}
	cl, _ := corpusPayloads(f)
	for _, p := range cl {
		if looksLikeRequest(p) == guessYes {
			f.Add(p)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		block, ok := headBlock(data)
		if !ok {
			return
		}
		rh, err := parseRequestHead(block)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || len(pe.Near) > 32 {
				t.Fatalf("error %v is not a bounded *ParseError", err)
			}
		}
		req, herr := http.ReadRequest(bufio.NewReader(bytes.NewReader(block)))
		if err != nil || herr != nil {
			return
		}
		if rh.method != req.Method {
			t.Errorf("method %q, net/http %q", rh.method, req.Method)
		}
		if len(req.RequestURI) <= maxKeptValue && rh.target != req.RequestURI {
			t.Errorf("target %q, net/http %q", rh.target, req.RequestURI)
		}
		if rh.version != req.Proto {
			t.Errorf("version %q, net/http %q", rh.version, req.Proto)
		}
		compareFraming(t, &rh.h, req.ProtoAtLeast(1, 1), req.TransferEncoding, req.ContentLength, true)
	})
}

func FuzzResponseHead(f *testing.F) {
	for _, s := range headSeedsResp {
		f.Add([]byte(s))
	}
	_, sv := corpusPayloads(f)
	for _, p := range sv {
		if bytes.HasPrefix(p, []byte("HTTP/")) {
			f.Add(p)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		block, ok := headBlock(data)
		if !ok {
			return
		}
		rh, err := parseResponseHead(block)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || len(pe.Near) > 32 {
				t.Fatalf("error %v is not a bounded *ParseError", err)
			}
		}
		resp, herr := http.ReadResponse(bufio.NewReader(bytes.NewReader(block)), nil)
		if err != nil || herr != nil {
			return
		}
		if rh.status != resp.StatusCode {
			t.Errorf("status %d, net/http %d", rh.status, resp.StatusCode)
		}
		if rh.version != resp.Proto {
			t.Errorf("version %q, net/http %q", rh.version, resp.Proto)
		}
		// net/http frames 1xx, 204 and 304 as bodiless whatever they say.
		if resp.StatusCode >= 200 && resp.StatusCode != 204 && resp.StatusCode != 304 {
			compareFraming(t, &rh.h, resp.ProtoAtLeast(1, 1), resp.TransferEncoding, resp.ContentLength, false)
		}
	})
}

// compareFraming checks Content-Length and chunked against what net/http
// decided for a message both accepted.
func compareFraming(t *testing.T, h *header, http11 bool, te []string, cl int64, isReq bool) {
	t.Helper()
	httpChunked := len(te) > 0 && te[len(te)-1] == "chunked"
	if http11 && h.chunked != httpChunked {
		t.Errorf("chunked %v, net/http %v (TE %q)", h.chunked, httpChunked, te)
	}
	if httpChunked || h.te {
		return
	}
	want := cl
	got := h.contentLength
	if got < 0 && isReq {
		got = 0 // net/http: a request without Content-Length has none
	}
	if got != want {
		t.Errorf("Content-Length %d, net/http %d", got, want)
	}
}

func FuzzChunked(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), uint16(3))
	f.Add([]byte("5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"), uint16(1))
	f.Add([]byte("0000000000000005\r\nhello\r\n0\r\n\r\n"), uint16(0))
	f.Add([]byte("8000000000000000\r\n"), uint16(0))
	f.Add([]byte("fffffffffffffff\r\nx"), uint16(7))
	f.Add([]byte("5\nhello\n0\n\n"), uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		// Ours, fed in pieces of a fuzz-chosen size.
		var br bodyReader
		br.reset(bodyChunked, 0)
		step := int(split%64) + 1
		used, done := 0, false
		var perr error
		for used < len(data) && !done && perr == nil {
			end := min(used+step, len(data))
			n, d, err := br.consume(data[used:end])
			if n < 0 || n > end-used {
				t.Fatalf("consume used %d of %d", n, end-used)
			}
			if err == nil && !d && n != end-used {
				t.Fatalf("consume stopped at %d of %d without error or end", n, end-used)
			}
			used += n
			done, perr = d, err
		}
		if br.data < 0 || br.wire < br.data || br.wire > int64(used) {
			t.Fatalf("data %d wire %d used %d", br.data, br.wire, used)
		}
		// net/http on the same bytes: when it decodes them, so must we,
		// to the same length, ending right after the last chunk's CRLF and
		// an empty trailer.
		r := bufio.NewReader(bytes.NewReader(data))
		dec, err := io.ReadAll(httputil.NewChunkedReader(r))
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(r)
		consumed := len(data) - len(rest)
		if !bytes.HasPrefix(rest, []byte("\r\n")) {
			return // a trailer section follows: net/http reads it elsewhere
		}
		if !done || perr != nil {
			t.Fatalf("net/http decoded %d bytes in %d, we: done=%v err=%v", len(dec), consumed, done, perr)
		}
		if br.data != int64(len(dec)) {
			t.Fatalf("decoded %d bytes, net/http %d", br.data, len(dec))
		}
		if used != consumed+2 {
			t.Fatalf("body ended after %d bytes, net/http after %d+2", used, consumed)
		}
	})
}

// A conn script is a byte string of steps; each step is an op byte and,
// for data, a length byte and that many bytes (fewer at the end):
//
//	op&7: 0,1 data from client/server; 2,3 gap on client/server side
//	(op&8: size known, n = next byte); 4,5 FIN client/server; 6 RST (and
//	Close); 7 a pause. op>>4 is the milliseconds elapsed before the step.
const (
	opCData = iota
	opSData
	opCGap
	opSGap
	opCFin
	opSFin
	opRST
	opPause
)

func script(evs []ev) []byte {
	var b []byte
	var lastMs float64
	for _, e := range evs {
		dt := int(e.ms - lastMs)
		lastMs = e.ms
		dt = max(0, min(dt, 15))
		var op byte
		side := byte(0)
		if e.who == "s" {
			side = 1
		}
		switch e.kind {
		case "":
			for d := []byte(e.data); len(d) > 0; {
				n := min(len(d), 255)
				b = append(b, byte(dt)<<4|opCData+side, byte(n))
				b = append(b, d[:n]...)
				d = d[n:]
				dt = 0
			}
			continue
		case "gap":
			op = opCGap + side
		case "fin":
			op = opCFin + side
		case "rst":
			op = opRST
		}
		b = append(b, byte(dt)<<4|op)
	}
	return b
}

// connSeeds are scenarios of conn_test.go and a few hostile ones.
var connSeeds = [][]ev{
	{{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
		{"c", 2, "0123456789", ""}, {"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
		{"c", 2, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", ""}, {"c", 3, "0123456789", ""},
		{"s", 4, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
		{"c", 2, "0123456789", ""}, {"c", 3, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", ""},
		{"s", 4, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
		{"c", 2, "01234", ""}, {"s", 3, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""},
		{"c", 4, "56", ""}, {"s", 5, "", "rst"}},
	{{"c", 0, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", ""},
		{"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
		{"c", 2, "5\r\nhello\r\n0\r\n\r\n", ""}, {"s", 3, "HTTP/1.1 204 No Content\r\n\r\n", ""}},
	{{"c", 0, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + putExpect, ""},
		{"s", 1, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 100 Continue\r\n\r\n", ""},
		{"c", 2, "0123456789GET /b HTTP/1.1\r\nHost: h\r\n\r\n", ""},
		{"s", 3, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""}},
	{{"s", 0, "HTTP/1.1 100 Continue\r\n\r\n", ""}, {"c", 1, "tail of a body", ""},
		{"s", 2, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		{"c", 3, putExpect, ""}, {"s", 4, "HTTP/1.1 100 Continue\r\n\r\n", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "", "gap"}, {"c", 2, "0123456789", ""},
		{"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n", ""}},
	{{"c", 0, putExpect, ""}, {"s", 1, "Content-Length: 0\r\n\r\n", ""}, {"c", 2, "0123456789", ""}},
	{{"c", 0, "CONNECT h:443 HTTP/1.1\r\n\r\n", ""}, {"s", 1, "HTTP/1.1 200 OK\r\n\r\n", ""}, {"c", 2, "\x16\x03\x01", ""}},
	{{"c", 0, "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", ""}},
}

// runScript feeds a script to one connection of a fresh Analyzer and
// checks the invariants: every request yields exactly one record once the
// connection is closed and the analyzer flushed, never two.
func runScript(t *testing.T, handshake bool, prog []byte) {
	var recs []*Record
	seen := map[string]bool{}
	a := New(Config{All: true, MaxHeaderBytes: 4096, HuntBudget: 8192, Emit: func(r *Record) {
		if seen[r.ID] {
			t.Fatalf("record %s emitted twice", r.ID)
		}
		seen[r.ID] = true
		recs = append(recs, r)
	}})
	info := reassembly.ConnInfo{
		A:         netip.MustParseAddrPort("10.0.0.1:40000"),
		B:         netip.MustParseAddrPort("10.0.0.2:80"),
		Handshake: handshake, FirstSeen: t0, FirstPacket: 1,
	}
	s := a.New(info)
	now := t0
	closed := false
	var ended [2]bool // the Stream contract: no Data or Gap on a side after its End
	for len(prog) > 0 && !closed {
		op := prog[0]
		prog = prog[1:]
		now = now.Add(time.Duration(op>>4) * time.Millisecond)
		side := reassembly.Side(op & 1)
		switch op & 7 {
		case opCData, opSData:
			if len(prog) == 0 {
				break
			}
			n := min(int(prog[0]), len(prog)-1)
			b := bytes.Clone(prog[1 : 1+n])
			prog = prog[1+n:]
			if n > 0 && !ended[side] {
				s.Data(side, b, now)
				clear(b) // the assembler reuses its buffers
			}
		case opCGap, opSGap:
			n := int64(-1)
			if op&8 != 0 && len(prog) > 0 {
				n = int64(prog[0])
				prog = prog[1:]
			}
			if !ended[side] {
				s.Gap(side, n, now)
			}
		case opCFin, opSFin:
			if !ended[side] {
				s.End(side, reassembly.EndFIN, now)
				ended[side] = true
			}
		case opRST:
			s.End(side, reassembly.EndRST, now)
			s.Close(reassembly.EndRST, now)
			closed = true
		}
	}
	s.Close(reassembly.EndCapture, now)
	a.Flush()
	st := a.Stats()
	if uint64(len(recs)) != st.Requests {
		t.Fatalf("%d requests, %d records", st.Requests, len(recs))
	}
	for _, r := range recs {
		if r.Type == TypeNegotiation && r.Verdict == "" {
			t.Fatalf("negotiation %s without verdict", r.ID)
		}
		if r.BodyBytes < 0 || r.BodyDataBytes < 0 {
			t.Fatalf("record %s: negative body bytes", r.ID)
		}
	}
}

func FuzzConn(f *testing.F) {
	for _, evs := range connSeeds {
		f.Add(true, script(evs))
		f.Add(false, script(evs))
	}
	cl, sv := corpusPayloads(f)
	var evs []ev
	for i := 0; i < len(cl) && i < len(sv) && i < 6; i++ {
		evs = append(evs, ev{"c", float64(2 * i), string(cl[i]), ""}, ev{"s", float64(2*i + 1), string(sv[i]), ""})
	}
	f.Add(true, script(evs))
	f.Fuzz(func(t *testing.T, handshake bool, prog []byte) {
		runScript(t, handshake, prog)
	})
}
