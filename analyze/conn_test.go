package analyze

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/reassembly"
)

// ev is one step of a hand-written connection: bytes from the client
// ("c") or server ("s") at a millisecond offset, or "gap", "fin", "rst".
type ev struct {
	who  string // c, s
	ms   float64
	data string
	kind string // "", gap, fin, rst
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func at(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }

// run feeds events to a fresh Analyzer as the assembler would.
func run(t *testing.T, handshake bool, evs []ev, cfg Config) []*Record {
	t.Helper()
	var out []*Record
	cfg.Emit = func(r *Record) { out = append(out, r) }
	a := New(cfg)
	info := reassembly.ConnInfo{
		A:         netip.MustParseAddrPort("10.0.0.1:40000"),
		B:         netip.MustParseAddrPort("10.0.0.2:80"),
		Handshake: handshake, FirstSeen: t0, FirstPacket: 1,
	}
	if !handshake && len(evs) > 0 && evs[0].who == "s" {
		info.A, info.B = info.B, info.A
	}
	s := a.New(info)
	side := func(who string) reassembly.Side {
		if (who == "c") == (info.A.Port() == 40000) {
			return reassembly.SideA
		}
		return reassembly.SideB
	}
	last := t0
	for _, e := range evs {
		last = at(e.ms)
		switch e.kind {
		case "":
			s.Data(side(e.who), []byte(e.data), last)
		case "gap":
			s.Gap(side(e.who), -1, last)
		case "fin":
			s.End(side(e.who), reassembly.EndFIN, last)
		case "rst":
			s.End(side(e.who), reassembly.EndRST, last)
			s.Close(reassembly.EndRST, last)
		}
	}
	s.Close(reassembly.EndCapture, last)
	a.Flush()
	return out
}

const putExpect = "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"

func TestNegotiations(t *testing.T) {
	tests := []struct {
		name      string
		evs       []ev
		all       bool
		handshake bool
		want      []string // "type verdict flag,flag" per record in order
	}{
		{"continued", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 2, "0123456789", ""}, {"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ""},
		}, false, true, []string{"negotiation continued"}},
		{"100 and final in one segment", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", ""},
			{"c", 2, "", "fin"},
		}, false, true, []string{"negotiation continued"}},
		{"two 100s in one segment", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 2, "0123456789", ""}, {"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation continued duplicate-100"}},
		{"100 with headers", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\nX-A: b\r\n\r\n", ""},
			{"c", 2, "0123456789", ""}, {"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation continued 100-with-headers"}},
		{"timed out, late 100", []ev{
			{"c", 0, putExpect, ""}, {"c", 1000, "0123456789", ""},
			{"s", 2000, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation timed-out late-100"}},
		{"no wait, 100 after body", []ev{
			{"c", 0, putExpect, ""}, {"c", 0.1, "0123456789", ""},
			{"s", 5, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation no-wait 100-after-body"}},
		{"417 then curl retry on same conn, nginx desync", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 2, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", ""}, {"c", 3, "0123456789", ""},
			{"s", 4, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""},
		}, true, true, []string{"negotiation rejected retried-without-expect,unread-body", "exchange "}},
		{"417, then the same request again with Expect: a retry, not the one asked for", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 2, "0123456789", ""},
			{"c", 3, putExpect, ""}, {"s", 4, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 5, "0123456789", ""},
		}, false, true, []string{"negotiation rejected body-after-417,no-retry-after-417", "negotiation rejected body-after-417,no-retry-after-417"}},
		{"body despite 417, keeps sync", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 2, "0123456789", ""},
			{"c", 3, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", ""}, {"s", 4, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation rejected body-after-417,no-retry-after-417"}},
		{"body despite 417, server reads it as a request", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 2, "0123456789", ""},
			{"s", 3, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation rejected body-after-417,no-retry-after-417,unread-body"}},
		{"413 without 100, close", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""},
			{"s", 1.1, "", "fin"}, {"c", 1.2, "", "fin"},
		}, false, true, []string{"negotiation final-before-body"}},
		{"unanswered", []ev{{"c", 0, putExpect, ""}, {"c", 500, "", "fin"}}, false, true, []string{"negotiation unanswered"}},
		{"error after 100, server closes mid body", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 2, "01234", ""}, {"s", 3, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 4, "56", ""}, {"s", 5, "", "rst"},
		}, false, true, []string{"negotiation continued body-after-final,error-after-100,closed-mid-body"}},
		{"chunked continued", []ev{
			{"c", 0, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", ""},
			{"s", 1, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 2, "5\r\nhello\r\n0\r\n\r\n", ""}, {"s", 3, "HTTP/1.1 204 No Content\r\n\r\n", ""},
		}, false, true, []string{"negotiation continued"}},
		{"pipelined GET then PUT", []ev{
			{"c", 0, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + putExpect, ""},
			{"s", 1, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 2, "0123456789GET /b HTTP/1.1\r\nHost: h\r\n\r\n", ""},
			{"s", 3, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, true, true, []string{"exchange ", "negotiation continued", "exchange "}},
		{"unsolicited 100", []ev{
			{"c", 0, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab", ""},
			{"s", 1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, true, true, []string{"exchange  unsolicited-100"}},
		{"unknown expectation, HTTP/1.0", []ev{
			{"c", 0, "POST /p HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\nExpect: foo\r\n\r\nab", ""},
			{"s", 1, "HTTP/1.0 417 Expectation Failed\r\n\r\n", ""}, {"s", 1.1, "", "fin"},
		}, false, true, []string{"negotiation no-wait unknown-expectation,expect-on-http10,no-retry-after-417"}},
		{"expect without body", []ev{
			{"c", 0, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n", ""},
			{"s", 1, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation final-before-body expect-without-body"}},
		{"mid-stream: orphan 100, then a whole exchange", []ev{
			{"s", 0, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 1, "tail of a body", ""},
			{"s", 2, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
			{"c", 3, putExpect, ""}, {"s", 4, "HTTP/1.1 100 Continue\r\n\r\n", ""},
			{"c", 5, "0123456789", ""}, {"s", 6, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, false, []string{"negotiation continued"}},
		{"gap before the answer", []ev{
			{"c", 0, putExpect, ""}, {"s", 1, "", "gap"}, {"c", 2, "0123456789", ""},
			{"s", 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""},
		}, false, true, []string{"negotiation incomplete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := run(t, tt.handshake, tt.evs, Config{All: tt.all})
			var got []string
			for _, r := range recs {
				fl := make([]string, len(r.Flags))
				for i, f := range r.Flags {
					fl[i] = string(f)
				}
				slices.Sort(fl)
				got = append(got, strings.TrimSpace(r.Type+" "+string(r.Verdict)+" "+strings.Join(fl, ",")))
			}
			var want []string
			for _, w := range tt.want {
				parts := strings.SplitN(w, " ", 3)
				if len(parts) == 3 {
					fl := strings.Split(parts[2], ",")
					slices.Sort(fl)
					w = parts[0] + " " + parts[1] + " " + strings.Join(fl, ",")
				}
				want = append(want, strings.TrimSpace(w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// TestRequestAfterEarlyFinal: after a 417 that keeps the connection, the
// client's next bytes begin like a request. They are that request (curl
// repeating it), or the body the server was told about and refused, as
// HAProxy sends the client's repeat upstream and nginx reads it: the
// framing whose next message starts with a request line wins, and a
// response, a gap or the end before that settles it. Each case is fed
// in whole segments and a byte at a time.
func TestRequestAfterEarlyFinal(t *testing.T) {
	const (
		refused = "PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 120\r\nExpect: 100-continue\r\n\r\n"
		e417    = "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"
		repeat  = "PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 120\r\n\r\n" // 49 bytes
		next    = "PUT /n HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
		ok      = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	)
	fill := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name string
		evs  []ev
		want []string // "type|verdict|flags|after_early_final|body_bytes" per record, by id
	}{
		{"the repeat is the refused body: a request line where that body ends (HAProxy upstream, nginx)", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, repeat + fill(120-len(repeat)), ""}, {"c", 3, next, ""},
			{"s", 4, "HTTP/1.1 100 Continue\r\n\r\n", ""}, {"c", 5, "abc", ""}, {"s", 6, ok, ""},
		}, []string{
			"negotiation|rejected|body-after-417,no-retry-after-417|body|120",
			"negotiation|continued|||3",
		}},
		{"the repeat is a request: its own body where the refused one would end (curl)", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, repeat + fill(120), ""}, {"s", 3, ok, ""},
		}, []string{
			"negotiation|rejected|retried-without-expect|new-request|0",
			"exchange||||120",
		}},
		{"a repeat without a body, then a request where it ends", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, "PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n" + next, ""},
			{"s", 3, ok, ""}, {"s", 4, "HTTP/1.1 100 Continue\r\n\r\n", ""}, {"c", 5, "abc", ""}, {"s", 6, ok, ""},
		}, []string{
			"negotiation|rejected|retried-without-expect|new-request|0",
			"exchange||||0",
			"negotiation|continued|||3",
		}},
		{"the server answers before either end: a request", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, repeat + fill(10), ""}, {"s", 3, ok, ""}, {"c", 4, fill(110), ""},
		}, []string{
			"negotiation|rejected|retried-without-expect|new-request|0",
			"exchange||||120",
		}},
		{"the bytes stop where the refused body ends and the client closes: that body", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, repeat + fill(120-len(repeat)), ""}, {"c", 3, "", "fin"},
		}, []string{
			"negotiation|rejected|body-after-417,no-retry-after-417|body|120",
		}},
		{"a head cut short by the end: a request, as a request line is", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, "PUT /z HTTP/1.1\r\nHost: h\r\n", ""}, {"c", 3, "", "fin"},
		}, []string{
			"negotiation|rejected|no-retry-after-417|new-request|0",
		}},
		{"a head cut short by a response: a request, as a request line is", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, "PUT /z HTTP/1.1\r\nHost: h\r\n", ""}, {"s", 3, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n", ""},
			{"s", 4, "", "fin"},
		}, []string{
			"negotiation|rejected|no-retry-after-417|new-request|0",
		}},
		{"the bytes stop short of both ends: a request, cut", []ev{
			{"c", 0, refused, ""}, {"s", 1, e417, ""},
			{"c", 2, repeat + fill(30), ""}, {"c", 3, "", "fin"},
		}, []string{
			"negotiation|rejected|retried-without-expect|new-request|0",
			"exchange||||30",
		}},
	}
	// A large repeat sent slowly: undecided, it would be noted to the
	// retry linker only after the 417's 30 s window; after 5 s it is
	// taken as the request it looks like, and linked.
	const big = "PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
	slow := []ev{{"c", 0, big, ""}, {"s", 1, e417, ""}, {"c", 2, "PUT /z HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n", ""}}
	for i := 1; i <= 8; i++ {
		slow = append(slow, ev{"c", float64(i) * 5000, fill(12500), ""})
	}
	tests = append(tests, struct {
		name string
		evs  []ev
		want []string
	}{"a slow repeat undecided after 5 s is taken as a request", append(slow, ev{"s", 40100, ok, ""}), []string{
		"negotiation|rejected|retried-without-expect|new-request|0",
		"exchange||||100000",
	}})
	for _, tt := range tests {
		for _, bytewise := range []bool{false, true} {
			if bytewise && len(tt.evs) > 8 {
				continue // the slow repeat, 100 000 bytes: whole segments only
			}
			t.Run(fmt.Sprintf("%s/bytewise=%v", tt.name, bytewise), func(t *testing.T) {
				evs := tt.evs
				if bytewise {
					evs = nil
					for _, e := range tt.evs {
						if e.who != "c" || len(e.data) < 2 {
							evs = append(evs, e)
							continue
						}
						for i := range len(e.data) {
							evs = append(evs, ev{e.who, e.ms, e.data[i : i+1], ""})
						}
					}
				}
				var got []string
				recs := run(t, true, evs, Config{All: true})
				slices.SortFunc(recs, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
				for _, r := range recs {
					fl := make([]string, len(r.Flags))
					for i, f := range r.Flags {
						fl[i] = string(f)
					}
					slices.Sort(fl)
					got = append(got, fmt.Sprintf("%s|%s|%s|%s|%d", r.Type, r.Verdict, strings.Join(fl, ","), r.AfterEarlyFinal, r.BodyBytes))
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("got  %q\nwant %q", got, tt.want)
				}
			})
		}
	}
}

// TestParserStatesReused: connections of one Analyzer that park and
// speak again, interleaved byte by byte, get the records each gets alone:
// a parser state given back by one connection and reused by another
// carries nothing over.
func TestParserStatesReused(t *testing.T) {
	convs := [][]ev{
		{{who: "c", ms: 0, data: putExpect}, {who: "s", ms: 1, data: "HTTP/1.1 100 Continue\r\n\r\n"},
			{who: "c", ms: 2, data: "0123456789"}, {who: "s", ms: 3, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
			{who: "c", ms: 4, data: "GET /x HTTP/1.1\r\nHost: h\r\n\r\n"}, {who: "s", ms: 5, data: "HTTP/1.1 204 No Content\r\n\r\n"}},
		{{who: "c", ms: 0, data: "\x00\x01junk" + putExpect}, {who: "s", ms: 1, data: "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"},
			{who: "c", ms: 2, data: strings.Replace(putExpect, "Expect: 100-continue\r\n", "", 1) + "0123456789"},
			{who: "s", ms: 3, data: "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"}},
		{{who: "c", ms: 0, data: "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"},
			{who: "s", ms: 1, data: "HTTP/1.1 100 Continue\r\n\r\n"}, {who: "c", ms: 2, data: "5\r\nhello\r\n0\r\n\r\n"},
			{who: "s", ms: 3, data: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"}},
	}
	render := func(recs []*Record) string {
		var b strings.Builder
		for _, r := range recs {
			fmt.Fprintf(&b, "%s %s %s %v %d %d|", r.ID, r.Request.Target, r.Verdict, r.Flags, r.BodyBytes, r.Gaps)
		}
		return b.String()
	}
	var want []string
	for _, evs := range convs {
		want = append(want, render(run(t, true, evs, Config{All: true})))
	}
	var out [3][]*Record
	a := New(Config{All: true, Emit: func(r *Record) {
		i := int(r.Packet) // the connection's first packet: 1, 2, 3
		out[i-1] = append(out[i-1], r)
	}})
	var streams []reassembly.Stream
	for i := range convs {
		streams = append(streams, a.New(reassembly.ConnInfo{
			A:         netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(40000+i)),
			B:         netip.MustParseAddrPort("10.0.0.2:80"),
			Handshake: true, FirstSeen: t0, FirstPacket: uint64(i + 1),
		}))
	}
	// Every connection gets one byte in turn, so that each parks, and
	// takes back a parser state, between bytes.
	pos := make([][2]int, len(convs)) // event, byte
	for more := true; more; {
		more = false
		for i, evs := range convs {
			p := &pos[i]
			if p[0] == len(evs) {
				continue
			}
			more = true
			e := evs[p[0]]
			side := reassembly.SideA
			if e.who == "s" {
				side = reassembly.SideB
			}
			streams[i].Data(side, []byte{e.data[p[1]]}, at(e.ms))
			if p[1]++; p[1] == len(e.data) {
				p[0], p[1] = p[0]+1, 0
			}
		}
	}
	for _, s := range streams {
		s.Close(reassembly.EndCapture, at(10))
	}
	a.Flush()
	for i := range convs {
		for _, r := range out[i] {
			r.ID = strings.Replace(r.ID, fmt.Sprint(i+1)+"-", "1-", 1) // run's connection is packet 1
		}
		if got := render(out[i]); got != want[i] {
			t.Errorf("connection %d interleaved:\n got %s\nwant %s", i, got, want[i])
		}
	}
}

// TestParserStateNotShared: a connection that parks holding the first
// bytes of its next request gives its parser state back; the connection
// that takes it next, with nothing of its own held, must not read those
// bytes as its own.
func TestParserStateNotShared(t *testing.T) {
	var recs []*Record
	a := New(Config{All: true, Emit: func(r *Record) { recs = append(recs, r) }})
	conn := func(port uint16, first uint64) reassembly.Stream {
		return a.New(reassembly.ConnInfo{A: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port),
			B: netip.MustParseAddrPort("10.0.0.2:80"), Handshake: true, FirstSeen: t0, FirstPacket: first})
	}
	x := conn(40000, 1)
	x.Data(reassembly.SideA, []byte("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), at(0))
	x.Data(reassembly.SideB, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), at(1))
	x.Data(reassembly.SideA, []byte("GE"), at(2)) // parks holding "GE"
	y := conn(40001, 2)
	y.Data(reassembly.SideA, []byte(putExpect), at(3))
	y.Data(reassembly.SideB, []byte("HTTP/1.1 100 Continue\r\n\r\n"), at(4))
	y.Data(reassembly.SideA, []byte("0123456789"), at(5))
	y.Data(reassembly.SideB, []byte("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"), at(6))
	x.Data(reassembly.SideA, []byte("T /b HTTP/1.1\r\nHost: h\r\n\r\n"), at(7))
	x.Data(reassembly.SideB, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), at(8))
	x.Close(reassembly.EndCapture, at(9))
	y.Close(reassembly.EndCapture, at(9))
	a.Flush()
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s %s %s", r.ID, r.Request.Method, r.Request.Target, r.Verdict))
	}
	slices.Sort(got)
	want := []string{"1-1 GET /a ", "1-2 GET /b ", "2-1 PUT /up continued"}
	if !slices.Equal(got, want) {
		t.Errorf("records %q, want %q", got, want)
	}
	if st := a.Stats(); st.ParseErrors != 0 || st.Resyncs != 0 {
		t.Errorf("stats %+v", st)
	}
}
