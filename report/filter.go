package report

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// Filter selects records before rendering and summary. Each non-empty
// list must match (any of its values); empty lists and zero times match
// everything.
type Filter struct {
	// Verdicts and Flags are matched exactly.
	Verdicts []string
	Flags    []string
	// Servers match the server endpoint: "IP:PORT", "IP" or ":PORT".
	Servers []string
	// Clients match the client: a User-Agent family (curl, Go-http-client,
	// .NET, Java, python, aws-sdk, node, browser, other; case-insensitive),
	// the client endpoint ("IP:PORT" or "IP"), or, failing those, a
	// case-insensitive substring of the User-Agent.
	Clients []string
	// Hosts match the Host header, case-insensitive, with or without its port.
	Hosts []string
	// Since and Until bound the time the request headers ended:
	// Since <= t < Until.
	Since, Until time.Time
}

// Empty reports whether f selects everything.
func (f *Filter) Empty() bool {
	return len(f.Verdicts) == 0 && len(f.Flags) == 0 && len(f.Servers) == 0 &&
		len(f.Clients) == 0 && len(f.Hosts) == 0 && f.Since.IsZero() && f.Until.IsZero()
}

// Validate rejects verdicts and flags that do not exist, so that a typo
// does not silently select nothing.
func (f *Filter) Validate() error {
	for _, v := range f.Verdicts {
		if !knownVerdict(v) {
			return fmt.Errorf("unknown verdict %q", v)
		}
	}
	for _, fl := range f.Flags {
		if analyze.RuleOf(analyze.Flag(fl)) == "" {
			return fmt.Errorf("unknown flag %q", fl)
		}
	}
	return nil
}

// Match reports whether r passes the filter.
func (f *Filter) Match(r *analyze.Record) bool {
	if len(f.Verdicts) > 0 && !contains(f.Verdicts, string(r.Verdict)) {
		return false
	}
	if len(f.Flags) > 0 {
		ok := false
		for _, fl := range r.Flags {
			if contains(f.Flags, string(fl)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(f.Servers) > 0 && !anyMatch(f.Servers, func(s string) bool { return endpointMatch(s, r.Conn.Server) }) {
		return false
	}
	if len(f.Clients) > 0 && !anyMatch(f.Clients, func(s string) bool { return clientMatch(s, r) }) {
		return false
	}
	if len(f.Hosts) > 0 && !anyMatch(f.Hosts, func(s string) bool { return hostMatch(s, r.Request.Host) }) {
		return false
	}
	if !f.Since.IsZero() && r.HeadersEndAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.HeadersEndAt.Before(f.Until) {
		return false
	}
	return true
}

// Apply returns the output restricted to the records f selects and the
// hops either of whose legs was selected. The summary is recomputed.
func (f *Filter) Apply(out *Output) *Output {
	n := &Output{Start: out.start(), Summary: out.Summary}
	kept := map[string]bool{}
	for _, r := range out.Records {
		if f.Match(r) {
			n.Records = append(n.Records, r)
			kept[r.ID] = true
		}
	}
	for _, h := range out.Hops {
		if kept[h.Downstream.ID] || kept[h.Upstream.ID] {
			n.Hops = append(n.Hops, h)
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func anyMatch(list []string, match func(string) bool) bool {
	for _, v := range list {
		if match(v) {
			return true
		}
	}
	return false
}

// endpointMatch matches "IP:PORT", "IP" (IPv6 with or without brackets)
// or ":PORT" against an endpoint in net.JoinHostPort form.
func endpointMatch(want, ep string) bool {
	if strings.EqualFold(want, ep) {
		return true
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return false
	}
	if strings.HasPrefix(want, ":") && isNumber(want[1:]) {
		return want[1:] == port
	}
	return strings.EqualFold(strings.Trim(want, "[]"), host)
}

func clientMatch(want string, r *analyze.Record) bool {
	if strings.EqualFold(want, ClientFamily(r.Request.UserAgent)) {
		return true
	}
	if endpointMatch(want, r.Conn.Client) {
		return true
	}
	return want != "" && strings.Contains(strings.ToLower(r.Request.UserAgent), strings.ToLower(want))
}

func hostMatch(want, host string) bool {
	if strings.EqualFold(want, host) {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		return strings.EqualFold(strings.Trim(want, "[]"), h)
	}
	return false
}

// ParseTime reads a --since/--until value: an RFC 3339 time, or an offset
// (a Go duration such as 1.5s or 2m, or plain seconds such as 12.5 or
// +12.5, as the table's time column prints them) from start.
func ParseTime(s string, start time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	off := strings.TrimPrefix(s, "+")
	if d, err := time.ParseDuration(off); err == nil {
		return start.Add(d), nil
	}
	if isNumber(off) {
		if secs, err := strconv.ParseFloat(off, 64); err == nil {
			return start.Add(time.Duration(secs * float64(time.Second))), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor an offset (1.5s, 2m, +12.5)", s)
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	dot := false
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
		case c == '.' && !dot:
			dot = true
		case c == '-' && i == 0:
		default:
			return false
		}
	}
	return true
}
