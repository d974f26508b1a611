package analyze

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var ct0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func cAt(ms float64) time.Time { return ct0.Add(time.Duration(ms * float64(time.Millisecond))) }
func cAtp(ms float64) *time.Time {
	t := cAt(ms)
	return &t
}
func ci64(n int64) *int64 { return &n }

// cleg is a compact description of one hand-built request.
type cleg struct {
	id, client, server, method, target, version, expect string
	cl                                                  *int64
	chunked                                             bool
	data                                                int64   // decoded body bytes seen
	hdr                                                 float64 // headers end (ms)
	bodyStart, bodyEnd                                  float64 // 0: no body
	i100                                                float64 // 0: no 100
	status                                              int
	reason, server_, via, xff, xrid, host               string
	fin                                                 float64
}

func (l cleg) rec() *Record {
	r := &Record{
		Type: TypeExchange, ID: l.id, Conn: Conn{l.client, l.server},
		Request: Request{Method: l.method, Target: l.target, Version: l.version, Host: l.host, Expect: l.expect,
			ContentLength: l.cl, Chunked: l.chunked, XForwardedFor: l.xff, XRequestID: l.xrid},
		HeadersEndAt: cAt(l.hdr), BodyBytes: l.data, BodyDataBytes: l.data, BodyComplete: true,
	}
	if r.Request.Method == "" {
		r.Request.Method = "POST"
	}
	if r.Request.Version == "" {
		r.Request.Version = "HTTP/1.1"
	}
	if l.expect != "" {
		r.Type = TypeNegotiation
	}
	if l.bodyStart > 0 {
		r.BodyStartAt, r.BodyEndAt = cAtp(l.bodyStart), cAtp(l.bodyEnd)
	}
	if l.i100 > 0 {
		r.Interim = []Interim{{Status: 100, At: cAt(l.i100)}}
	}
	if l.status > 0 {
		reason := l.reason
		if reason == "" {
			reason = "R"
		}
		r.Final = &Final{Status: l.status, Reason: reason, Server: l.server_, Via: l.via, At: cAt(l.fin)}
	}
	return r
}

type wantHop struct {
	down, up string
	changes  []string
}

func TestCorrelate(t *testing.T) {
	const (
		cli   = "10.0.0.1:50000"
		cli2  = "10.0.0.1:50002"
		proxy = "10.0.0.5:3128"
		pOut  = "10.0.0.5:40000"
		pOut2 = "10.0.0.5:40002"
		orig  = "10.0.0.9:80"
	)
	cases := []struct {
		name  string
		legs  []cleg
		want  []wantHop
		check func(t *testing.T, recs map[string]*Record, hops []*Hop)
	}{
		{
			name: "absolute-form to origin-form, Via and XFF added, 100 relayed",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "http://Example.com:80/up?a=1", expect: "100-continue", cl: ci64(10), data: 10, hdr: 1, i100: 3, bodyStart: 4, bodyEnd: 4.5, status: 200, fin: 8, host: "example.com", via: "1.1 squid"},
				{id: "u", client: pOut, server: orig, target: "/up?a=1", expect: "100-continue", cl: ci64(10), data: 10, hdr: 2, i100: 2.5, bodyStart: 5, bodyEnd: 6, status: 200, fin: 7, host: "example.com", xff: "10.0.0.1"},
			},
			want: []wantHop{{"d", "u", nil}},
		},
		{
			name: "lower-cased everything: method and Host case, Expect token case",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, method: "PUT", target: "/x", expect: "100-Continue", cl: ci64(5), hdr: 1, status: 413, fin: 3, host: "EXAMPLE.COM"},
				{id: "u", client: pOut, server: orig, method: "put", target: "/x", expect: "100-continue", cl: ci64(5), hdr: 2, status: 413, fin: 2.5, host: "example.com"},
			},
			want: []wantHop{{"d", "u", nil}},
		},
		{
			name: "chunked downstream, Content-Length upstream, buffered, HTTP/1.0, own 100, 413 became 502",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/c", expect: "100-continue", chunked: true, data: 1000, hdr: 1, i100: 1.1, bodyStart: 1.5, bodyEnd: 3, status: 502, reason: "Bad Gateway", fin: 6},
				{id: "u", client: pOut, server: orig, target: "/c", version: "HTTP/1.0", cl: ci64(1000), data: 1000, hdr: 4, bodyStart: 4, bodyEnd: 4.2, status: 413, fin: 5},
			},
			want: []wantHop{{"d", "u", []string{ChangeExpectStripped, ChangeProxyGenerated100, ChangeStoreAndForward, ChangeVersionDowngrade, ChangeStatusChanged}}},
			check: func(t *testing.T, recs map[string]*Record, hops []*Hop) {
				if hops[0].WastedBytes != 1000 || hops[0].LostMs == nil || *hops[0].LostMs != 4.5 {
					t.Errorf("cost: %d bytes, %v ms", hops[0].WastedBytes, hops[0].LostMs)
				}
				if !recs["d"].HasFlag(FlagViaIntermediary) || !strings.Contains(recs["d"].Diagnosis, "answered 100 itself and buffered the body") {
					t.Errorf("downstream record: %v %q", recs["d"].Flags, recs["d"].Diagnosis)
				}
			},
		},
		{
			name: "chunked length that differs from Content-Length does not pair",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/c", chunked: true, data: 1000, hdr: 1, bodyStart: 1.5, bodyEnd: 3, status: 200, fin: 6},
				{id: "u", client: pOut, server: orig, target: "/c", cl: ci64(999), data: 999, hdr: 4, bodyStart: 4, bodyEnd: 4.2, status: 200, fin: 5},
			},
		},
		{
			name: "upstream connection reused across requests (varnish)",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/a", cl: ci64(3), data: 3, hdr: 1, bodyStart: 1, bodyEnd: 1, status: 200, fin: 5},
				{id: "u1", client: pOut, server: orig, target: "/a", cl: ci64(3), data: 3, hdr: 2, bodyStart: 2, bodyEnd: 2, status: 200, fin: 4},
				{id: "d2", client: cli2, server: proxy, target: "/a", cl: ci64(3), data: 3, hdr: 10, bodyStart: 10, bodyEnd: 10, status: 200, fin: 15},
				{id: "u2", client: pOut, server: orig, target: "/a", cl: ci64(3), data: 3, hdr: 12, bodyStart: 12, bodyEnd: 12, status: 200, fin: 14},
			},
			want: []wantHop{{"d1", "u1", []string{ChangeStoreAndForward}}, {"d2", "u2", []string{ChangeStoreAndForward}}},
		},
		{
			name: "concurrent same target told apart by body length",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/same", cl: ci64(100), hdr: 1, status: 200, fin: 20},
				{id: "d2", client: cli2, server: proxy, target: "/same", cl: ci64(200), hdr: 2, status: 200, fin: 20},
				{id: "u2", client: pOut, server: orig, target: "/same", cl: ci64(200), hdr: 3, status: 200, fin: 10},
				{id: "u1", client: pOut2, server: orig, target: "/same", cl: ci64(100), hdr: 4, status: 200, fin: 10},
			},
			want: []wantHop{{"d1", "u1", nil}, {"d2", "u2", nil}},
		},
		{
			name: "concurrent same target told apart by X-Request-ID",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/same", hdr: 1, status: 200, fin: 20, xrid: "r1"},
				{id: "d2", client: cli2, server: proxy, target: "/same", hdr: 2, status: 200, fin: 20, xrid: "r2"},
				{id: "u2", client: pOut, server: orig, target: "/same", hdr: 3, status: 200, fin: 10, xrid: "r2"},
				{id: "u1", client: pOut2, server: orig, target: "/same", hdr: 4, status: 200, fin: 10, xrid: "r1"},
			},
			want: []wantHop{{"d1", "u1", nil}, {"d2", "u2", nil}},
		},
		{
			name: "concurrent same target, nothing to tell apart: arrival order",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/same", hdr: 1, status: 200, fin: 20},
				{id: "d2", client: cli2, server: proxy, target: "/same", hdr: 2, status: 200, fin: 20},
				{id: "u1", client: pOut, server: orig, target: "/same", hdr: 3, status: 200, fin: 10},
				{id: "u2", client: pOut2, server: orig, target: "/same", hdr: 4, status: 200, fin: 10},
			},
			want: []wantHop{{"d1", "u1", nil}, {"d2", "u2", nil}},
		},
		{
			name: "buffered bodies finish out of order: the body's end decides",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/b", cl: ci64(8), data: 8, hdr: 1, bodyStart: 1, bodyEnd: 9, status: 200, fin: 30},
				{id: "d2", client: cli2, server: proxy, target: "/b", cl: ci64(8), data: 8, hdr: 2, bodyStart: 2, bodyEnd: 3, status: 200, fin: 30},
				{id: "u2", client: pOut, server: orig, target: "/b", cl: ci64(8), data: 8, hdr: 4, bodyStart: 4, bodyEnd: 4, status: 200, fin: 5},
				{id: "u1", client: pOut2, server: orig, target: "/b", cl: ci64(8), data: 8, hdr: 10, bodyStart: 10, bodyEnd: 10, status: 200, fin: 11},
			},
			want: []wantHop{{"d1", "u1", []string{ChangeStoreAndForward}}, {"d2", "u2", []string{ChangeStoreAndForward}}},
		},
		{
			name: "chain of two proxies: one hop each",
			legs: []cleg{
				{id: "d", client: cli, server: "10.0.0.5:80", target: "/k", expect: "100-continue", cl: ci64(10), data: 10, hdr: 1, i100: 1.2, bodyStart: 1.3, bodyEnd: 1.4, status: 200, fin: 9},
				{id: "x", client: "10.0.0.5:41000", server: "10.0.0.6:8080", target: "/k", expect: "100-continue", cl: ci64(10), data: 10, hdr: 1.1, i100: 1.15, bodyStart: 1.35, bodyEnd: 1.5, status: 200, fin: 8},
				{id: "y", client: "10.0.0.6:42000", server: orig, target: "/k", version: "HTTP/1.0", cl: ci64(10), data: 10, hdr: 2, bodyStart: 2, bodyEnd: 2, status: 200, fin: 7},
			},
			want: []wantHop{{"d", "x", nil}, {"x", "y", []string{ChangeExpectStripped, ChangeProxyGenerated100, ChangeStoreAndForward, ChangeVersionDowngrade}}},
		},
		{
			name: "chain on loopback: the middle cleg is taken, not the client's",
			legs: []cleg{
				{id: "d", client: "127.0.0.1:5000", server: "127.0.0.1:8000", target: "/k", hdr: 1, status: 200, fin: 9},
				{id: "x", client: "127.0.0.1:5001", server: "127.0.0.1:8001", target: "/k", hdr: 2, status: 200, fin: 8},
				{id: "y", client: "127.0.0.1:5002", server: "127.0.0.1:8002", target: "/k", hdr: 3, status: 200, fin: 7},
			},
			want: []wantHop{{"d", "x", nil}, {"x", "y", nil}},
		},
		{
			name: "upstream that started before the downstream is never paired",
			legs: []cleg{
				{id: "u", client: pOut, server: orig, target: "/e", hdr: 1, status: 200, fin: 3},
				{id: "d", client: cli, server: proxy, target: "/e", hdr: 2, status: 200, fin: 4},
			},
		},
		{
			name: "requests after the downstream's final are not its upstream",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/e", hdr: 1, status: 200, fin: 2},
				{id: "u", client: pOut, server: orig, target: "/e", hdr: 3, status: 200, fin: 4},
			},
		},
		{
			name: "direct clients of one server on loopback make no hop",
			legs: []cleg{
				{id: "a", client: "127.0.0.1:5000", server: "127.0.0.1:80", target: "/e", hdr: 1, status: 200, fin: 5},
				{id: "b", client: "127.0.0.1:5001", server: "127.0.0.1:80", target: "/e", hdr: 2, status: 200, fin: 4},
			},
		},
		{
			name: "upstream 100 and 417 not relayed, expect added",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/f", cl: ci64(4), hdr: 1, status: 200, fin: 9},
				{id: "u", client: pOut, server: orig, target: "/f", expect: "100-continue", cl: ci64(4), hdr: 2, i100: 3, status: 417, fin: 4},
			},
			want: []wantHop{{"d", "u", []string{ChangeExpectAdded, Change100NotRelayed, Change417NotRelayed, ChangeStatusChanged}}},
		},
		{
			name: "same status, other reason",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/g", hdr: 1, status: 413, reason: "Payload Too Large", fin: 9},
				{id: "u", client: pOut, server: orig, target: "/g", hdr: 2, status: 413, reason: "Request Entity Too Large", fin: 4},
			},
			want: []wantHop{{"d", "u", []string{ChangeReasonChanged}}},
		},
		{
			name: "417 from the proxy, upstream never asked: hop without upstream",
			legs: []cleg{
				{id: "d", client: cli, server: proxy, target: "/h", expect: "100-continue", cl: ci64(4), hdr: 1, status: 417, fin: 2, server_: "squid/5.7"},
			},
			want: []wantHop{{"d", "", []string{ChangeProxy417}}},
			check: func(t *testing.T, recs map[string]*Record, hops []*Hop) {
				b, _ := json.Marshal(hops[0])
				if !strings.Contains(string(b), `"upstream":null`) || !strings.HasPrefix(string(b), `{"type":"hop"`) {
					t.Errorf("json %s", b)
				}
				if !recs["d"].HasFlag(FlagViaIntermediary) {
					t.Errorf("flags %v", recs["d"].Flags)
				}
			},
		},
		{
			name: "417 with Via only: flagged, no hop; nginx 417: nothing",
			legs: []cleg{
				{id: "v", client: cli, server: proxy, target: "/h", expect: "100-continue", cl: ci64(4), hdr: 1, status: 417, fin: 2, via: "1.1 proxy"},
				{id: "n", client: cli2, server: orig, target: "/i", expect: "100-continue", cl: ci64(4), hdr: 1, status: 417, fin: 2, server_: "nginx/1.22.1"},
			},
			check: func(t *testing.T, recs map[string]*Record, hops []*Hop) {
				if !recs["v"].HasFlag(FlagViaIntermediary) || recs["n"].HasFlag(FlagViaIntermediary) {
					t.Errorf("flags v=%v n=%v", recs["v"].Flags, recs["n"].Flags)
				}
			},
		},
		{
			name: "417 from a proven proxy endpoint with no upstream cleg",
			legs: []cleg{
				{id: "d1", client: cli, server: proxy, target: "/j", hdr: 1, status: 200, fin: 4},
				{id: "u1", client: pOut, server: orig, target: "/j", hdr: 2, status: 200, fin: 3},
				{id: "d2", client: cli2, server: proxy, target: "/j", expect: "100-continue", cl: ci64(9), hdr: 5, status: 417, fin: 6, server_: "nginx"},
			},
			want: []wantHop{{"d1", "u1", nil}, {"d2", "", []string{ChangeProxy417}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var recs []*Record
			byID := map[string]*Record{}
			for _, l := range tc.legs {
				r := l.rec()
				recs = append(recs, r)
				byID[l.id] = r
			}
			hops := Correlate(recs)
			var got []wantHop
			for _, h := range hops {
				got = append(got, wantHop{h.Downstream.ID, h.Upstream.ID, h.Changes})
			}
			norm := func(w []wantHop) string {
				var s []string
				for _, h := range w {
					c := slices.Clone(h.changes)
					slices.Sort(c)
					s = append(s, fmt.Sprintf("%s->%s %v", h.down, h.up, c))
				}
				slices.Sort(s)
				return strings.Join(s, "; ")
			}
			if norm(got) != norm(tc.want) {
				t.Fatalf("hops\n got  %s\n want %s", norm(got), norm(tc.want))
			}
			if tc.check != nil {
				tc.check(t, byID, hops)
			}
		})
	}
}

func TestOriginForm(t *testing.T) {
	for in, want := range map[string]string{
		"http://a.example/x?y": "/x?y",
		"HTTP://a.example:80":  "/",
		"https://a?q=1":        "/?q=1",
		"/already":             "/already",
		"*":                    "*",
		"a.example:443":        "a.example:443",
		"/p?u=http://x/y":      "/p?u=http://x/y",
	} {
		if got := originForm(in); got != want {
			t.Errorf("originForm(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProxyProduct(t *testing.T) {
	for in, want := range map[string]string{
		"squid/5.7": "squid", "ATS/9.2.9": "ats", "envoy": "envoy", "cloudflare": "cloudflare",
		"AkamaiGHost": "akamaighost", "Apache Traffic Server/9.2": "apache traffic server",
		"nginx/1.22.1": "", "Apache/2.4.71 (Debian)": "", "": "", "Varnish": "varnish",
		"  GFE/2.0 ": "gfe", "Google Frontend": "google frontend", "traffic server (x)": "traffic server",
		"apachetrafficserverx": "", "apachetrafficserver/10.0.0.0.0.0.0": "apachetrafficserver",
		"squidsquidsquidsquidsquidsquid": "", "(squid)": "",
	} {
		if got, ref := ProxyProduct(in), proxyProductLowered(in); got != want || ref != want {
			t.Errorf("ProxyProduct(%q) = %q (lower-casing it all: %q), want %q", in, got, ref, want)
		}
	}
	// Against the plain version, on ASCII strings made of the products'
	// pieces, cut and cased at random.
	r := rand.New(rand.NewPCG(3, 4))
	pieces := append([]string{" ", "/", "(", "1.0", "x", "Server", "  "}, proxyProducts...)
	for range 20000 {
		var b strings.Builder
		for range r.IntN(4) + 1 {
			p := pieces[r.IntN(len(pieces))]
			if r.IntN(2) == 0 {
				p = strings.ToUpper(p)
			}
			b.WriteString(p[:r.IntN(len(p)+1)])
		}
		if got, want := ProxyProduct(b.String()), proxyProductLowered(b.String()); got != want {
			t.Fatalf("ProxyProduct(%q) = %q, lower-casing it all %q", b.String(), got, want)
		}
	}
}

// proxyProductLowered is ProxyProduct as first written: the reference.
func proxyProductLowered(server string) string {
	s := strings.ToLower(strings.TrimSpace(server))
	if s == "" {
		return ""
	}
	tok := s
	if i := strings.IndexAny(tok, "/ ("); i >= 0 {
		tok = tok[:i]
	}
	for _, p := range proxyProducts {
		if tok == p || (strings.Contains(p, " ") && strings.HasPrefix(s, p)) {
			return p
		}
	}
	return ""
}

// proxiedRun builds n requests through one proxy: each client request on
// its own connection, upstream requests on 8 reused connections, 16
// targets, about 5 requests in flight at a time.
func proxiedRun(n int) []*Record {
	recs := make([]*Record, 0, 2*n)
	for i := range n {
		base := float64(i)
		target := fmt.Sprintf("/obj/%d", i%16)
		d := cleg{id: fmt.Sprintf("d%d", i), client: fmt.Sprintf("10.1.%d.%d:%d", i/60000%250, i/250%240, 1024+i%60000), server: "10.0.0.5:80",
			target: target, cl: ci64(int64(100 + i%7)), data: int64(100 + i%7), hdr: base, bodyStart: base + 0.1, bodyEnd: base + 0.2, status: 200, fin: base + 5}.rec()
		u := cleg{id: fmt.Sprintf("u%d", i), client: fmt.Sprintf("10.0.0.5:%d", 30000+i%8), server: "10.0.0.9:8080",
			target: target, cl: ci64(int64(100 + i%7)), data: int64(100 + i%7), hdr: base + 0.3, bodyStart: base + 0.3, bodyEnd: base + 0.4, status: 200, fin: base + 4}.rec()
		recs = append(recs, d, u)
	}
	return recs
}

func TestCorrelateProxiedRun(t *testing.T) {
	recs := proxiedRun(5000)
	hops := Correlate(recs)
	if len(hops) != 5000 {
		t.Fatalf("%d hops", len(hops))
	}
	for _, h := range hops {
		if h.Downstream.ID[1:] != h.Upstream.ID[1:] {
			t.Fatalf("hop %s -> %s", h.Downstream.ID, h.Upstream.ID)
		}
	}
}

// BenchmarkCorrelate: the time per record stays flat from 1k to 100k
// requests through one proxy (correlation is not quadratic).
func BenchmarkCorrelate(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("requests=%d", n), func(b *testing.B) {
			recs := proxiedRun(n)
			b.ReportAllocs()
			for b.Loop() {
				if hops := Correlate(recs); len(hops) != n {
					b.Fatalf("%d hops", len(hops))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/request")
		})
	}
}
