package analyze

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Changes a hop can make to a request's Expect semantics (DESIGN.md,
// "Intermediaries"). A hop lists them in this order.
const (
	ChangeExpectStripped    = "expect-stripped"
	ChangeExpectAdded       = "expect-added"
	ChangeProxyGenerated100 = "proxy-generated-100"
	ChangeProxy417          = "proxy-417"
	ChangeStoreAndForward   = "store-and-forward"
	ChangeVersionDowngrade  = "version-downgrade"
	Change100NotRelayed     = "100-not-relayed"
	Change417NotRelayed     = "417-not-relayed"
	ChangeStatusChanged     = "status-changed"
	ChangeReasonChanged     = "reason-changed"
)

// ChangeInfo documents one hop change.
type ChangeInfo struct {
	Change  string
	Meaning string
}

// HopChanges lists every change a hop can report, in report order.
var HopChanges = []ChangeInfo{
	{ChangeExpectStripped, "Expect on the downstream request, not on the upstream one"},
	{ChangeExpectAdded, "Expect on the upstream request only"},
	{ChangeProxyGenerated100, "the client got a 100 before any 100 came from upstream (the proxy answered it itself)"},
	{ChangeProxy417, "the 417 came from the intermediary; the upstream never saw or never refused the expectation"},
	{ChangeStoreAndForward, "the proxy took the whole body before the upstream request went out"},
	{ChangeVersionDowngrade, "the upstream request used a lower HTTP version (1.1 down, 1.0 up)"},
	{Change100NotRelayed, "upstream sent 100, the client got none"},
	{Change417NotRelayed, "upstream sent 417, the client did not get it"},
	{ChangeStatusChanged, "the client's final status differs from the upstream one (e.g. 413 became 502)"},
	{ChangeReasonChanged, "same final status, different reason phrase"},
}

// MarshalJSON writes the hop in ndjson schema v1; a hop whose upstream
// leg was never seen (a proxy-417 the origin never heard of) has
// "upstream": null.
func (h *Hop) MarshalJSON() ([]byte, error) {
	var up *Endpoint
	if h.Upstream != (Endpoint{}) {
		up = &h.Upstream
	}
	changes := h.Changes
	if changes == nil {
		changes = []string{}
	}
	return json.Marshal(struct {
		Type         string    `json:"type"`
		Intermediary string    `json:"intermediary"`
		Downstream   Endpoint  `json:"downstream"`
		Upstream     *Endpoint `json:"upstream"`
		Changes      []string  `json:"changes"`
		WastedBytes  int64     `json:"wasted_bytes,omitempty"`
		LostMs       *float64  `json:"lost_ms,omitempty"`
		AttributedBy string    `json:"attributed_by,omitempty"`
	}{TypeHop, h.Intermediary, h.Downstream, up, changes, h.WastedBytes, h.LostMs, h.AttributedBy})
}

// HasUpstream reports whether the hop links an upstream leg.
func (h *Hop) HasUpstream() bool { return h.Upstream != (Endpoint{}) }

// HasChange reports whether the hop lists change c.
func (h *Hop) HasChange(c string) bool { return slices.Contains(h.Changes, c) }

// corrKey groups requests that may be two legs of one proxied request.
type corrKey struct{ method, target string }

// pendingLeg is a record waiting for its upstream leg.
type pendingLeg struct {
	r      *Record
	expire time.Time // after this no upstream request can belong to it
}

// Correlation bounds: how many waiting legs of one (method, target) are
// kept and scanned (concurrency through one proxy for one URL), and how
// long a leg without a final response waits for its upstream.
const (
	maxPendingPerKey = 512
	pendingNoFinal   = 10 * time.Minute
)

// Correlate pairs the downstream (client → proxy) and upstream (proxy →
// next hop) legs of proxied requests across connections and returns one
// hop per intermediary traversed: a chain of two proxies yields two hops,
// the upstream leg of the first being the downstream leg of the second.
//
// recs are all records of a run (negotiations and exchanges: upstream
// legs often carry no Expect); their order does not matter. Correlate
// sets Record.Intermediary on both legs, adds FlagViaIntermediary where
// the 100 or 417 came from a proxy (from a hop, or with one leg only from
// the response's Via or a proxy-only Server value), and rewrites the
// Diagnosis of downstream legs whose outcome the hop explains.
//
// It walks requests in order of their header end, looking up waiting
// downstream legs by (method, origin-form target): linear in the number
// of records for a bounded concurrency per target.
func Correlate(recs []*Record) []*Hop {
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b *Record) int {
		if c := a.HeadersEndAt.Compare(b.HeadersEndAt); c != 0 {
			return c
		}
		switch {
		case a.Packet < b.Packet:
			return -1
		case a.Packet > b.Packet:
			return 1
		}
		return 0
	})
	c := &correlator{
		pending:   map[corrKey][]pendingLeg{},
		upOf:      make(map[*Record]*Record, len(recs)/2),
		downOf:    make(map[*Record]*Record, len(recs)/2),
		connProxy: map[Conn]string{},
		next:      map[string]map[string]bool{},
	}
	var pairs [][2]*Record
	for _, r := range sorted {
		k := keyOf(r)
		q := c.pending[k]
		// Drop legs that can no longer get an upstream.
		q = slices.DeleteFunc(q, func(p pendingLeg) bool {
			return p.r.HeadersEndAt.Before(r.HeadersEndAt) && p.expire.Before(r.HeadersEndAt)
		})
		if d := c.pick(q, r); d >= 0 {
			down := q[d].r
			q = slices.Delete(q, d, d+1)
			c.upOf[down] = r
			c.downOf[r] = down
			c.connProxy[r.Conn] = down.Conn.Server
			if c.next[down.Conn.Server] == nil {
				c.next[down.Conn.Server] = map[string]bool{}
			}
			c.next[down.Conn.Server][r.Conn.Server] = true
			pairs = append(pairs, [2]*Record{down, r})
		}
		if len(q) >= maxPendingPerKey {
			q = slices.Delete(q, 0, len(q)-maxPendingPerKey+1)
		}
		c.pending[k] = append(q, pendingLeg{r, expiryOf(r)})
	}
	relinkUpstream(pairs, c.upOf, c.downOf, recs)
	hops := make([]*Hop, 0, len(pairs))
	proxies := map[string]bool{}
	for _, p := range pairs {
		proxies[p[0].Conn.Server] = true
	}
	for _, p := range pairs {
		hops = append(hops, buildHop(p[0], p[1], proxies[p[1].Conn.Server]))
	}
	// One leg only: the response names an intermediary.
	for _, r := range sorted {
		if c.upOf[r] != nil {
			continue
		}
		if h := singleLeg(r, proxies); h != nil {
			hops = append(hops, h)
		}
	}
	return hops
}

// relinkUpstream makes the retry links of upstream legs follow their
// clients': when a client's 417 (d) was repeated by r and both requests
// went through a proxy (d to u, r to u2), the proxy's repeat of u is u2,
// whatever the retry linker paired from the proxy's own connections
// (Squid opens the connection of its repeat before it closes the refused
// one, and the proxy's requests all come from one address); and u is
// not repeated by a request whose own client leg repeats no 417 of d's.
func relinkUpstream(pairs [][2]*Record, upOf, downOf map[*Record]*Record, recs []*Record) {
	var byID map[string]*Record
	for _, p := range pairs {
		d, u := p[0], p[1]
		if u.Final == nil || u.Final.Status != 417 || u.Request.Expect == "" {
			continue
		}
		if byID == nil {
			byID = make(map[string]*Record, len(recs))
			for _, r := range recs {
				byID[r.ID] = r
			}
		}
		var u2 *Record
		if d.RetriedBy != nil {
			u2 = upOf[byID[*d.RetriedBy]]
		}
		if u2 == nil {
			// The client's 417 was not repeated through the proxy: a link
			// to a request whose client leg repeats something else is
			// another client's request.
			if have := byID[idOf(u.RetriedBy)]; have != nil {
				if r2 := downOf[have]; r2 != nil && idOf(r2.RetryOf) != d.ID {
					have.RetryOf = nil
					setRetry(u, nil)
				}
			}
			continue
		}
		if u2 == u || idOf(u.RetriedBy) == u2.ID {
			continue
		}
		if old := byID[idOf(u.RetriedBy)]; old != nil && idOf(old.RetryOf) == u.ID {
			old.RetryOf = nil
		}
		if prev := byID[idOf(u2.RetryOf)]; prev != nil && idOf(prev.RetriedBy) == u2.ID {
			setRetry(prev, nil)
		}
		setRetry(u, u2)
	}
}

// setRetry links 417'd negotiation orig to the request that repeated it
// (nil: none), both ways.
func setRetry(orig, rep *Record) {
	if rep == nil {
		MarkRetried(orig, "", false)
		return
	}
	MarkRetried(orig, rep.ID, rep.Request.Expect == "")
	oid := orig.ID
	rep.RetryOf = &oid
}

// MarkRetried records on 417'd negotiation r the request that repeated it
// (id "": none) and whether that one left Expect out, with the flag and
// diagnosis that follow (RFC 9110 10.1.1): for a link decided after r was
// made (by the pipeline's merger, or through a proxy's hops).
func MarkRetried(r *Record, id string, withoutExpect bool) {
	r.RetriedBy = nil
	if id != "" {
		r.RetriedBy = &id
	}
	f := FlagNoRetryAfter417
	if id != "" && withoutExpect {
		f = FlagRetriedWithoutExpect
	}
	if i := slices.IndexFunc(r.Flags, func(x Flag) bool { return x == FlagNoRetryAfter417 || x == FlagRetriedWithoutExpect }); i >= 0 {
		r.Flags[i] = f
	} else {
		r.Flags = append(r.Flags, f)
	}
	r.Diagnosis = Diagnose(r)
}

func idOf(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

type correlator struct {
	pending map[corrKey][]pendingLeg
	upOf    map[*Record]*Record // downstream -> its upstream leg
	downOf  map[*Record]*Record // upstream -> its downstream leg
	// connProxy remembers, per upstream connection, the proxy endpoint
	// whose request it carried (proxies reuse upstream connections).
	connProxy map[Conn]string
	// next remembers the upstream servers each proxy endpoint talks to.
	next map[string]map[string]bool
}

// keyOf is the correlation key: method and the target in origin form
// (a forward proxy receives absolute-form and sends origin-form).
func keyOf(r *Record) corrKey {
	return corrKey{strings.ToUpper(r.Request.Method), originForm(r.Request.Target)}
}

// originForm turns an absolute-form request-target into origin-form
// (RFC 9112 3.2.2); other forms are returned as they are.
func originForm(t string) string {
	i := strings.Index(t, "://")
	if i <= 0 || i > 8 || strings.HasPrefix(t, "/") {
		return t
	}
	scheme := strings.ToLower(t[:i])
	if scheme != "http" && scheme != "https" && scheme != "ws" && scheme != "wss" {
		return t
	}
	rest := t[i+3:]
	j := strings.IndexAny(rest, "/?")
	if j < 0 {
		return "/"
	}
	if rest[j] == '?' {
		return "/" + rest[j:]
	}
	return rest[j:]
}

// expiryOf is the last time an upstream request can belong to r: a proxy
// asks upstream before it answers the client.
func expiryOf(r *Record) time.Time {
	if r.Final != nil {
		return r.Final.At
	}
	last := r.HeadersEndAt
	if r.BodyEndAt != nil && r.BodyEndAt.After(last) {
		last = *r.BodyEndAt
	}
	return last.Add(pendingNoFinal)
}

// bodyLen is the request body length as declared (Content-Length) or, for
// a complete chunked body, as decoded; ok is false when unknown.
func bodyLen(r *Record) (n int64, ok bool) {
	switch {
	case r.Request.Chunked:
		if r.BodyComplete {
			return r.BodyDataBytes, true
		}
		return 0, false
	case r.Request.ContentLength != nil:
		return *r.Request.ContentLength, true
	}
	return 0, true // a request without framing has no body (RFC 9112 6.3)
}

func hostOf(ep string) string {
	h, _, err := net.SplitHostPort(ep)
	if err != nil {
		return ep
	}
	return h
}

// forwardedFrom reports whether X-Forwarded-For names ip.
func forwardedFrom(xff, ip string) bool {
	for f := range strings.SplitSeq(xff, ",") {
		if strings.Trim(strings.TrimSpace(f), "[]\"") == ip {
			return true
		}
	}
	return false
}

// pick returns the index in q of the downstream leg u is the upstream of,
// or -1. Hard rules say what is possible; a score chooses among the
// possible; of equal scores, the one whose final came soonest after u's
// (a proxy relays the final at once: parallel uploads of one URL through
// one proxy score alike, and the first come is not always the first
// forwarded), else the earliest downstream (proxies forward in arrival
// order).
func (c *correlator) pick(q []pendingLeg, u *Record) int {
	best, bestScore := -1, 0
	var bestLag time.Duration
	for i, p := range q {
		s, ok := c.score(p.r, u)
		if !ok {
			continue
		}
		lag, known := relayLag(p.r, u)
		if best < 0 || s > bestScore || s == bestScore && known && (bestLag < 0 || lag < bestLag) {
			best, bestScore = i, s
			bestLag = -1
			if known {
				bestLag = lag
			}
		}
	}
	return best
}

// relayLag is how long after upstream leg u's final the same status
// reached the client of downstream leg d; known is false without both.
func relayLag(d, u *Record) (lag time.Duration, known bool) {
	if d.Final == nil || u.Final == nil || d.Final.Status != u.Final.Status {
		return 0, false
	}
	return d.Final.At.Sub(u.Final.At), true
}

// score judges d (client → proxy) as the downstream leg of u (proxy →
// next hop).
func (c *correlator) score(d, u *Record) (int, bool) {
	if d == u || d.Conn == u.Conn || c.upOf[d] != nil || c.downOf[d] == u {
		return 0, false
	}
	// The upstream goes somewhere else than the proxy, from another
	// socket than the client's, never from the proxy's listening socket.
	if u.Conn.Server == d.Conn.Server || u.Conn.Client == d.Conn.Client || u.Conn.Client == d.Conn.Server {
		return 0, false
	}
	// A leg that is an upstream cannot loop back to its own downstream's proxy.
	if prev := c.downOf[d]; prev != nil && u.Conn.Server == prev.Conn.Server {
		return 0, false
	}
	if u.HeadersEndAt.Before(d.HeadersEndAt) {
		return 0, false
	}
	if d.Final != nil && u.HeadersEndAt.After(d.Final.At) {
		return 0, false
	}
	// A relayed final cannot reach the client before upstream sent it.
	if d.Final != nil && u.Final != nil && d.Final.Status == u.Final.Status && d.Final.At.Before(u.Final.At) {
		return 0, false
	}
	score := 0
	if d.Request.XRequestID != "" && u.Request.XRequestID != "" {
		if d.Request.XRequestID != u.Request.XRequestID {
			return 0, false
		}
		score += 100
	}
	sameHost := hostOf(u.Conn.Client) == hostOf(d.Conn.Server)
	fwd := u.Request.XForwardedFor != "" && forwardedFrom(u.Request.XForwardedFor, hostOf(d.Conn.Client))
	if !sameHost && !fwd && score < 100 {
		return 0, false
	}
	if sameHost {
		score += 5
	}
	if fwd {
		score += 10
	}
	dl, dok := bodyLen(d)
	ul, uok := bodyLen(u)
	if dok && uok {
		if dl != ul {
			return 0, false
		}
		score += 20
	}
	// Physical order of the body: the proxy forwards no byte before it got
	// one, and cannot finish before the client finished. Not for bytes
	// sent after an early final as its body: HAProxy, given the client's
	// repeat of a refused request, sends it upstream as the refused one's
	// body, which the client never sent.
	if u.BodyStartAt != nil && u.BodyDataBytes > 0 && u.AfterEarlyFinal != "body" {
		if d.BodyStartAt == nil || u.BodyStartAt.Before(*d.BodyStartAt) {
			return 0, false
		}
		if u.BodyComplete && d.BodyEndAt != nil && u.BodyEndAt != nil && dok && uok && u.BodyEndAt.Before(*d.BodyEndAt) {
			return 0, false
		}
	}
	if d.Request.Host != "" && strings.EqualFold(d.Request.Host, u.Request.Host) {
		score += 5
	}
	// A proxy that passes Expect on passes it on every request, one that
	// drops it drops it from all: of two otherwise alike, the one asking
	// as the upstream does is the likelier.
	if (d.Request.Expect != "") == (u.Request.Expect != "") {
		score += 3
	}
	if u.Request.Via != "" && u.Request.Via != d.Request.Via && strings.HasPrefix(u.Request.Via, d.Request.Via) {
		score += 5
	}
	if p, ok := c.connProxy[u.Conn]; ok {
		if p == d.Conn.Server {
			score += 50
		} else {
			score -= 50
		}
	}
	if c.next[d.Conn.Server][u.Conn.Server] {
		score += 10
	}
	return score, true
}

// firstStatus returns the time of the first interim with status s.
func firstInterim(r *Record, s int) *time.Time {
	for i := range r.Interim {
		if r.Interim[i].Status == s {
			return &r.Interim[i].At
		}
	}
	return nil
}

func versionLess(a, b string) bool {
	return strings.TrimPrefix(strings.ToUpper(a), "HTTP/") < strings.TrimPrefix(strings.ToUpper(b), "HTTP/")
}

// buildHop names what the proxy between d and u changed.
func buildHop(d, u *Record, upIsProxy bool) *Hop {
	h := &Hop{
		Type:         TypeHop,
		Intermediary: d.Conn.Server,
		Downstream:   Endpoint{d.ID, d.Conn.Client, d.Conn.Server},
		Upstream:     Endpoint{u.ID, u.Conn.Client, u.Conn.Server},
		Changes:      []string{},
	}
	dExp, uExp := d.Request.Expect != "", u.Request.Expect != ""
	if dExp && !uExp {
		h.Changes = append(h.Changes, ChangeExpectStripped)
	}
	if uExp && !dExp {
		h.Changes = append(h.Changes, ChangeExpectAdded)
	}
	d100, u100 := firstInterim(d, 100), firstInterim(u, 100)
	if d100 != nil && (u100 == nil || d100.Before(*u100)) {
		h.Changes = append(h.Changes, ChangeProxyGenerated100)
	}
	if d.Final != nil && d.Final.Status == 417 && (u.Final == nil || u.Final.Status != 417) {
		h.Changes = append(h.Changes, ChangeProxy417)
	}
	if d.BodyEndAt != nil && d.BodyBytes > 0 && !d.BodyEndAt.After(u.HeadersEndAt) {
		h.Changes = append(h.Changes, ChangeStoreAndForward)
	}
	if d.Request.Version != "" && u.Request.Version != "" && versionLess(u.Request.Version, d.Request.Version) {
		h.Changes = append(h.Changes, ChangeVersionDowngrade)
	}
	if u100 != nil && d100 == nil {
		h.Changes = append(h.Changes, Change100NotRelayed)
	}
	if u.Final != nil && u.Final.Status == 417 && (d.Final == nil || d.Final.Status != 417) {
		h.Changes = append(h.Changes, Change417NotRelayed)
	}
	if d.Final != nil && u.Final != nil {
		switch {
		case d.Final.Status != u.Final.Status:
			h.Changes = append(h.Changes, ChangeStatusChanged)
		case d.Final.Reason != u.Final.Reason:
			h.Changes = append(h.Changes, ChangeReasonChanged)
		}
	}
	h.WastedBytes, h.LostMs = costOf(d)
	d.Intermediary = h.Intermediary
	if u.Intermediary == "" {
		u.Intermediary = h.Intermediary
	}
	if h.HasChange(ChangeProxyGenerated100) || h.HasChange(ChangeProxy417) {
		addFlag(d, FlagViaIntermediary)
	}
	if s := hopDiagnosis(h, d, u, upIsProxy); s != "" {
		d.Diagnosis = s
	}
	return h
}

// costOf is what the request cost its client: body bytes uploaded and
// then refused (final >= 400), and the time lost, i.e. waiting in vain for
// a 100 plus, for a refused upload, the time from its first byte to the
// refusal.
func costOf(d *Record) (int64, *float64) {
	var wasted int64
	lost := 0.0
	has := false
	if d.LostMs != nil {
		lost += *d.LostMs
		has = true
	}
	if d.Final != nil && d.Final.Status >= 400 && d.BodyStartAt != nil && d.BodyBytes > 0 {
		wasted = d.BodyBytes
		if d.Final.At.After(*d.BodyStartAt) {
			lost += float64(d.Final.At.Sub(*d.BodyStartAt)) / float64(time.Millisecond)
			has = true
		}
	}
	if !has {
		return wasted, nil
	}
	lost = float64(int64(lost*1000+0.5)) / 1000
	return wasted, &lost
}

func addFlag(r *Record, f Flag) {
	if !r.HasFlag(f) {
		r.Flags = append(r.Flags, f)
	}
}

// proxyProducts are Server values only intermediaries send (a Server of
// nginx, Apache or Caddy may as well be an origin, so they do not count).
var proxyProducts = []string{
	"squid", "varnish", "ats", "apachetrafficserver", "apache traffic server",
	"envoy", "istio-envoy", "cloudflare", "akamaighost", "cloudfront", "awselb",
	"google frontend", "gfe", "zscaler", "bigip", "big-ip", "ddos-guard", "sucuri",
	"fastly", "pingora", "traffic server", "trafficserver", "wingate", "ccproxy",
}

// proxyTokens are the proxy products named by a Server value's first
// token; proxyPrefixes those of more than one word, named by its start.
var proxyTokens, proxyPrefixes = func() (map[string]string, []string) {
	tokens := map[string]string{}
	var prefixes []string
	for _, p := range proxyProducts {
		if strings.Contains(p, " ") {
			prefixes = append(prefixes, p)
		} else {
			tokens[p] = p
		}
	}
	return tokens, prefixes
}()

// ProxyProduct returns the proxy product a Server value names, or "".
// Every record's Server is looked up: only the bytes a product name can
// match are lower-cased, in place.
func ProxyProduct(server string) string {
	s := strings.TrimSpace(server)
	if s == "" {
		return ""
	}
	var buf [24]byte // longer than any product name
	low := buf[:min(len(s), len(buf))]
	for i := range low {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	tok := low
	if i := bytes.IndexAny(tok, "/ ("); i >= 0 {
		tok = tok[:i]
	} else if len(s) > len(buf) {
		tok = nil // a first token longer than any product
	}
	if p, ok := proxyTokens[string(tok)]; ok {
		return p
	}
	for _, p := range proxyPrefixes {
		if bytes.HasPrefix(low, []byte(p)) {
			return p
		}
	}
	return ""
}

// singleLeg attributes the 100 or 417 of a request whose upstream leg was
// not seen to an intermediary, from the response's Via, a proxy-only
// Server value, or an endpoint proven a proxy by other hops of the run. A
// 417 a proxy answered itself yields a hop without upstream (proxy-417)
// when the Server or the endpoint proves who answered; Via alone only
// flags the record (the proxy may have relayed the origin's 417).
func singleLeg(r *Record, proxies map[string]bool) *Hop {
	if r.Final == nil && len(r.Interim) == 0 {
		return nil
	}
	got417 := r.Final != nil && r.Final.Status == 417
	got100 := firstInterim(r, 100) != nil
	if !got417 && !got100 {
		return nil
	}
	var via, product string
	if r.Final != nil {
		via, product = r.Final.Via, ProxyProduct(r.Final.Server)
	}
	known := proxies[r.Conn.Server]
	if via == "" && product == "" && !known {
		return nil
	}
	addFlag(r, FlagViaIntermediary)
	if r.Intermediary == "" {
		r.Intermediary = r.Conn.Server
	}
	if !got417 || (product == "" && !known) {
		return nil
	}
	h := &Hop{
		Type:         TypeHop,
		Intermediary: r.Conn.Server,
		Downstream:   Endpoint{r.ID, r.Conn.Client, r.Conn.Server},
		Changes:      []string{ChangeProxy417},
	}
	switch {
	case product != "":
		h.AttributedBy = "server: " + r.Final.Server
	default:
		h.AttributedBy = "endpoint: proxies other requests in this capture"
	}
	h.WastedBytes, h.LostMs = costOf(r)
	who := fmt.Sprintf("the proxy at %s", r.Conn.Server)
	if product != "" {
		who = fmt.Sprintf("the proxy at %s (%s)", r.Conn.Server, r.Final.Server)
	}
	r.Diagnosis = joinDiag(r.Diagnosis, who+" answered 417 itself; no upstream request was seen")
	return h
}

// hopDiagnosis says, in a reviewer's words, what the hop did to the
// client's request; "" when the hop changed nothing that matters.
func hopDiagnosis(h *Hop, d, u *Record, upIsProxy bool) string {
	proxy := fmt.Sprintf("the proxy at %s", h.Intermediary)
	upName := "the origin"
	if upIsProxy {
		upName = fmt.Sprintf("the next proxy (%s)", u.Conn.Server)
	}
	if u.Final != nil && u.Final.Server != "" {
		upName += fmt.Sprintf(" (%s)", u.Final.Server)
	}
	status := 0
	if d.Final != nil {
		status = d.Final.Status
	}
	if d.HasFlag(FlagUnreadBody) && status == 417 && u.Final != nil && u.Final.Status == 417 {
		// The 417 was relayed, and the proxy, not the origin, lost track
		// of the client's next bytes (HAProxy takes curl's repeat as the
		// refused body).
		s := fmt.Sprintf("%s does not support the expectation: its 417 came through %s", upName, proxy)
		switch {
		case d.HasFlag(FlagRetriedWithoutExpect):
			s += "; the client retried without Expect"
		case d.RetriedBy != nil:
			s += "; the client retried with Expect again"
		}
		s += "; the proxy then misread the client's next bytes (desync)"
		if u.AfterEarlyFinal == "body" {
			s += " and sent them upstream as the refused request's body"
		}
		return s
	}
	var parts []string
	switch {
	case h.HasChange(ChangeProxyGenerated100):
		s := proxy + " answered 100 itself"
		if h.HasChange(ChangeStoreAndForward) {
			s += " and buffered the body"
		}
		if status >= 400 && d.BodyStartAt != nil {
			s += fmt.Sprintf("; %s then refused it with %d after a full upload (%d bytes in vain)", upName, refusal(d, u), h.WastedBytes)
			return s
		}
		if u.Request.Expect == "" {
			s += "; the upstream was never asked for one"
		}
		parts = append(parts, s)
	case h.HasChange(ChangeProxy417):
		parts = append(parts, proxy+" answered 417 itself; the upstream did not refuse the expectation")
	case h.HasChange(Change100NotRelayed):
		parts = append(parts, fmt.Sprintf("%s did not relay the upstream's 100", proxy))
	case h.HasChange(ChangeExpectStripped):
		parts = append(parts, proxy+" removed Expect upstream")
	case h.HasChange(ChangeStoreAndForward) && status >= 400 && d.BodyStartAt != nil:
		parts = append(parts, fmt.Sprintf("%s buffered the whole body before asking upstream; %s then refused it with %d", proxy, upName, refusal(d, u)))
	}
	if h.HasChange(Change417NotRelayed) {
		parts = append(parts, fmt.Sprintf("the upstream's 417 was not relayed (the client got %d)", status))
	} else if h.HasChange(ChangeStatusChanged) {
		parts = append(parts, fmt.Sprintf("the upstream answered %d but %s sent %d", u.Final.Status, proxy, status))
	}
	if len(parts) == 0 {
		return ""
	}
	if h.HasChange(ChangeStatusChanged) && u.Request.Expect != "" && firstInterim(u, 100) == nil && u.BodyDataBytes == 0 && d.BodyStartAt != nil {
		parts = append(parts, "it forwarded Expect, got no 100 and withheld the body")
	}
	return joinDiag(d.Diagnosis, strings.Join(parts, "; "))
}

// refusal is the status the upstream refused with (the client's when unknown).
func refusal(d, u *Record) int {
	if u.Final != nil {
		return u.Final.Status
	}
	return d.Final.Status
}

func joinDiag(base, extra string) string {
	switch {
	case extra == "" || strings.Contains(base, extra): // correlating twice says it once
		return base
	case base == "":
		return extra
	}
	return base + "; " + extra
}
