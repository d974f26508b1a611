package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"golang.org/x/net/html"
)

func hptr[T any](v T) *T { return &v }

var htmlT0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// htmlRecord builds a negotiation at offset off with a verdict and the
// timings that go with it.
func htmlRecord(id string, off time.Duration, v analyze.Verdict) *analyze.Record {
	at := htmlT0.Add(off)
	r := &analyze.Record{Type: analyze.TypeNegotiation, ID: id, Verdict: v, HeadersEndAt: at,
		Conn:    analyze.Conn{Client: "10.0.0.1:40000", Server: "10.0.0.9:80"},
		Request: analyze.Request{Method: "PUT", Target: "/up/" + id, Version: "HTTP/1.1", Host: "files.example", Expect: "100-continue", ContentLength: hptr(int64(4096)), UserAgent: "curl/8.5.0"},
		Flags:   []analyze.Flag{}}
	body := func(after time.Duration) {
		bs := at.Add(after)
		r.BodyStartAt, r.BodyEndAt, r.BodyBytes, r.BodyComplete = &bs, hptr(bs.Add(time.Millisecond)), 4096, true
		r.ClientWaitMs = hptr(float64(after) / float64(time.Millisecond))
	}
	switch v {
	case analyze.Continued:
		r.Interim = []analyze.Interim{{Status: 100, Reason: "Continue", At: at.Add(300 * time.Microsecond)}}
		r.Wait100Ms = hptr(0.3)
		body(400 * time.Microsecond)
		r.Final = &analyze.Final{Status: 201, Reason: "Created", Server: "nginx", At: at.Add(5 * time.Millisecond)}
	case analyze.Rejected:
		r.Final = &analyze.Final{Status: 417, Reason: "Expectation Failed", Server: "nginx", At: at.Add(200 * time.Microsecond)}
		r.Flags = []analyze.Flag{analyze.FlagNoRetryAfter417}
		r.Diagnosis = "the server does not support Expect"
	case analyze.TimedOut:
		body(time.Second)
		r.TimeoutGuess = hptr(1000)
		r.LostMs = hptr(1000.0)
		r.Final = &analyze.Final{Status: 200, Reason: "OK", At: at.Add(1010 * time.Millisecond)}
	case analyze.Unanswered:
		r.LostMs = hptr(2500.0)
	}
	return r
}

func htmlOutput(recs []*analyze.Record, hops []*analyze.Hop) *Output {
	out := &Output{Records: recs, Hops: hops}
	out.Summary = Tally(recs)
	out.Summary.Hops = len(hops)
	return out
}

func renderHTML(t testing.TB, out *Output, opts HTMLOptions) ([]byte, *html.Node) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteHTML(&buf, out, opts); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), doc
}

// find returns the elements named tag (any when "") for which ok holds.
func find(n *html.Node, tag string, ok func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && (tag == "" || d.Data == tag) && (ok == nil || ok(d)) {
			out = append(out, d)
		}
	}
	return out
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, c string) bool {
	v, _ := attr(n, "class")
	for _, f := range strings.Fields(v) {
		if f == c {
			return true
		}
	}
	return false
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

func byID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	ns := find(doc, "", func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(ns) != 1 {
		t.Fatalf("%d elements with id %q, want 1", len(ns), id)
	}
	return ns[0]
}

// checkSelfContained asserts the page runs only our script and loads
// nothing: no src, no href but in-page anchors, no event handler
// attributes, no style or script but ours.
func checkSelfContained(t *testing.T, doc *html.Node) {
	t.Helper()
	scripts := find(doc, "script", nil)
	if len(scripts) != 1 {
		t.Fatalf("%d script elements, want 1 (ours)", len(scripts))
	}
	if got := text(scripts[0]); got != string(htmlScript) {
		t.Errorf("the script is not the one we ship:\n%s", got)
	}
	if n := len(find(doc, "style", nil)); n != 1 {
		t.Errorf("%d style elements, want 1", n)
	}
	for _, tag := range []string{"img", "iframe", "object", "embed", "link", "base", "form", "image", "use", "foreignObject", "audio", "video"} {
		if n := len(find(doc, tag, nil)); n > 0 {
			t.Errorf("%d %s element(s)", n, tag)
		}
	}
	for _, n := range find(doc, "", nil) {
		for _, a := range n.Attr {
			k := strings.ToLower(a.Key)
			switch {
			case strings.HasPrefix(k, "on"):
				t.Errorf("<%s> has event handler %s=%q", n.Data, a.Key, a.Val)
			case k == "src", k == "srcset", k == "xlink:href", k == "style":
				t.Errorf("<%s> has %s=%q", n.Data, a.Key, a.Val)
			case k == "href" && !strings.HasPrefix(a.Val, "#"):
				t.Errorf("<%s> links out: href=%q", n.Data, a.Val)
			}
		}
	}
	metas := find(doc, "meta", func(n *html.Node) bool { v, _ := attr(n, "http-equiv"); return v == "Content-Security-Policy" })
	if len(metas) != 1 {
		t.Fatalf("no Content-Security-Policy meta")
	}
	if csp, _ := attr(metas[0], "content"); !strings.HasPrefix(csp, "default-src 'none';") || !strings.Contains(csp, "script-src 'sha256-") {
		t.Errorf("CSP = %q", csp)
	}
}

func TestWriteHTML(t *testing.T) {
	recs := []*analyze.Record{
		htmlRecord("1-1", 0, analyze.Continued),
		htmlRecord("2-1", 2*time.Second, analyze.Rejected),
		htmlRecord("3-1", 4*time.Second, analyze.TimedOut),
		htmlRecord("4-1", 5*time.Second, analyze.TimedOut),
		htmlRecord("5-1", 6*time.Second, analyze.Unanswered),
		htmlRecord("6-1", 7*time.Second, analyze.Continued),
	}
	// 6-1 went through a proxy whose upstream leg, 7-1, carried no Expect.
	upstream := htmlRecord("7-1", 7*time.Second+time.Millisecond, analyze.Continued)
	upstream.Type, upstream.Request.Expect, upstream.Conn = analyze.TypeExchange, "", analyze.Conn{Client: "10.0.0.9:50000", Server: "10.0.0.20:8080"}
	hops := []*analyze.Hop{{Type: analyze.TypeHop, Intermediary: "10.0.0.9:80",
		Downstream: analyze.Endpoint{ID: "6-1", Client: "10.0.0.1:40000", Server: "10.0.0.9:80"},
		Upstream:   analyze.Endpoint{ID: "7-1", Client: "10.0.0.9:50000", Server: "10.0.0.20:8080"},
		Changes:    []string{"expect-stripped", "proxy-generated-100"}}}
	out := htmlOutput(recs, hops)
	page, doc := renderHTML(t, out, HTMLOptions{All: append(recs, upstream), Inputs: []string{"a.pcap", "b.pcap"}})
	checkSelfContained(t, doc)

	// Summary: verdict and flag counts, with the rule.
	counts := map[string]string{}
	for _, n := range find(doc, "td", func(n *html.Node) bool { return hasClass(n, "count") }) {
		if v, ok := attr(n, "data-verdict"); ok {
			counts[v] = text(n)
		}
		if v, ok := attr(n, "data-flag"); ok {
			counts["flag:"+v] = text(n)
		}
	}
	want := map[string]string{"continued": "2", "rejected": "1", "timed-out": "2", "unanswered": "1", "flag:no-retry-after-417": "1"}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("count %s = %q, want %q (all: %v)", k, counts[k], v, counts)
		}
	}
	if !strings.Contains(text(byID(t, doc, "flags")), analyze.RuleOf(analyze.FlagNoRetryAfter417)) {
		t.Errorf("flag table lacks the rule")
	}
	for _, id := range []string{"servers", "clients", "timers"} {
		byID(t, doc, id)
	}
	if s := text(byID(t, doc, "card-lost")); !strings.Contains(s, "4.500 s") {
		t.Errorf("time lost card: %q", s)
	}

	// Timeline: one mark per negotiation, coloured by verdict, titled with
	// the request; a 100 dash for the continued ones.
	chart := byID(t, doc, "chart")
	marks := find(chart, "circle", func(n *html.Node) bool { return hasClass(n, "m") })
	if len(marks) != len(recs) {
		t.Fatalf("%d marks, want %d", len(marks), len(recs))
	}
	for i, m := range marks {
		if !hasClass(m, "v-"+string(recs[i].Verdict)) {
			t.Errorf("mark %d class does not name verdict %s", i, recs[i].Verdict)
		}
		if s := text(m); !strings.Contains(s, "PUT /up/"+recs[i].ID) {
			t.Errorf("mark %d title %q lacks the request", i, s)
		}
	}
	// The two timed-out clients sit on the same line, at 1 s.
	if a, _ := attr(marks[2], "cy"); a != func() string { b, _ := attr(marks[3], "cy"); return b }() {
		t.Errorf("timed-out marks at different heights")
	}
	if n := len(find(chart, "line", func(n *html.Node) bool { return hasClass(n, "w100") })); n != 2 {
		t.Errorf("%d 100-wait dashes, want 2", n)
	}

	// Ladders: each flagged or not continued negotiation, and the hop.
	ladders := find(doc, "figure", func(n *html.Node) bool { return hasClass(n, "ladder") })
	var ids []string
	for _, l := range ladders {
		v, _ := attr(l, "data-record")
		ids = append(ids, v)
	}
	if got := strings.Join(ids, " "); got != "2-1 3-1 4-1 5-1 6-1" {
		t.Errorf("ladders for %q", got)
	}
	hop := byID(t, doc, "l-6-1")
	var lanes []string
	for _, n := range find(hop, "text", func(n *html.Node) bool { return hasClass(n, "lname") }) {
		lanes = append(lanes, text(n))
	}
	if strings.Join(lanes, "|") != "client|proxy|origin" {
		t.Errorf("hop ladder lanes %v", lanes)
	}
	if s := text(hop); !strings.Contains(s, "10.0.0.20:8080") || !strings.Contains(s, "expect-stripped") {
		t.Errorf("hop ladder lacks the upstream leg: %q", s)
	}
	rej := byID(t, doc, "l-2-1")
	if s := text(rej); !strings.Contains(s, "417 Expectation Failed") || !strings.Contains(s, "+0.200 ms") {
		t.Errorf("ladder of the 417: %q", s)
	}

	// Table: every negotiation, linked to its ladder.
	rows := find(byID(t, doc, "neg"), "tr", func(n *html.Node) bool { _, ok := attr(n, "data-verdict"); return ok })
	if len(rows) != len(recs) {
		t.Errorf("%d table rows, want %d", len(rows), len(recs))
	}
	if len(find(rows[1], "a", func(n *html.Node) bool { v, _ := attr(n, "href"); return v == "#l-2-1" })) != 1 {
		t.Errorf("row 2-1 does not link its ladder")
	}
	if !bytes.Contains(page, []byte("a.pcap")) {
		t.Errorf("inputs not named")
	}

	// Same input, same bytes.
	again, _ := renderHTML(t, out, HTMLOptions{All: append(recs, upstream), Inputs: []string{"a.pcap", "b.pcap"}})
	if !bytes.Equal(page, again) {
		t.Errorf("output differs between runs")
	}
}

// TestWriteHTMLHostile puts markup everywhere text from the wire (or
// from an ndjson file) reaches the page: it must all come out as text.
func TestWriteHTMLHostile(t *testing.T) {
	const (
		script = `<script>alert(1)</script>`
		img    = `"><img src=x onerror=alert(1)>`
		svg    = `</title></circle><image href=x onerror=alert(2)/><script>alert(3)</script>`
		ctl    = "\x1b[31mred\u202e"
	)
	hostile := []string{script, img, svg, `'><a href="javascript:alert(4)">x</a>`, ctl}
	var recs []*analyze.Record
	for i, h := range hostile {
		r := htmlRecord(fmt.Sprintf("%d-1", i+1), time.Duration(i)*time.Second, analyze.Rejected)
		r.Request.Target = h
		r.Request.Method = h
		r.Request.Host = h
		r.Request.UserAgent = h
		r.Request.Expect = h
		r.Final.Reason = h
		r.Final.Server = h
		r.Final.Via = h
		r.Diagnosis = h
		r.Conn.Client = h
		r.ConnEnd = h
		r.AfterEarlyFinal = h
		r.RetriedBy = hptr(h)
		recs = append(recs, r)
	}
	// ndjson from elsewhere: ids, verdicts and flags are untrusted too.
	odd := htmlRecord(img, 9*time.Second, analyze.Verdict(script))
	odd.Flags = []analyze.Flag{analyze.Flag(img)}
	recs = append(recs, odd)
	hops := []*analyze.Hop{{Type: analyze.TypeHop, Intermediary: img, Downstream: analyze.Endpoint{ID: img, Client: svg, Server: script},
		Upstream: analyze.Endpoint{ID: script, Client: img, Server: svg}, Changes: []string{script, img}}}
	out := htmlOutput(recs, hops)
	out.Summary.Warnings = []string{script, img}
	page, doc := renderHTML(t, out, HTMLOptions{Title: script, Inputs: []string{img}})
	checkSelfContained(t, doc)
	if n := len(find(doc, "a", func(n *html.Node) bool { v, _ := attr(n, "href"); return !strings.HasPrefix(v, "#") })); n > 0 {
		t.Errorf("%d links out", n)
	}
	// What a reader sees: the markup, as text.
	body := text(find(doc, "body", nil)[0])
	for _, h := range []string{script, img, svg} {
		if !strings.Contains(body, h) {
			t.Errorf("%q not shown as text", h)
		}
	}
	if bytes.Contains(page, []byte("\x1b")) || bytes.Contains(page, []byte("\u202e")) {
		t.Errorf("control characters reached the page")
	}
	if !strings.Contains(body, `\x1b[31mred\u{202e}`) {
		t.Errorf("control characters not shown escaped")
	}
}

// TestWriteHTMLLarge renders 100k negotiations: the page stays small
// (binned chart, capped table and ladders) and is written quickly.
func TestWriteHTMLLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	const n = 100_000
	verdicts := []analyze.Verdict{analyze.Continued, analyze.Continued, analyze.Continued, analyze.TimedOut, analyze.Rejected, analyze.Continued, analyze.Unanswered}
	recs := make([]*analyze.Record, n)
	for i := range recs {
		recs[i] = htmlRecord(fmt.Sprintf("%d-1", i+1), time.Duration(i)*3*time.Millisecond, verdicts[i%len(verdicts)])
		if recs[i].ClientWaitMs != nil {
			*recs[i].ClientWaitMs += float64(i%97) / 10
		}
	}
	out := htmlOutput(recs, nil)
	start := time.Now()
	page, doc := renderHTML(t, out, HTMLOptions{})
	took := time.Since(start)
	t.Logf("%d negotiations: %.1f MB in %v", n, float64(len(page))/1e6, took)
	if len(page) > 15<<20 {
		t.Errorf("page is %d bytes", len(page))
	}
	if took > 30*time.Second {
		t.Errorf("took %v", took)
	}
	checkSelfContained(t, doc)
	marks := find(byID(t, doc, "chart"), "circle", func(n *html.Node) bool { return hasClass(n, "m") })
	if len(marks) == 0 || len(marks) > DefaultMaxMarks {
		t.Errorf("%d marks", len(marks))
	}
	total := 0
	for _, m := range marks {
		v, _ := attr(m, "data-n")
		var k int
		fmt.Sscan(v, &k)
		total += k
	}
	if total != n {
		t.Errorf("bins hold %d negotiations, want %d", total, n)
	}
	rows := find(byID(t, doc, "neg"), "tr", func(n *html.Node) bool { _, ok := attr(n, "data-verdict"); return ok })
	if len(rows) != DefaultMaxRows {
		t.Errorf("%d rows", len(rows))
	}
	if ls := find(doc, "figure", nil); len(ls) != DefaultMaxLadders {
		t.Errorf("%d ladders", len(ls))
	}
	if !bytes.Contains(page, []byte(fmt.Sprintf("The table shows %d of %d records", DefaultMaxRows, n))) {
		t.Errorf("no note on the capped table")
	}
}

func TestWriteHTMLEmpty(t *testing.T) {
	_, doc := renderHTML(t, &Output{}, HTMLOptions{})
	checkSelfContained(t, doc)
	if s := text(doc); !strings.Contains(s, "No Expect negotiations found.") {
		t.Errorf("empty report: %q", s)
	}
}
