package report

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// LadderAll selects, for WriteLadders, every negotiation that is flagged
// or was not plainly continued.
const LadderAll = ""

// Ladder column widths: a lane grows with its longest label, within bounds.
const (
	minLane = 36
	maxLane = 64
)

// NeedsLadder reports whether r is drawn by --ladder without an id: a
// negotiation with a flag or a verdict other than continued.
func NeedsLadder(r *analyze.Record) bool {
	return r.Type == analyze.TypeNegotiation && (len(r.Flags) > 0 || r.Verdict != analyze.Continued)
}

// LadderSet is what ladders are drawn from: the records to draw and
// every record known (to find the other leg of a hop, which may be an
// exchange that is not printed), and the hops.
type LadderSet struct {
	Records []*analyze.Record
	All     []*analyze.Record // lookup by id; nil means Records
	Hops    []*analyze.Hop
}

// WriteLadders draws one ladder per selected record: the one with id, or
// with id == LadderAll every record NeedsLadder selects. A record that is
// the upstream leg of a hop whose downstream leg is drawn is drawn inside
// that ladder only. With markdown, each ladder is fenced as a code block.
// It returns an error if id names no record.
func WriteLadders(w io.Writer, set LadderSet, id string, markdown bool) error {
	byID := map[string]*analyze.Record{}
	all := set.All
	if all == nil {
		all = set.Records
	}
	for _, r := range all {
		byID[r.ID] = r
	}
	shown := map[string]bool{}
	for _, r := range set.Records {
		byID[r.ID] = r
		shown[r.ID] = true
	}
	lw := NewLadderWriter(w, set.Hops, func(id string) *analyze.Record { return byID[id] },
		func(r *analyze.Record) bool { return shown[r.ID] }, id, markdown)
	if id != LadderAll {
		if r := byID[id]; r != nil {
			if err := lw.See(r); err != nil {
				return err
			}
		}
	} else {
		for _, r := range set.Records {
			if err := lw.See(r); err != nil {
				return err
			}
		}
	}
	return lw.Close()
}

// LadderWriter draws the ladders of WriteLadders from records given one
// at a time in report order, holding none of them: a capture's records
// need not all be in memory to draw their ladders.
type LadderWriter struct {
	w        io.Writer
	markdown bool
	id       string
	down, up map[string]*analyze.Hop
	lookup   func(id string) *analyze.Record
	selected func(r *analyze.Record) bool
	n        int
}

// NewLadderWriter draws on w the ladder of the record with id, or with id
// == LadderAll of every selected record NeedsLadder picks. lookup finds
// any record by id (at least every leg of hops); selected says whether a
// record is among those drawn from (the filters' choice), which decides
// whether a hop's upstream leg is drawn inside its downstream's ladder.
func NewLadderWriter(w io.Writer, hops []*analyze.Hop, lookup func(id string) *analyze.Record, selected func(r *analyze.Record) bool, id string, markdown bool) *LadderWriter {
	lw := &LadderWriter{w: w, markdown: markdown, id: id, lookup: lookup, selected: selected,
		down: map[string]*analyze.Hop{}, up: map[string]*analyze.Hop{}}
	for _, h := range hops {
		lw.down[h.Downstream.ID] = h
		lw.up[h.Upstream.ID] = h
	}
	return lw
}

// See takes the next record in report order, selected or not, and draws
// its ladder if it gets one.
func (lw *LadderWriter) See(r *analyze.Record) error {
	if lw.id != LadderAll {
		if r.ID != lw.id || lw.n > 0 {
			return nil
		}
		// Asked for an upstream leg: draw its whole hop.
		if h := lw.up[r.ID]; h != nil {
			if d := lw.lookup(h.Downstream.ID); d != nil {
				r = d
			}
		}
		return lw.draw(r)
	}
	if !lw.selected(r) || !NeedsLadder(r) {
		return nil
	}
	if h := lw.up[r.ID]; h != nil {
		if d := lw.lookup(h.Downstream.ID); d != nil && lw.selected(d) && NeedsLadder(d) {
			return nil // drawn inside its hop's ladder
		}
	}
	return lw.draw(r)
}

func (lw *LadderWriter) draw(r *analyze.Record) error {
	if lw.n > 0 {
		fmt.Fprintln(lw.w)
	}
	lw.n++
	var upRec *analyze.Record
	h := lw.down[r.ID]
	if h != nil {
		upRec = lw.lookup(h.Upstream.ID)
	}
	if lw.markdown {
		fmt.Fprintln(lw.w, "```text")
	}
	if err := writeLadder(lw.w, r, h, upRec); err != nil {
		return err
	}
	if lw.markdown {
		fmt.Fprintln(lw.w, "```")
	}
	return nil
}

// Close ends the ladders: it says so when none was drawn, and returns an
// error when the record asked for by id was not seen.
func (lw *LadderWriter) Close() error {
	if lw.n > 0 {
		return nil
	}
	if lw.id != LadderAll {
		return fmt.Errorf("no record with id %q", lw.id)
	}
	_, err := fmt.Fprintln(lw.w, "No flagged or non-continued negotiation to draw.")
	return err
}

// event is one line of a ladder.
type event struct {
	at       *time.Time
	from, to int // lanes; from == to means a note inside lane from..from+1
	label    string
	note     string
	seq      int
}

// legEvents lists the messages of one record between lanes c (client
// side) and s (server side).
func legEvents(r *analyze.Record, c, s int, seq *int) []event {
	var ev []event
	add := func(at *time.Time, from, to int, label, note string) {
		*seq++
		ev = append(ev, event{at: at, from: from, to: to, label: label, note: note, seq: *seq})
	}
	req := r.Request
	hdr := []string{"request headers"}
	if req.Expect != "" {
		hdr = append(hdr, "Expect: "+Escape(req.Expect))
	} else {
		hdr = append(hdr, "no Expect")
	}
	switch {
	case req.Chunked:
		hdr = append(hdr, "chunked")
	case req.ContentLength != nil:
		hdr = append(hdr, fmt.Sprintf("Content-Length: %d", *req.ContentLength))
	}
	at := r.HeadersEndAt
	add(&at, c, s, fmt.Sprintf("%s %s %s", Escape(req.Method), Escape(req.Target), Escape(req.Version)), strings.Join(hdr, "; "))
	for i := range r.Interim {
		in := r.Interim[i]
		note := "interim"
		if in.Headers > 0 {
			note += fmt.Sprintf(", %d header field(s)", in.Headers)
		}
		add(&in.At, s, c, strings.TrimSpace(fmt.Sprintf("%d %s", in.Status, Escape(in.Reason))), note)
	}
	if r.BodyStartAt != nil {
		if r.ClientWaitMs != nil {
			wait := fmt.Sprintf("client waited %s", fmtMs(r.ClientWaitMs))
			if r.TimeoutGuess != nil {
				wait += fmt.Sprintf(" (timer ~%d ms fired)", *r.TimeoutGuess)
			}
			add(r.BodyStartAt, c, c, wait, "")
		}
		complete := "incomplete"
		if r.BodyComplete {
			complete = "complete"
		}
		if r.BodyEndAt == nil || r.BodyEndAt.Equal(*r.BodyStartAt) {
			add(r.BodyStartAt, c, s, fmt.Sprintf("body %d bytes", r.BodyBytes), "first and last body byte, "+complete)
		} else {
			add(r.BodyStartAt, c, s, "body ...", "first body byte")
			add(r.BodyEndAt, c, s, fmt.Sprintf("... body end, %d bytes", r.BodyBytes), "last body byte, "+complete)
		}
	}
	if f := r.Final; f != nil {
		var note []string
		note = append(note, "final")
		if f.Server != "" {
			note = append(note, "Server: "+Escape(f.Server))
		}
		if f.Via != "" {
			note = append(note, "Via: "+Escape(f.Via))
		}
		if f.Connection != "" {
			note = append(note, "Connection: "+Escape(f.Connection))
		}
		fat := f.At
		add(&fat, s, c, strings.TrimSpace(fmt.Sprintf("%d %s", f.Status, Escape(f.Reason))), strings.Join(note, "; "))
	} else if r.BodyStartAt == nil && r.LostMs != nil {
		add(nil, c, c, fmt.Sprintf("client waited %s in vain", fmtMs(r.LostMs)), "")
	}
	if r.ConnEnd != "" {
		add(nil, c, c, "connection ended: "+Escape(r.ConnEnd), "")
	}
	return ev
}

// writeLadder draws the negotiation r; with a hop, the upstream leg too
// (when its record is known), in three columns client | proxy | server.
func writeLadder(w io.Writer, r *analyze.Record, h *analyze.Hop, upRec *analyze.Record) error {
	t0 := r.HeadersEndAt
	cols := []string{"client " + r.Conn.Client, "server " + r.Conn.Server}
	var seq int
	var ev []event
	if h != nil {
		proxy := h.Intermediary
		if proxy == "" {
			proxy = r.Conn.Server
		}
		server := h.Upstream.Server
		if upRec != nil {
			server = upRec.Conn.Server
		}
		cols = []string{"client " + r.Conn.Client, "proxy " + proxy, "server " + server}
		ev = legEvents(r, 0, 1, &seq)
		if upRec != nil {
			ev = append(ev, legEvents(upRec, 1, 2, &seq)...)
		}
	} else {
		ev = legEvents(r, 0, 1, &seq)
	}
	// Timed events in time order (stable: same-time events keep their
	// order); untimed ones (ends) last.
	slices.SortStableFunc(ev, func(a, b event) int {
		switch {
		case a.at == nil && b.at == nil:
			return a.seq - b.seq
		case a.at == nil:
			return 1
		case b.at == nil:
			return -1
		}
		if c := a.at.Compare(*b.at); c != 0 {
			return c
		}
		return a.seq - b.seq
	})

	// Heading.
	fmt.Fprintf(w, "negotiation %s: %s %s", Escape(r.ID), Escape(r.Request.Method), Escape(r.Request.Target))
	if r.Request.Host != "" {
		fmt.Fprintf(w, "  Host: %s", Escape(r.Request.Host))
	}
	if r.Request.UserAgent != "" {
		fmt.Fprintf(w, "  User-Agent: %s", Escape(r.Request.UserAgent))
	}
	fmt.Fprintf(w, "\ntimes in ms from the end of the request headers, %s\n\n", t0.UTC().Format(time.RFC3339Nano))

	lane := minLane
	for _, e := range ev {
		if n := len([]rune(e.label)) + 10; n > lane {
			lane = n
		}
	}
	// Names sit left (first), centred (middle) and right (last) of their
	// bars: two neighbours must fit in one lane.
	for i := 1; i < len(cols); i++ {
		if n := len(cols[i-1]) + len(cols[i]) + 3; n > lane {
			lane = n
		}
	}
	lane = min(lane, maxLane)
	width := (len(cols)-1)*(lane+1) + 1
	const timeW = 11
	pad := strings.Repeat(" ", timeW+2)

	// Column names above their bars.
	names := []rune(strings.Repeat(" ", width+lane))
	for i, c := range cols {
		x := i * (lane + 1)
		if i == len(cols)-1 {
			x = max(0, x-len(c)+1)
		} else if i > 0 {
			x = max(0, x-len(c)/2)
		}
		copy(names[x:], []rune(c))
	}
	fmt.Fprintf(w, "%s%s\n", pad, strings.TrimRight(string(names), " "))
	bars := func() []rune {
		b := []rune(strings.Repeat(" ", width))
		for i := range cols {
			b[i*(lane+1)] = '|'
		}
		return b
	}
	fmt.Fprintf(w, "%s%s\n", pad, string(bars()))
	for _, e := range ev {
		b := bars()
		off := ""
		if e.at != nil {
			off = fmt.Sprintf("%*.3f", timeW, float64(e.at.Sub(t0))/float64(time.Millisecond))
		}
		if e.from == e.to {
			// A note inside the lane right of column from.
			x := e.from*(lane+1) + 3
			label := fitRunes(e.label, lane-4)
			copy(b[x:], []rune(label))
		} else {
			a, z := min(e.from, e.to), max(e.from, e.to)
			xa, xz := a*(lane+1), z*(lane+1)
			for x := xa + 1; x < xz; x++ {
				b[x] = '-'
			}
			label := []rune(" " + fitRunes(e.label, xz-xa-9) + " ")
			if e.to > e.from {
				b[xz-1] = '>'
				copy(b[xa+4:], label)
			} else {
				b[xa+1] = '<'
				copy(b[xz-4-len(label):], label)
			}
		}
		line := fmt.Sprintf("%*s  %s", timeW, off, string(b))
		if e.note != "" {
			line += "  " + e.note
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	fmt.Fprintf(w, "%s%s\n\n", pad, string(bars()))

	// Footer: verdict, flags, timings, links, diagnosis.
	fmt.Fprintf(w, "verdict: %s\n", r.Verdict)
	if len(r.Flags) > 0 {
		fmt.Fprintln(w, "flags:")
		for _, f := range r.Flags {
			fmt.Fprintf(w, "  %s (%s)\n", f, analyze.RuleOf(f))
		}
	}
	var t []string
	t = append(t, "100 wait "+fmtMs(r.Wait100Ms), "client wait "+fmtMs(r.ClientWaitMs), "lost "+fmtMs(r.LostMs))
	if r.TimeoutGuess != nil {
		t = append(t, fmt.Sprintf("timer guess %d ms", *r.TimeoutGuess))
	}
	if r.RTTMs != nil {
		t = append(t, "rtt "+fmtMs(r.RTTMs))
	}
	t = append(t, fmt.Sprintf("body %d bytes", r.BodyBytes))
	fmt.Fprintf(w, "timings: %s\n", strings.Join(t, ", "))
	if r.AfterEarlyFinal != "" {
		fmt.Fprintf(w, "after the early final status the client sent: %s\n", Escape(r.AfterEarlyFinal))
	}
	if r.RetryOf != nil {
		fmt.Fprintf(w, "retry of: %s\n", Escape(*r.RetryOf))
	}
	if r.RetriedBy != nil {
		fmt.Fprintf(w, "retried by: %s\n", Escape(*r.RetriedBy))
	}
	if h != nil {
		changes := "none"
		if len(h.Changes) > 0 {
			changes = strings.Join(h.Changes, ", ")
		}
		fmt.Fprintf(w, "hop via %s to %s (upstream %s): %s\n", h.Intermediary, h.Upstream.Server, Escape(h.Upstream.ID), Escape(changes))
		if upRec == nil {
			fmt.Fprintf(w, "  (the upstream record %s is not in the input: run read with --all to draw its leg)\n", Escape(h.Upstream.ID))
		} else if len(upRec.Flags) > 0 {
			var fl []string
			for _, f := range upRec.Flags {
				fl = append(fl, string(f))
			}
			fmt.Fprintf(w, "upstream verdict %s, flags: %s\n", upRec.Verdict, strings.Join(fl, ", "))
		}
	}
	if r.Diagnosis != "" {
		fmt.Fprintf(w, "diagnosis: %s\n", Escape(r.Diagnosis))
	}
	return nil
}

// fitRunes shortens s (already escaped) to at most n runes.
func fitRunes(s string, n int) string {
	if n < 2 {
		n = 2
	}
	return Truncate(s, n)
}
