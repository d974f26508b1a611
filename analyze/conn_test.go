package analyze

import (
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
