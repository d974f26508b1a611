package report

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/expectscope/expectscope/analyze"
)

// Counts is the summary of a set of records: the tally per verdict and
// flag, the totals, and the same facts broken down per server and per
// client. It is the ndjson record {"type":"summary",...}.
type Counts struct {
	Type         string         `json:"type"` // "summary"
	Negotiations int            `json:"negotiations"`
	Exchanges    int            `json:"exchanges,omitempty"`
	Hops         int            `json:"hops,omitempty"`
	Verdicts     map[string]int `json:"verdicts"`
	Flags        map[string]int `json:"flags"`
	// LostMs is the time clients waited in vain, summed.
	LostMs float64 `json:"lost_ms"`
	// WastedBytes are body bytes uploaded and then refused (final >= 400).
	WastedBytes int64 `json:"wasted_bytes"`
	// Wait100 and ClientWait are the percentiles over all negotiations.
	Wait100    Percentiles `json:"wait_100_ms"`
	ClientWait Percentiles `json:"client_wait_ms"`
	// Servers and Clients break the negotiations down per server
	// (endpoint and Host) and per client (User-Agent family).
	Servers []*Group `json:"servers"`
	Clients []*Group `json:"clients"`
	// Timeouts lists the clients whose expect timers fired, with the
	// timer guessed from how long they waited.
	Timeouts []*TimerFired `json:"timeouts"`
	// Input carries the pipeline's own counters (packets, gaps, errors).
	Input map[string]uint64 `json:"input,omitempty"`
	// Warnings are the problems met while reading, one line each.
	Warnings []string `json:"warnings,omitempty"`
}

// Group is the summary of the negotiations of one server or one client.
type Group struct {
	// Key names the group: "IP:PORT Host" for a server, the User-Agent
	// family for a client.
	Key string `json:"key"`
	// Endpoint and Host are set for a server group.
	Endpoint     string         `json:"endpoint,omitempty"`
	Host         string         `json:"host,omitempty"`
	Negotiations int            `json:"negotiations"`
	Verdicts     map[string]int `json:"verdicts"`
	Wait100      Percentiles    `json:"wait_100_ms"`
	ClientWait   Percentiles    `json:"client_wait_ms"`
	LostMs       float64        `json:"lost_ms"`
	WastedBytes  int64          `json:"wasted_bytes"`

	wait100, clientWait []float64
}

// TimerFired counts the negotiations of one client family whose expect
// timer fired (verdict timed-out), per guessed timer. TimerMs is 0 when
// the wait matched no known timer.
type TimerFired struct {
	Client      string   `json:"client"`
	TimerMs     int      `json:"timer_ms"`
	Count       int      `json:"count"`
	UserAgents  []string `json:"user_agents"`
	MedianWait  *float64 `json:"median_wait_ms"`
	waits       []float64
	userAgentOK map[string]bool
}

// Percentiles are nearest-rank percentiles of a set of waits in ms, nil
// when the set is empty. The nearest-rank p-th percentile of N sorted
// values is the value at rank ceil(p/100 × N) (1-based): always a value
// that was measured, never an interpolation, so p99 of fewer than 100
// values is the largest one.
type Percentiles struct {
	N   int      `json:"n"`
	P50 *float64 `json:"p50"`
	P90 *float64 `json:"p90"`
	P99 *float64 `json:"p99"`
}

// NearestRank returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, or false when sorted is empty.
func NearestRank(sorted []float64, p float64) (float64, bool) {
	n := len(sorted)
	if n == 0 {
		return 0, false
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1], true
}

// percentiles computes P50, P90 and P99 of vals (sorted in place).
func percentiles(vals []float64) Percentiles {
	slices.Sort(vals)
	p := Percentiles{N: len(vals)}
	at := func(q float64) *float64 {
		if v, ok := NearestRank(vals, q); ok {
			return &v
		}
		return nil
	}
	p.P50, p.P90, p.P99 = at(50), at(90), at(99)
	return p
}

// Client families, in the order the summary lists them.
const (
	FamilyCurl    = "curl"
	FamilyGo      = "Go-http-client"
	FamilyDotNet  = ".NET"
	FamilyJava    = "Java"
	FamilyPython  = "python"
	FamilyAWS     = "aws-sdk"
	FamilyNode    = "node"
	FamilyBrowser = "browser"
	FamilyOther   = "other"
)

// Families lists the client families ClientFamily returns.
var Families = []string{FamilyCurl, FamilyGo, FamilyDotNet, FamilyJava, FamilyPython, FamilyAWS, FamilyNode, FamilyBrowser, FamilyOther}

// ClientFamily names the client stack a User-Agent belongs to. AWS SDKs
// are recognised first (their User-Agent also names the language), then
// the language stacks, then browsers (Mozilla/); anything else, an
// absent User-Agent included, is "other".
func ClientFamily(ua string) string {
	l := strings.ToLower(ua)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	switch {
	case l == "":
		return FamilyOther
	case has("aws-sdk", "aws-cli", "boto3", "botocore", "aws-chunked"):
		return FamilyAWS
	case strings.HasPrefix(l, "curl/") || has("libcurl"):
		return FamilyCurl
	case has("go-http-client"):
		return FamilyGo
	case has(".net", "dotnet", "system.net", "windowspowershell", "microsoft-"):
		return FamilyDotNet
	case has("java", "apache-httpclient", "okhttp", "jetty", "reactor-netty"):
		return FamilyJava
	case has("python", "urllib3", "aiohttp", "httpx"):
		return FamilyPython
	case has("node", "undici", "axios", "got (", "deno", "bun/"):
		return FamilyNode
	case strings.HasPrefix(l, "mozilla/") || strings.HasPrefix(l, "opera/"):
		return FamilyBrowser
	}
	return FamilyOther
}

// serverKey names a server group: its endpoint and the Host asked for.
func serverKey(r *analyze.Record) string {
	if r.Request.Host == "" {
		return r.Conn.Server
	}
	return r.Conn.Server + " " + r.Request.Host
}

// wasted reports the body bytes a record uploaded in vain: the body went
// out and the final status was an error (>= 400).
func wasted(r *analyze.Record) int64 {
	if r.Final != nil && r.Final.Status >= 400 && r.BodyStartAt != nil {
		return r.BodyBytes
	}
	return 0
}

func (g *Group) add(r *analyze.Record) {
	g.Negotiations++
	g.Verdicts[string(r.Verdict)]++
	if r.Wait100Ms != nil {
		g.wait100 = append(g.wait100, *r.Wait100Ms)
	}
	if r.ClientWaitMs != nil {
		g.clientWait = append(g.clientWait, *r.ClientWaitMs)
	}
	if r.LostMs != nil {
		g.LostMs += *r.LostMs
	}
	g.WastedBytes += wasted(r)
}

func (g *Group) finish() {
	g.Wait100 = percentiles(g.wait100)
	g.ClientWait = percentiles(g.clientWait)
	g.LostMs = roundMs(g.LostMs)
}

// roundMs rounds a sum of ms to the µs the records carry, so that sums
// taken in another order print the same.
func roundMs(v float64) float64 { return math.Round(v*1000) / 1000 }

// Tally summarises records (negotiations; exchange records are only
// counted, with their flags). Hops are counted by the caller.
func Tally(recs []*analyze.Record) *Counts {
	c := &Counts{Type: "summary", Verdicts: map[string]int{}, Flags: map[string]int{},
		Servers: []*Group{}, Clients: []*Group{}, Timeouts: []*TimerFired{}}
	all := &Group{Verdicts: map[string]int{}}
	servers := map[string]*Group{}
	clients := map[string]*Group{}
	type timerKey struct {
		fam   string
		timer int
	}
	timers := map[timerKey]*TimerFired{}
	for _, r := range recs {
		for _, f := range r.Flags {
			c.Flags[string(f)]++
		}
		if r.Type != analyze.TypeNegotiation {
			c.Exchanges++
			continue
		}
		c.Negotiations++
		all.add(r)
		sk := serverKey(r)
		sg := servers[sk]
		if sg == nil {
			sg = &Group{Key: sk, Endpoint: r.Conn.Server, Host: r.Request.Host, Verdicts: map[string]int{}}
			servers[sk] = sg
		}
		sg.add(r)
		fam := ClientFamily(r.Request.UserAgent)
		cg := clients[fam]
		if cg == nil {
			cg = &Group{Key: fam, Verdicts: map[string]int{}}
			clients[fam] = cg
		}
		cg.add(r)
		if r.Verdict == analyze.TimedOut {
			timer := 0
			if r.TimeoutGuess != nil {
				timer = *r.TimeoutGuess
			}
			k := timerKey{fam, timer}
			tf := timers[k]
			if tf == nil {
				tf = &TimerFired{Client: fam, TimerMs: timer, UserAgents: []string{}, userAgentOK: map[string]bool{}}
				timers[k] = tf
			}
			tf.Count++
			if r.ClientWaitMs != nil {
				tf.waits = append(tf.waits, *r.ClientWaitMs)
			}
			if ua := r.Request.UserAgent; !tf.userAgentOK[ua] {
				tf.userAgentOK[ua] = true
				tf.UserAgents = append(tf.UserAgents, ua)
			}
		}
	}
	all.finish()
	c.Wait100, c.ClientWait = all.Wait100, all.ClientWait
	c.LostMs, c.WastedBytes = all.LostMs, all.WastedBytes
	c.Verdicts = all.Verdicts
	for _, g := range servers {
		g.finish()
		c.Servers = append(c.Servers, g)
	}
	// Most negotiations first, then by name: stable whatever the input order.
	byCount := func(a, b *Group) int {
		if d := cmp.Compare(b.Negotiations, a.Negotiations); d != 0 {
			return d
		}
		return strings.Compare(a.Key, b.Key)
	}
	slices.SortFunc(c.Servers, byCount)
	for _, fam := range Families {
		if g := clients[fam]; g != nil {
			g.finish()
			c.Clients = append(c.Clients, g)
		}
	}
	for _, tf := range timers {
		slices.Sort(tf.UserAgents)
		if len(tf.waits) > 0 {
			p := percentiles(tf.waits)
			tf.MedianWait = p.P50
		}
		c.Timeouts = append(c.Timeouts, tf)
	}
	slices.SortFunc(c.Timeouts, func(a, b *TimerFired) int {
		if d := cmp.Compare(b.Count, a.Count); d != 0 {
			return d
		}
		if d := strings.Compare(a.Client, b.Client); d != 0 {
			return d
		}
		return cmp.Compare(a.TimerMs, b.TimerMs)
	})
	return c
}
