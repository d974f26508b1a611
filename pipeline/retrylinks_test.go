package pipeline_test

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
)

// TestParallelRetryLinks reads a loopback capture of four loops of curl
// 7.88 run at once against nginx 1.22 (testdata/loopback/README.md): each
// run PUTs /e417/x with an explicit Expect (nginx answers 417 and keeps
// the connection; curl sends the request again at once, Expect and all,
// on the same connection) and /e417/y with curl's own Expect (417, then
// the request again without Expect, on the same connection). Every client
// is 127.0.0.1 and every /e417/x is the same request, so only the
// connection tells whose repeat is whose: each 417 must be linked to the
// next request on its own connection, and nothing linked twice, with 1, 2
// and 3 workers, streamed or mapped. (The linker used to link every later
// /e417/x of the capture to the first 417.)
func TestParallelRetryLinks(t *testing.T) {
	readWorkers(t, "../testdata/loopback/curl-nginx-parallel-417.pcap.gz", checkRetryLinks)
}

// TestPooledRetryLinks reads Go's net/http client, six goroutines on one
// pool, repeating refused uploads without Expect
// (testdata/loopback/README.md): the pool sends a repeat on whichever
// connection is idle, sometimes not the refusing one, which is still open
// and carrying the body Go sent after the 417. Each 417 must be linked to
// one repeat without Expect of the same request, each repeat to one 417.
func TestPooledRetryLinks(t *testing.T) {
	readWorkers(t, "../testdata/loopback/go-client-pool-417.pcap.gz", func(t *testing.T, recs []*analyze.Record) {
		byID := map[string]*analyze.Record{}
		for _, r := range recs {
			byID[r.ID] = r
		}
		refused, other := 0, 0
		for _, r := range recs {
			if r.Final == nil || r.Final.Status != 417 {
				continue
			}
			refused++
			if r.RetriedBy == nil || byID[*r.RetriedBy] == nil {
				t.Errorf("%s: 417 not linked to its repeat", r.ID)
				continue
			}
			rep := byID[*r.RetriedBy]
			if rep.RetryOf == nil || *rep.RetryOf != r.ID || rep.Request.Expect != "" || rep.Request.Target != r.Request.Target ||
				!r.HasFlag(analyze.FlagRetriedWithoutExpect) || !r.HasFlag(analyze.FlagBodyAfter417) {
				t.Errorf("%s: repeat %s (retry of %v, Expect %q, target %s), flags %v", r.ID, rep.ID, rep.RetryOf, rep.Request.Expect, rep.Request.Target, r.Flags)
			}
			if rep.Conn != r.Conn {
				other++
			}
		}
		// 6 goroutines x 6 rounds; the pool chose another connection twice.
		if refused != 36 || other != 2 {
			t.Errorf("%d 417s, %d repeated on another connection; want 36 and 2", refused, other)
		}
	})
}

// readWorkers reads a gzipped capture with 1, 2 and 3 workers, streamed,
// and 2 mapped, checks each result, and requires the same records of all.
func readWorkers(t *testing.T, path string, check func(*testing.T, []*analyze.Record)) {
	t.Helper()
	pcap := gunzipFile(t, path)
	var want []byte
	for _, workers := range []int{1, 2, 3} {
		recs, _ := runBytes(t, pcap, pipeline.Options{Workers: workers, Analyze: analyze.Config{All: true}})
		check(t, recs)
		got := ndjsonOf(t, recs)
		if want == nil {
			want = got
		} else if !bytes.Equal(got, want) {
			t.Errorf("%d workers: records differ from 1 worker's", workers)
		}
	}
	if got, _ := runFile(t, writeTemp(t, pcap), true, 2); !bytes.Equal(got, want) {
		t.Errorf("mapped, 2 workers: records differ from 1 worker's")
	}
}

// checkRetryLinks holds recs to what the capture shows: a 417 is repeated
// by the next request on its connection (id "C-N" by "C-N+1"), with the
// same method and target; the /e417/x repeats ask for 100-continue again
// (no-retry-after-417 stays), the /e417/y ones do not
// (retried-without-expect).
func checkRetryLinks(t *testing.T, recs []*analyze.Record) {
	t.Helper()
	byID := map[string]*analyze.Record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	next := func(id string) string {
		conn, n, _ := strings.Cut(id, "-")
		i, _ := strconv.Atoi(n)
		return conn + "-" + strconv.Itoa(i+1)
	}
	refused, repeats := 0, 0
	for _, r := range recs {
		if r.Final != nil && r.Final.Status == 417 {
			refused++
			if r.RetriedBy == nil {
				t.Errorf("%s %s: 417 not linked to its repeat", r.ID, r.Request.Target)
				continue
			}
			if *r.RetriedBy != next(r.ID) {
				t.Errorf("%s %s: retried by %s, want %s (the next request on its connection)", r.ID, r.Request.Target, *r.RetriedBy, next(r.ID))
			}
			flag := analyze.FlagRetriedWithoutExpect
			if r.Request.Target == "/e417/x" {
				flag = analyze.FlagNoRetryAfter417
			}
			if !r.HasFlag(flag) {
				t.Errorf("%s %s: flags %v, want %s", r.ID, r.Request.Target, r.Flags, flag)
			}
		}
		if r.RetryOf != nil {
			repeats++
			orig := byID[*r.RetryOf]
			if orig == nil || orig.RetriedBy == nil || *orig.RetriedBy != r.ID || orig.Request.Target != r.Request.Target || orig.Conn != r.Conn {
				t.Errorf("%s %s: retry of %s, which does not name it back on the same connection", r.ID, r.Request.Target, *r.RetryOf)
			}
		}
	}
	// 4 loops x 5 runs, two refusals each.
	if refused != 40 || repeats != 40 {
		t.Errorf("%d 417s and %d repeats, want 40 and 40", refused, repeats)
	}
}

// TestParallelProxyHops reads four curl loops at once through nginx as a
// reverse proxy, every client sending the same two requests to it and
// nginx spreading them over upstream connections it shares between the
// clients (testdata/loopback/README.md). Each request carries an X-Trace
// header nginx passes on and expectscope does not read: taken here from
// the captured bytes, it tells which upstream request is which client's,
// and every negotiation's hop must join the two legs that carry the same
// trace.
func TestParallelProxyHops(t *testing.T) {
	const path = "../testdata/loopback/curl-nginx-proxy-parallel.pcap.gz"
	traces := tracesOf(t, path, 80, "") // 40 from the clients, 40 upstream
	recs, _ := readAll(t, path, true)
	hops := analyze.Correlate(recs)
	trace := func(id string) string {
		for _, r := range recs {
			if r.ID == id {
				_, n, _ := strings.Cut(id, "-")
				i, _ := strconv.Atoi(n)
				return traces[legKey{r.Conn.Client, r.Conn.Server, i}]
			}
		}
		return ""
	}
	down := map[string]bool{}
	for _, h := range hops {
		a, b := trace(h.Downstream.ID), trace(h.Upstream.ID)
		if a == "" || a != b {
			t.Errorf("hop %s -> %s joins %q and %q", h.Downstream.ID, h.Upstream.ID, a, b)
		}
		down[h.Downstream.ID] = true
	}
	n := 0
	for _, r := range recs {
		if r.Type == analyze.TypeNegotiation {
			n++
			if !down[r.ID] {
				t.Errorf("%s %s: no hop", r.ID, r.Request.Target)
			}
		}
	}
	if n != 40 || len(hops) != 40 {
		t.Errorf("%d negotiations, %d hops; want 40 and 40", n, len(hops))
	}
}

// legKey is a request: its connection's endpoints and its place on it.
type legKey struct {
	client, server string
	n              int
}

// tracesOf reads the X-Trace header of every request in a capture of
// loopback traffic (no loss, no reordering): each request head starts a
// segment and fits in it. want is how many there are (0: any number);
// port, when not "", keeps the requests to that port only (the clients';
// the proxies' requests upstream are read from nginx's log).
func tracesOf(t *testing.T, path string, want int, port string) map[legKey]string {
	t.Helper()
	src, err := capture.Open([]string{path}, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	type head struct {
		seq   uint32
		trace string
	}
	heads := map[[2]string][]head{}
	for {
		seg, err := src.Next()
		if err != nil {
			break
		}
		p := seg.Payload
		if !bytes.HasPrefix(p, []byte("PUT ")) || port != "" && !strings.HasSuffix(seg.Dst.String(), ":"+port) {
			continue
		}
		_, rest, ok := bytes.Cut(p, []byte("\r\nX-Trace: "))
		if !ok {
			t.Fatalf("packet %d: a request without X-Trace", seg.Packet)
		}
		tr, _, _ := bytes.Cut(rest, []byte("\r\n"))
		k := [2]string{seg.Src.String(), seg.Dst.String()}
		heads[k] = append(heads[k], head{seg.Seq, string(tr)})
	}
	m := map[legKey]string{}
	for k, hs := range heads {
		slices.SortFunc(hs, func(a, b head) int { return cmp.Compare(a.seq-hs[0].seq, b.seq-hs[0].seq) })
		for i, h := range hs {
			m[legKey{k[0], k[1], i + 1}] = h.trace
		}
	}
	if want > 0 && len(m) != want {
		t.Fatalf("%d requests with a trace, want %d", len(m), want)
	}
	return m
}

// TestHAProxyRepeatAsBody reads curl through HAProxy to nginx, which
// answers 417 and keeps the connection; HAProxy sends curl's repeat
// upstream as the refused request's body, and nginx reads it so
// (testdata/loopback/README.md). The records of each upstream connection
// must be the requests nginx logged on it, in order, with their statuses
// (no repeat read from bytes nginx took as a body), and every hop must
// join the two legs of one request, as their X-Trace headers say.
func TestHAProxyRepeatAsBody(t *testing.T) {
	recs, _ := checkLoggedLegs(t, "curl-haproxy-nginx-417", "18090", 24, 24)
	// checkLoggedLegs correlated them: the client legs' diagnoses say
	// what the hops showed.
	n, told := 0, 0
	for _, r := range recs {
		if r.Final != nil && r.Final.Status == 417 && strings.HasSuffix(r.Conn.Server, ":18090") &&
			strings.Contains(r.Diagnosis, "the proxy then misread the client's next bytes (desync) and sent them upstream as the refused request's body") {
			told++
		}
		if r.Final != nil && r.Final.Status == 417 && strings.HasSuffix(r.Conn.Server, ":18081") {
			n++
			if r.AfterEarlyFinal != "body" || !r.HasFlag(analyze.FlagBodyAfter417) {
				t.Errorf("%s: after the 417 %q, flags %v; want the bytes read as its body", r.ID, r.AfterEarlyFinal, r.Flags)
			}
		}
	}
	if n != 12 || told != 12 {
		t.Errorf("%d 417s upstream, %d client legs telling the proxy misread; want 12 and 12", n, told)
	}
}

// TestProxyChainHops reads six curl loops at once through HAProxy, then
// nginx as a reverse proxy, then nginx as the origin, every client
// sending the same two requests (testdata/loopback/README.md): two hops
// per request, the middle legs shared between the clients. Each leg to a
// server must be what that server logged, and each hop must join legs
// that carry the same X-Trace.
func TestProxyChainHops(t *testing.T) {
	checkLoggedLegs(t, "curl-haproxy-nginx-chain", "18090", 72, 72)
}

// TestSquidRetryLinks reads six curl loops at once through Squid as a
// forward proxy to nginx answering 417 (testdata/loopback/README.md):
// Squid passes curl's Expect on, relays the 417 and closes the client's
// connection, and curl repeats the request on a new one, several clients
// at the same moment; Squid sends its repeats upstream on connections it
// often opened before the refused one closed. Every hop must join the
// legs of one request; every 417 a client got must be linked to that
// client's repeat (the same X-Trace, without Expect), and every link of
// an upstream 417 too (the upstream ones follow the client ones through
// the hops). 14 of the 18 upstream 417s are linked: nginx logged 16
// repeats (two clients gave up, -m 3), and twice Squid closed the
// connection under curl's first repeat, which never went upstream, while
// curl's second, on a new connection, is linked to nothing.
func TestSquidRetryLinks(t *testing.T) {
	recs, trace := checkLoggedLegs(t, "curl-squid-nginx-417", "18095", 52, 52)
	byID := map[string]*analyze.Record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	var clients, upstream, linkedUp int
	for _, r := range recs {
		if r.Final == nil || r.Final.Status != 417 {
			continue
		}
		client := strings.HasSuffix(r.Conn.Server, ":18095")
		if client {
			clients++
		} else {
			upstream++
		}
		rep := byID[deref(r.RetriedBy)]
		if rep == nil && !client {
			continue
		}
		if rep == nil || rep.Request.Expect != "" || trace(rep) != trace(r) || deref(rep.RetryOf) != r.ID {
			t.Errorf("%s (%s): retried by %q, want its client's repeat", r.ID, trace(r), deref(r.RetriedBy))
		}
		if !client {
			linkedUp++
		}
	}
	if clients != 18 || upstream != 18 || linkedUp != 14 {
		t.Errorf("417s: %d to clients, %d upstream, %d of those linked; want 18, 18, 14", clients, upstream, linkedUp)
	}
}

// TestApacheProxy417 reads six curl loops at once through Apache's
// mod_proxy_http to nginx answering 417 (testdata/loopback/README.md):
// Apache passes Expect on and answers the client 500 when nginx refuses.
// Every hop must join the legs of one request, and the hops of the
// refused uploads must say that the 417 was not relayed and the status
// changed, the client's verdict final-before-body.
func TestApacheProxy417(t *testing.T) {
	recs, _ := checkLoggedLegs(t, "curl-apache-nginx-417", "18096", 36, 36)
	byID := map[string]*analyze.Record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	n := 0
	for _, h := range analyze.Correlate(recs) {
		d := byID[h.Downstream.ID]
		if d.Request.Target != "/e417/z" {
			continue
		}
		n++
		if !h.HasChange(analyze.Change417NotRelayed) || !h.HasChange(analyze.ChangeStatusChanged) ||
			d.Verdict != analyze.FinalBeforeBody || d.Final == nil || d.Final.Status != 500 {
			t.Errorf("hop %s: changes %v, client %s %v", h.Downstream.ID, h.Changes, d.Verdict, d.Final)
		}
	}
	if n != 18 {
		t.Errorf("%d hops of refused uploads, want 18", n)
	}
}

// TestNodePoolRetryLinks reads Node's http client, six workers on one
// Agent of four sockets, repeating refused uploads without Expect, five
// seconds after the 417s, on new sockets (testdata/loopback/README.md).
// The records of every connection must be what nginx logged, and every
// 417 linked to its own repeat (the same X-Trace, without Expect) or,
// when nginx logged none, to nothing.
func TestNodePoolRetryLinks(t *testing.T) {
	recs, trace := checkLoggedLegs(t, "node-client-pool-417", "18081", 46, 0)
	byID := map[string]*analyze.Record{}
	repeated := map[string]bool{}
	for _, r := range recs {
		byID[r.ID] = r
		if r.Request.Expect == "" && r.Request.Target == "/e417/z" {
			repeated[trace(r)] = true
		}
	}
	n, linked := 0, 0
	for _, r := range recs {
		if r.Final == nil || r.Final.Status != 417 {
			continue
		}
		n++
		rep := byID[deref(r.RetriedBy)]
		switch {
		case rep == nil && !repeated[trace(r)]:
		case rep == nil || rep.Request.Expect != "" || trace(rep) != trace(r):
			t.Errorf("%s (%s): retried by %q, want its own repeat", r.ID, trace(r), deref(r.RetriedBy))
		default:
			linked++
		}
	}
	if n != 16 || linked != 12 {
		t.Errorf("%d 417s, %d linked; want 16 and 12", n, linked)
	}
}

// checkLoggedLegs reads testdata/loopback/NAME.pcap.gz: clients send to
// clientPort, and NAME.servers.log (or NAME.origin.log) is the access log
// of the nginx servers behind ("$server_port $remote_port $request_method
// $uri $http_x_trace $status ..."). The records of every connection to a
// logged server must be the requests it logged there, in order, with
// their statuses; every hop must join two legs with the same X-Trace (a
// client's, read from the captured bytes; a logged one's, from the log);
// legs and hops are counted.
func checkLoggedLegs(t *testing.T, name, clientPort string, wantLegs, wantHops int) (recs []*analyze.Record, traceOf func(*analyze.Record) string) {
	t.Helper()
	const dir = "../testdata/loopback/"
	raw, err := os.ReadFile(dir + name + ".servers.log")
	if os.IsNotExist(err) {
		raw, err = os.ReadFile(dir + name + ".origin.log")
	}
	if err != nil {
		t.Fatal(err)
	}
	type logged struct {
		method, target, trace string
		status                int
	}
	logs := map[string][]logged{} // by "server port/client port"
	for line := range strings.Lines(string(raw)) {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		st, _ := strconv.Atoi(f[5])
		logs[f[0]+"/"+f[1]] = append(logs[f[0]+"/"+f[1]], logged{f[2], f[3], f[4], st})
	}
	clientTraces := tracesOf(t, dir+name+".pcap.gz", 0, clientPort)
	recs, _ = readAll(t, dir+name+".pcap.gz", true)
	legKeyOf := func(r *analyze.Record) string {
		_, sp, _ := strings.Cut(r.Conn.Server, ":")
		_, cp, _ := strings.Cut(r.Conn.Client, ":")
		return sp + "/" + cp
	}
	byID := map[string]*analyze.Record{}
	legs := map[string][]*analyze.Record{}
	for _, r := range recs {
		byID[r.ID] = r
		if _, ok := logs[legKeyOf(r)]; ok || !strings.HasSuffix(r.Conn.Server, ":"+clientPort) {
			legs[legKeyOf(r)] = append(legs[legKeyOf(r)], r)
		}
	}
	if len(legs) != len(logs) {
		t.Errorf("%d connections to logged servers, the log has %d", len(legs), len(logs))
	}
	n := 0
	for k, rs := range legs {
		slices.SortFunc(rs, func(a, b *analyze.Record) int { return cmp.Compare(seqOf(a.ID), seqOf(b.ID)) })
		var got, want []string
		for _, r := range rs {
			status := 0
			if r.Final != nil {
				status = r.Final.Status
			}
			got = append(got, fmt.Sprintf("%s %s %d", r.Request.Method, r.Request.Target, status))
		}
		for _, l := range logs[k] {
			want = append(want, fmt.Sprintf("%s %s %d", l.method, l.target, l.status))
		}
		if !slices.Equal(got, want) {
			t.Errorf("connection %s:\n got %q\nlog %q", k, got, want)
		}
		n += len(rs)
	}
	traceOf = func(r *analyze.Record) string {
		if l, ok := logs[legKeyOf(r)]; ok {
			if k := seqOf(r.ID); k <= len(l) {
				return l[k-1].trace
			}
			return ""
		}
		return clientTraces[legKey{r.Conn.Client, r.Conn.Server, seqOf(r.ID)}]
	}
	hops := 0
	for _, h := range analyze.Correlate(recs) {
		d, u := byID[h.Downstream.ID], byID[h.Upstream.ID]
		if u == nil {
			t.Errorf("hop %s (%s): no upstream leg, but the next server logged it", h.Downstream.ID, traceOf(d))
			continue
		}
		if a, b := traceOf(d), traceOf(u); a == "" || a != b {
			t.Errorf("hop %s -> %s joins %q and %q", h.Downstream.ID, h.Upstream.ID, a, b)
		}
		hops++
	}
	if n != wantLegs || hops != wantHops {
		t.Errorf("%d logged legs and %d hops, want %d and %d", n, hops, wantLegs, wantHops)
	}
	return recs, traceOf
}

// seqOf is a record's place on its connection (the number after the dash
// of its id).
func seqOf(id string) int {
	_, n, _ := strings.Cut(id, "-")
	k, _ := strconv.Atoi(n)
	return k
}
