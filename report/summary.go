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
	if len(sorted) == 0 {
		return 0, false
	}
	return sorted[rankIndex(len(sorted), p)], true
}

// rankIndex is the 0-based index of the nearest-rank p-th percentile of
// n > 0 sorted values.
func rankIndex(n int, p float64) int {
	return min(max(int(math.Ceil(p/100*float64(n))), 1), n) - 1
}

// percentiles computes P50, P90 and P99 of vals (reordered in place).
// Each is found by selection, not by sorting the whole set: the three
// ranks take a few passes over the values where a sort of a few hundred
// took most of the summary's time, at the end of a run.
func percentiles(vals []float64) Percentiles {
	p := Percentiles{N: len(vals)}
	lo := 0 // vals[:lo] hold nothing greater than vals[lo]
	at := func(q float64) *float64 {
		if len(vals) == 0 {
			return nil
		}
		r := rankIndex(len(vals), q)
		selectRank(vals[lo:], r-lo)
		lo = r
		v := vals[r]
		return &v
	}
	p.P50, p.P90, p.P99 = at(50), at(90), at(99)
	return p
}

// selectRank reorders v (no NaNs) so that v[k] holds what sorting would
// put there, nothing greater before it and nothing smaller after it.
func selectRank(v []float64, k int) {
	lo, hi := 0, len(v)-1
	for hi-lo > 12 {
		mid := lo + (hi-lo)/2
		if v[mid] < v[lo] {
			v[mid], v[lo] = v[lo], v[mid]
		}
		if v[hi] < v[lo] {
			v[hi], v[lo] = v[lo], v[hi]
		}
		if v[hi] < v[mid] {
			v[hi], v[mid] = v[mid], v[hi]
		}
		pivot := v[mid]
		i, j := lo, hi
		for i <= j {
			for v[i] < pivot {
				i++
			}
			for v[j] > pivot {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		// v[lo:j+1] <= pivot <= v[i:hi+1], and what lies between equals it.
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return
		}
	}
	for a := lo + 1; a <= hi; a++ {
		for b := a; b > lo && v[b] < v[b-1]; b-- {
			v[b], v[b-1] = v[b-1], v[b]
		}
	}
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
	if r.LostMs != nil {
		g.LostMs += *r.LostMs
	}
	g.WastedBytes += wasted(r)
}

func (g *Group) finish(wait100, clientWait []float64) {
	g.Wait100 = percentiles(wait100)
	g.ClientWait = percentiles(clientWait)
	g.LostMs = roundMs(g.LostMs)
}

// roundMs rounds a sum of ms to the µs the records carry, so that sums
// taken in another order print the same.
func roundMs(v float64) float64 { return math.Round(v*1000) / 1000 }

// Tally summarises records (negotiations; exchange records are only
// counted, with their flags). Hops are counted by the caller.
func Tally(recs []*analyze.Record) *Counts {
	t := NewTallier()
	for _, r := range recs {
		t.Add(r)
	}
	return t.Counts()
}

// tallyEntry is what a Tallier keeps of one negotiation for the
// percentiles: its waits (NaN when absent) and its server and client
// groups.
type tallyEntry struct {
	wait100, clientWait float64
	server              uint32
	client              uint8
}

// Entries are stored in chunks of firstTallyChunk, twice that, and so on
// up to tallyChunk: growing never copies, so a million negotiations take
// 24 MB, not twice that, and a few hundred do not zero the 384 KiB of a
// full chunk (a tenth of a millisecond at the end of a run, when nothing
// else is left to do).
const (
	firstTallyChunk = 1 << 8
	tallyChunk      = 1 << 14
)

// Tallier computes the summary of records added one at a time, in the
// order a report lists them, without keeping the records: per
// negotiation it keeps 24 bytes (two waits and two group indexes) for the
// percentiles, plus the client wait of each timed-out negotiation.
// Counts returns the same summary as Tally over the same records in the
// same order.
type Tallier struct {
	c        *Counts
	all      *Group
	servers  map[serverID]uint32
	groups   []*Group // server groups by index
	clients  map[string]*Group
	famIndex map[string]uint8
	// family is ClientFamily by User-Agent, for the few a capture has.
	family  map[string]string
	timers  map[timerKey]*TimerFired
	entries [][]tallyEntry
}

// serverID is what serverKey names, without building the name for every
// record.
type serverID struct{ endpoint, host string }

type timerKey struct {
	fam   string
	timer int
}

// NewTallier returns an empty Tallier.
func NewTallier() *Tallier {
	t := &Tallier{
		c: &Counts{Type: "summary", Verdicts: map[string]int{}, Flags: map[string]int{},
			Servers: []*Group{}, Clients: []*Group{}, Timeouts: []*TimerFired{}},
		all:      &Group{Verdicts: map[string]int{}},
		servers:  map[serverID]uint32{},
		family:   map[string]string{},
		clients:  map[string]*Group{},
		famIndex: map[string]uint8{},
		timers:   map[timerKey]*TimerFired{},
	}
	for i, f := range Families {
		t.famIndex[f] = uint8(i)
	}
	return t
}

// maxCachedFamilies bounds Tallier.family: a flood of distinct
// User-Agents is classified one by one instead.
const maxCachedFamilies = 4096

func nanIfNil(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

// Add counts one record.
func (t *Tallier) Add(r *analyze.Record) {
	c := t.c
	for _, f := range r.Flags {
		c.Flags[string(f)]++
	}
	if r.Type != analyze.TypeNegotiation {
		c.Exchanges++
		return
	}
	c.Negotiations++
	t.all.add(r)
	id := serverID{r.Conn.Server, r.Request.Host}
	si, ok := t.servers[id]
	if !ok {
		si = uint32(len(t.groups))
		t.servers[id] = si
		t.groups = append(t.groups, &Group{Key: serverKey(r), Endpoint: r.Conn.Server, Host: r.Request.Host, Verdicts: map[string]int{}})
	}
	t.groups[si].add(r)
	fam, ok := t.family[r.Request.UserAgent]
	if !ok {
		fam = ClientFamily(r.Request.UserAgent)
		if len(t.family) < maxCachedFamilies {
			t.family[r.Request.UserAgent] = fam
		}
	}
	cg := t.clients[fam]
	if cg == nil {
		cg = &Group{Key: fam, Verdicts: map[string]int{}}
		t.clients[fam] = cg
	}
	cg.add(r)
	if n := len(t.entries); n == 0 || len(t.entries[n-1]) == cap(t.entries[n-1]) {
		size := firstTallyChunk
		if n > 0 {
			size = min(2*cap(t.entries[n-1]), tallyChunk)
		}
		t.entries = append(t.entries, make([]tallyEntry, 0, size))
	}
	last := &t.entries[len(t.entries)-1]
	*last = append(*last, tallyEntry{nanIfNil(r.Wait100Ms), nanIfNil(r.ClientWaitMs), si, t.famIndex[fam]})
	if r.Verdict == analyze.TimedOut {
		timer := 0
		if r.TimeoutGuess != nil {
			timer = *r.TimeoutGuess
		}
		k := timerKey{fam, timer}
		tf := t.timers[k]
		if tf == nil {
			tf = &TimerFired{Client: fam, TimerMs: timer, UserAgents: []string{}, userAgentOK: map[string]bool{}}
			t.timers[k] = tf
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

// finishGroups sets the percentiles of every group in groups (by the
// index key returns) with one pass over the entries: the waits are laid
// out group after group in one array, then each group's part is sorted.
func (t *Tallier) finishGroups(groups []*Group, key func(e *tallyEntry) int) {
	n100 := make([]int, len(groups)+1)
	ncw := make([]int, len(groups)+1)
	for _, chunk := range t.entries {
		for i := range chunk {
			e := &chunk[i]
			g := key(e)
			if !math.IsNaN(e.wait100) {
				n100[g+1]++
			}
			if !math.IsNaN(e.clientWait) {
				ncw[g+1]++
			}
		}
	}
	for i := 1; i < len(n100); i++ {
		n100[i] += n100[i-1]
		ncw[i] += ncw[i-1]
	}
	w100 := make([]float64, n100[len(groups)])
	cw := make([]float64, ncw[len(groups)])
	p100 := slices.Clone(n100)
	pcw := slices.Clone(ncw)
	for _, chunk := range t.entries {
		for i := range chunk {
			e := &chunk[i]
			g := key(e)
			if !math.IsNaN(e.wait100) {
				w100[p100[g]] = e.wait100
				p100[g]++
			}
			if !math.IsNaN(e.clientWait) {
				cw[pcw[g]] = e.clientWait
				pcw[g]++
			}
		}
	}
	for g, grp := range groups {
		if grp == nil {
			continue
		}
		grp.finish(w100[n100[g]:n100[g+1]], cw[ncw[g]:ncw[g+1]])
	}
}

// Counts returns the summary of the records added. Call it once.
func (t *Tallier) Counts() *Counts {
	c := t.c
	all := t.all
	t.finishGroups([]*Group{all}, func(*tallyEntry) int { return 0 })
	c.Wait100, c.ClientWait = all.Wait100, all.ClientWait
	c.LostMs, c.WastedBytes = all.LostMs, all.WastedBytes
	c.Verdicts = all.Verdicts
	t.finishGroups(t.groups, func(e *tallyEntry) int { return int(e.server) })
	c.Servers = append(c.Servers, t.groups...)
	// Most negotiations first, then by name: stable whatever the input order.
	byCount := func(a, b *Group) int {
		if d := cmp.Compare(b.Negotiations, a.Negotiations); d != 0 {
			return d
		}
		return strings.Compare(a.Key, b.Key)
	}
	slices.SortFunc(c.Servers, byCount)
	fams := make([]*Group, len(Families))
	for i, fam := range Families {
		fams[i] = t.clients[fam]
	}
	t.finishGroups(fams, func(e *tallyEntry) int { return int(e.client) })
	for _, g := range fams {
		if g != nil {
			c.Clients = append(c.Clients, g)
		}
	}
	for _, tf := range t.timers {
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
	t.entries = nil
	return c
}
