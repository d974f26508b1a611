package report

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

func TestNearestRank(t *testing.T) {
	tests := []struct {
		vals []float64
		p    float64
		want float64
		ok   bool
	}{
		{nil, 50, 0, false},
		{[]float64{7}, 50, 7, true},
		{[]float64{7}, 99, 7, true},
		{[]float64{1, 2, 3, 4}, 50, 2, true}, // rank ceil(2) = 2
		{[]float64{1, 2, 3, 4}, 90, 4, true}, // rank ceil(3.6) = 4
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 90, 9, true},
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99, 10, true},
		{[]float64{15, 20, 35, 40, 50}, 50, 35, true},
	}
	for _, tt := range tests {
		got, ok := NearestRank(tt.vals, tt.p)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NearestRank(%v, %v) = %v, %v; want %v, %v", tt.vals, tt.p, got, ok, tt.want, tt.ok)
		}
	}
}

func TestClientFamily(t *testing.T) {
	tests := []struct{ ua, want string }{
		{"curl/7.88.1", FamilyCurl},
		{"Go-http-client/1.1", FamilyGo},
		{"Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1", FamilyDotNet},
		{"Microsoft-CryptoAPI/10.0", FamilyDotNet},
		{"Java-http-client/17.0.2", FamilyJava},
		{"Apache-HttpClient/4.5.13 (Java/11)", FamilyJava},
		{"python-requests/2.31.0", FamilyPython},
		{"Python-urllib/3.11", FamilyPython},
		{"aws-sdk-java/1.12 Linux/5.10 OpenJDK_64-Bit_Server_VM/11 java/11", FamilyAWS},
		{"Boto3/1.28.0 md/Botocore#1.31.0 ua/2.0 os/linux lang/python#3.11", FamilyAWS},
		{"aws-sdk-go-v2/1.21.0 os/linux lang/go#1.21", FamilyAWS},
		{"node-fetch/1.0", FamilyNode},
		{"undici", FamilyNode},
		{"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", FamilyBrowser},
		{"", FamilyOther},
		{"Wget/1.21", FamilyOther},
	}
	for _, tt := range tests {
		if got := ClientFamily(tt.ua); got != tt.want {
			t.Errorf("ClientFamily(%q) = %q, want %q", tt.ua, got, tt.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// hostile is a record whose wire text tries every trick.
func hostile() *analyze.Record {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &analyze.Record{
		Type: analyze.TypeNegotiation, ID: "1-1",
		Conn: analyze.Conn{Client: "10.0.0.1:5000", Server: "10.0.0.2:80"},
		Request: analyze.Request{
			Method: "PUT", Target: "/\x1b[2J\r\nX-Evil: 1|=cmd|a", Version: "HTTP/1.1",
			Host: "=HYPERLINK(\"x\")", Expect: "100-continue", ContentLength: ptr(int64(10)),
			UserAgent: "@ua\x07\u202e",
		},
		Final:        &analyze.Final{Status: 417, Reason: "Nope\x1b]0;title\x07", Server: "-srv|x", At: t0.Add(time.Millisecond)},
		HeadersEndAt: t0,
		Verdict:      analyze.Rejected,
		Flags:        []analyze.Flag{analyze.FlagNoRetryAfter417},
		Diagnosis:    "+diag\x1b[31m",
	}
}

func TestHostileTextIsEscaped(t *testing.T) {
	r := hostile()
	out := &Output{Records: []*analyze.Record{r}, Summary: Tally([]*analyze.Record{r})}
	for _, format := range []string{FormatTable, FormatMarkdown, FormatCSV} {
		var b bytes.Buffer
		if err := Write(&b, format, out, false); err != nil {
			t.Fatal(err)
		}
		s := b.String()
		for i := 0; i < len(s); i++ {
			if c := s[i]; (c < 0x20 && c != '\n') || c == 0x7f {
				t.Errorf("%s: control byte %#x in output:\n%s", format, c, s)
				break
			}
		}
		if strings.Contains(s, "\u202e") {
			t.Errorf("%s: bidi override survived", format)
		}
		esc := `\x1b[2J`
		if format == FormatMarkdown {
			esc = `\x1b\[2J`
		}
		if !strings.Contains(s, esc) {
			t.Errorf("%s: escaped ESC[2J not shown:\n%s", format, s)
		}
		switch format {
		case FormatMarkdown:
			// Every row of the record table has exactly as many cell
			// separators as the header: no pipe from the wire split a cell.
			lines := strings.Split(s, "\n")
			var header string
			for i, l := range lines {
				if strings.HasPrefix(l, "| id |") {
					header = l
					row := lines[i+2]
					if got, want := strings.Count(strings.ReplaceAll(row, `\|`, ""), "|"), strings.Count(header, "|"); got != want {
						t.Errorf("markdown row has %d separators, header %d:\n%s", got, want, row)
					}
					if !strings.Contains(row, `=cmd\|a`) {
						t.Errorf("markdown row lacks the escaped pipe: %s", row)
					}
				}
			}
			if header == "" {
				t.Fatalf("no record table in markdown:\n%s", s)
			}
		case FormatCSV:
			rows, err := csv.NewReader(strings.NewReader(s)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 {
				t.Fatalf("csv has %d rows, want 2:\n%s", len(rows), s)
			}
			for _, cell := range rows[1] {
				if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
					t.Errorf("csv cell %q begins with a formula character", cell)
				}
			}
			if got := rows[1][5]; got != `'=HYPERLINK("x")` {
				t.Errorf("host cell = %q", got)
			}
		case FormatTable:
			if !strings.Contains(s, `\x0d\x0a`) {
				t.Errorf("table: CRLF not shown escaped:\n%s", s)
			}
		}
	}
	// Ladders too.
	var b bytes.Buffer
	if err := WriteLadders(&b, LadderSet{Records: []*analyze.Record{r}}, "1-1", false); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(b.String(), "\x1b\r\x07") {
		t.Errorf("ladder: control byte survived:\n%s", b.String())
	}
}

func TestMarkdownEscapeAndCSVCell(t *testing.T) {
	md := []struct{ in, want string }{
		{"a|b", `a\|b`},
		{"<script>", "&lt;script&gt;"},
		{"*x*_y_", `\*x\*\_y\_`},
		{"plain", "plain"},
	}
	for _, tt := range md {
		if got := MarkdownEscape(tt.in); got != tt.want {
			t.Errorf("MarkdownEscape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	cells := []struct{ in, want string }{
		{"=1+1", "'=1+1"}, {"+1", "'+1"}, {"-1", "'-1"}, {"@SUM(A1)", "'@SUM(A1)"},
		{"\tx", "'\tx"}, {"\rx", "'\rx"}, {"a=b", "a=b"}, {"", ""},
	}
	for _, tt := range cells {
		if got := CSVCell(tt.in); got != tt.want {
			t.Errorf("CSVCell(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFilter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id string, v analyze.Verdict, ua, host, client, server string, at time.Duration, flags ...analyze.Flag) *analyze.Record {
		return &analyze.Record{Type: analyze.TypeNegotiation, ID: id, Verdict: v, Flags: flags,
			Conn:    analyze.Conn{Client: client, Server: server},
			Request: analyze.Request{UserAgent: ua, Host: host}, HeadersEndAt: t0.Add(at)}
	}
	recs := []*analyze.Record{
		mk("a", analyze.Continued, "curl/8", "example.com", "10.0.0.1:1000", "10.0.0.9:80", 0),
		mk("b", analyze.Rejected, "Go-http-client/1.1", "example.com:8080", "10.0.0.2:1000", "10.0.0.9:8080", time.Second, analyze.FlagBodyAfter417),
		mk("c", analyze.TimedOut, "python-requests/2", "other.org", "[::1]:2000", "[::1]:80", 2*time.Second, analyze.FlagLate100),
	}
	tests := []struct {
		name string
		f    Filter
		want string
	}{
		{"none", Filter{}, "abc"},
		{"verdict", Filter{Verdicts: []string{"rejected", "timed-out"}}, "bc"},
		{"flag", Filter{Flags: []string{"late-100"}}, "c"},
		{"server ip:port", Filter{Servers: []string{"10.0.0.9:80"}}, "a"},
		{"server ip", Filter{Servers: []string{"10.0.0.9"}}, "ab"},
		{"server port", Filter{Servers: []string{":80"}}, "ac"},
		{"server v6", Filter{Servers: []string{"::1"}}, "c"},
		{"client family", Filter{Clients: []string{"go-http-client"}}, "b"},
		{"client ip", Filter{Clients: []string{"10.0.0.1"}}, "a"},
		{"client ua substring", Filter{Clients: []string{"requests"}}, "c"},
		{"host without port", Filter{Hosts: []string{"EXAMPLE.com"}}, "ab"},
		{"host with port", Filter{Hosts: []string{"example.com:8080"}}, "b"},
		{"since", Filter{Since: t0.Add(time.Second)}, "bc"},
		{"until", Filter{Until: t0.Add(time.Second)}, "a"},
		{"combined", Filter{Hosts: []string{"example.com"}, Verdicts: []string{"rejected"}}, "b"},
	}
	for _, tt := range tests {
		var got string
		for _, r := range recs {
			if tt.f.Match(r) {
				got += r.ID
			}
		}
		if got != tt.want {
			t.Errorf("%s: selected %q, want %q", tt.name, got, tt.want)
		}
	}
	if err := (&Filter{Verdicts: []string{"rejectd"}}).Validate(); err == nil {
		t.Error("unknown verdict accepted")
	}
	if err := (&Filter{Flags: []string{"late100"}}).Validate(); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestParseTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"2026-01-01T00:00:03Z", start.Add(3 * time.Second), false},
		{"2026-01-01T01:00:00.5+01:00", start.Add(500 * time.Millisecond), false},
		{"1.5s", start.Add(1500 * time.Millisecond), false},
		{"+2m", start.Add(2 * time.Minute), false},
		{"12.5", start.Add(12500 * time.Millisecond), false},
		{"+0.000447", start.Add(447 * time.Microsecond), false},
		{"yesterday", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseTime(tt.in, start)
		if (err != nil) != tt.bad || !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestTallyGroups(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var recs []*analyze.Record
	// Ten curl negotiations with client waits 1..10 ms, one Go timeout.
	for i := 1; i <= 10; i++ {
		recs = append(recs, &analyze.Record{Type: analyze.TypeNegotiation, ID: "c" + string(rune('0'+i)),
			Verdict: analyze.Continued, Conn: analyze.Conn{Server: "10.0.0.9:80"},
			Request: analyze.Request{UserAgent: "curl/8", Host: "h"}, ClientWaitMs: ptr(float64(i)), HeadersEndAt: t0})
	}
	bs := t0
	recs = append(recs, &analyze.Record{Type: analyze.TypeNegotiation, ID: "g", Verdict: analyze.TimedOut,
		Conn: analyze.Conn{Server: "10.0.0.9:80"}, Request: analyze.Request{UserAgent: "Go-http-client/1.1", Host: "h"},
		ClientWaitMs: ptr(1000.5), LostMs: ptr(1000.5), TimeoutGuess: ptr(1000), BodyStartAt: &bs, BodyBytes: 99,
		Final: &analyze.Final{Status: 413}, HeadersEndAt: t0})
	c := Tally(recs)
	if c.Negotiations != 11 || c.Verdicts["continued"] != 10 || c.Verdicts["timed-out"] != 1 {
		t.Fatalf("counts: %+v", c)
	}
	if c.WastedBytes != 99 || c.LostMs != 1000.5 {
		t.Errorf("wasted %d lost %v", c.WastedBytes, c.LostMs)
	}
	if len(c.Clients) != 2 || c.Clients[0].Key != FamilyCurl || *c.Clients[0].ClientWait.P90 != 9 || *c.Clients[0].ClientWait.P50 != 5 {
		t.Errorf("clients: %+v", c.Clients[0])
	}
	if len(c.Servers) != 1 || c.Servers[0].Negotiations != 11 {
		t.Errorf("servers: %+v", c.Servers)
	}
	if len(c.Timeouts) != 1 || c.Timeouts[0].Client != FamilyGo || c.Timeouts[0].TimerMs != 1000 {
		t.Errorf("timeouts: %+v", c.Timeouts)
	}
}

func TestLadderWithHop(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	bs, be := at(2), at(5)
	ubs, ube := at(6), at(9)
	down := &analyze.Record{Type: analyze.TypeNegotiation, ID: "1-1", Verdict: analyze.Continued,
		Flags:        []analyze.Flag{analyze.FlagErrorAfter100},
		Conn:         analyze.Conn{Client: "10.0.0.1:5000", Server: "10.0.0.5:3128"},
		Request:      analyze.Request{Method: "PUT", Target: "/up", Version: "HTTP/1.1", Expect: "100-continue", ContentLength: ptr(int64(1000))},
		Interim:      []analyze.Interim{{Status: 100, Reason: "Continue", At: at(1)}},
		Final:        &analyze.Final{Status: 413, Reason: "Too Large", At: at(11)},
		HeadersEndAt: t0, BodyStartAt: &bs, BodyEndAt: &be, BodyBytes: 1000, ClientWaitMs: ptr(2.0)}
	up := &analyze.Record{Type: analyze.TypeExchange, ID: "2-1", Verdict: analyze.Continued,
		Conn:         analyze.Conn{Client: "10.0.0.5:40000", Server: "10.0.0.9:80"},
		Request:      analyze.Request{Method: "PUT", Target: "/up", Version: "HTTP/1.1", ContentLength: ptr(int64(1000))},
		Final:        &analyze.Final{Status: 413, Reason: "Too Large", At: at(10)},
		HeadersEndAt: at(6), BodyStartAt: &ubs, BodyEndAt: &ube, BodyBytes: 1000}
	hop := &analyze.Hop{Type: "hop", Intermediary: "10.0.0.5:3128",
		Downstream: analyze.Endpoint{ID: "1-1", Client: down.Conn.Client, Server: down.Conn.Server},
		Upstream:   analyze.Endpoint{ID: "2-1", Client: up.Conn.Client, Server: up.Conn.Server},
		Changes:    []string{"expect-stripped", "proxy-generated-100", "store-and-forward"}}
	var b bytes.Buffer
	if err := WriteLadders(&b, LadderSet{Records: []*analyze.Record{down}, All: []*analyze.Record{down, up}, Hops: []*analyze.Hop{hop}}, LadderAll, false); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{"client 10.0.0.1:5000", "proxy 10.0.0.5:3128", "server 10.0.0.9:80",
		"store-and-forward", "error-after-100 (RFC 9110 10.1.1)", "client waited 2.0 ms"} {
		if !strings.Contains(s, want) {
			t.Errorf("ladder lacks %q:\n%s", want, s)
		}
	}
	i6, i10, i11 := strings.Index(s, "   6.000  |"), strings.Index(s, "  10.000  |"), strings.Index(s, "  11.000  |")
	if i6 < 0 || !(i6 < i10 && i10 < i11) {
		t.Errorf("upstream and downstream events out of order:\n%s", s)
	}
	lines := strings.Split(s, "\n")
	// The upstream leg's request goes from the proxy bar to the server bar.
	for _, l := range lines {
		if strings.Contains(l, "6.000") {
			i := strings.Index(l, "|")
			if strings.Count(l[i:], "|") != 3 || !strings.Contains(l, "->|") {
				t.Errorf("upstream request line not drawn proxy -> server: %q", l)
			}
			break
		}
	}
}
