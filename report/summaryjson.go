package report

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
)

// AppendCountsJSON appends the summary c as encoding/json encodes it with
// SetEscapeHTML(false) (without the newline). The summary is one line,
// but the first value of a type that encoding/json meets costs it the
// walk of the type's fields: a millisecond, at the end of a run, when
// nothing else is left to do. TestAppendCountsJSON compares the two.
func AppendCountsJSON(b []byte, c *Counts) ([]byte, error) {
	if !countsEncodable(c) {
		out, err := json.Marshal(c) // let encoding/json say what it refuses
		return append(b, out...), err
	}
	b = append(b, `{"type":`...)
	b = appendJSONString(b, c.Type)
	b = append(b, `,"negotiations":`...)
	b = strconv.AppendInt(b, int64(c.Negotiations), 10)
	if c.Exchanges != 0 {
		b = append(b, `,"exchanges":`...)
		b = strconv.AppendInt(b, int64(c.Exchanges), 10)
	}
	if c.Hops != 0 {
		b = append(b, `,"hops":`...)
		b = strconv.AppendInt(b, int64(c.Hops), 10)
	}
	b = append(b, `,"verdicts":`...)
	b = appendCountMap(b, c.Verdicts)
	b = append(b, `,"flags":`...)
	b = appendCountMap(b, c.Flags)
	b = append(b, `,"lost_ms":`...)
	b = appendJSONFloatPtr(b, &c.LostMs)
	b = append(b, `,"wasted_bytes":`...)
	b = strconv.AppendInt(b, c.WastedBytes, 10)
	b = append(b, `,"wait_100_ms":`...)
	b = appendPercentiles(b, &c.Wait100)
	b = append(b, `,"client_wait_ms":`...)
	b = appendPercentiles(b, &c.ClientWait)
	b = append(b, `,"servers":`...)
	b = appendGroups(b, c.Servers)
	b = append(b, `,"clients":`...)
	b = appendGroups(b, c.Clients)
	b = append(b, `,"timeouts":`...)
	if c.Timeouts == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range c.Timeouts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendTimerFired(b, t)
		}
		b = append(b, ']')
	}
	if len(c.Input) > 0 {
		b = append(b, `,"input":`...)
		b = appendCountMap(b, c.Input)
	}
	if len(c.Warnings) > 0 {
		b = append(b, `,"warnings":`...)
		b = appendStrings(b, c.Warnings)
	}
	return append(b, '}'), nil
}

func appendGroups(b []byte, gs []*Group) []byte {
	if gs == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, g := range gs {
		if i > 0 {
			b = append(b, ',')
		}
		if g == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, `{"key":`...)
		b = appendJSONString(b, g.Key)
		b = appendOmitEmpty(b, `,"endpoint":`, g.Endpoint)
		b = appendOmitEmpty(b, `,"host":`, g.Host)
		b = append(b, `,"negotiations":`...)
		b = strconv.AppendInt(b, int64(g.Negotiations), 10)
		b = append(b, `,"verdicts":`...)
		b = appendCountMap(b, g.Verdicts)
		b = append(b, `,"wait_100_ms":`...)
		b = appendPercentiles(b, &g.Wait100)
		b = append(b, `,"client_wait_ms":`...)
		b = appendPercentiles(b, &g.ClientWait)
		b = append(b, `,"lost_ms":`...)
		b = appendJSONFloatPtr(b, &g.LostMs)
		b = append(b, `,"wasted_bytes":`...)
		b = strconv.AppendInt(b, g.WastedBytes, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendTimerFired(b []byte, t *TimerFired) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	b = append(b, `{"client":`...)
	b = appendJSONString(b, t.Client)
	b = append(b, `,"timer_ms":`...)
	b = strconv.AppendInt(b, int64(t.TimerMs), 10)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(t.Count), 10)
	b = append(b, `,"user_agents":`...)
	b = appendStrings(b, t.UserAgents)
	b = append(b, `,"median_wait_ms":`...)
	b = appendJSONFloatPtr(b, t.MedianWait)
	return append(b, '}')
}

func appendPercentiles(b []byte, p *Percentiles) []byte {
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, int64(p.N), 10)
	b = append(b, `,"p50":`...)
	b = appendJSONFloatPtr(b, p.P50)
	b = append(b, `,"p90":`...)
	b = appendJSONFloatPtr(b, p.P90)
	b = append(b, `,"p99":`...)
	b = appendJSONFloatPtr(b, p.P99)
	return append(b, '}')
}

// appendCountMap writes m as encoding/json does: null when nil, keys
// sorted.
func appendCountMap[V int | uint64](b []byte, m map[string]V) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		if v := m[k]; v < 0 {
			b = strconv.AppendInt(b, int64(v), 10)
		} else {
			b = strconv.AppendUint(b, uint64(v), 10)
		}
	}
	return append(b, '}')
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// countsEncodable reports whether every float of c is one encoding/json
// writes without an error.
func countsEncodable(c *Counts) bool {
	ok := func(f *float64) bool { return f == nil || !math.IsNaN(*f) && !math.IsInf(*f, 0) }
	pct := func(p *Percentiles) bool { return ok(p.P50) && ok(p.P90) && ok(p.P99) }
	if !ok(&c.LostMs) || !pct(&c.Wait100) || !pct(&c.ClientWait) {
		return false
	}
	for _, gs := range [][]*Group{c.Servers, c.Clients} {
		for _, g := range gs {
			if g != nil && (!ok(&g.LostMs) || !pct(&g.Wait100) || !pct(&g.ClientWait)) {
				return false
			}
		}
	}
	for _, t := range c.Timeouts {
		if t != nil && !ok(t.MedianWait) {
			return false
		}
	}
	return true
}
