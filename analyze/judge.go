package analyze

import (
	"math"
	"strings"
	"time"
)

// Facts are what the capture showed about one request, measured from
// capture timestamps. Judge turns them into a verdict and flags; it is a
// pure function so the rules can be tested on hand-built facts.
type Facts struct {
	Version       string
	Expect        string // raw Expect value, "" when absent
	ContentLength int64  // -1 when absent
	Chunked       bool
	HeadersEnd    time.Time
	Interim       []Interim
	BodyStart     time.Time // zero when no body byte was seen
	BodyEnd       time.Time
	BodyComplete  bool
	Final         *Final
	// ServerEnd is when the server closed (FIN) or reset; zero if it did not.
	ServerEnd time.Time
	// End is when the connection or the capture ended, for lost time.
	End time.Time
	// FirstGap is the time of the first capture gap (either direction)
	// after the headers ended and while the exchange was open; zero if none.
	FirstGap time.Time
	// Misframed: after an early final without close, the server's next
	// answer shows it framed the client's next bytes otherwise than the
	// client sent them (RFC 9112 9.3 desync).
	Misframed bool
}

// Judgement is the verdict, flags and timings derived from Facts.
type Judgement struct {
	Verdict      Verdict
	Flags        []Flag
	Wait100Ms    *float64
	ClientWaitMs *float64
	LostMs       *float64
	TimeoutGuess *int
}

// KnownTimers are expect-continue timers of common clients, in ms:
// .NET Framework 350, curl and Go 1000, 2000, Java 2500, 5000.
var KnownTimers = []int{350, 1000, 2000, 2500, 5000}

func ms(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Microsecond)) / 1000
	return &v
}

// expectTokens splits an Expect value into lower-cased expectations.
func expectTokens(v string) (hasContinue, hasOther bool) {
	for part := range strings.SplitSeq(v, ",") {
		p := strings.ToLower(strings.TrimSpace(part))
		if i := strings.IndexByte(p, ';'); i >= 0 {
			p = strings.TrimSpace(p[:i])
		}
		switch p {
		case "":
		case "100-continue":
			hasContinue = true
		default:
			hasOther = true
		}
	}
	return
}

// first100 returns the time of the first 100 and how many 100s came.
func first100(in []Interim) (time.Time, int) {
	var t time.Time
	n := 0
	for _, i := range in {
		if i.Status == 100 {
			if n == 0 {
				t = i.At
			}
			n++
		}
	}
	return t, n
}

// Judge derives the verdict and the flags that follow from the facts
// alone; retry flags and intermediary flags are added by the callers
// that see other connections.
func Judge(f *Facts, noWaitUnder time.Duration) Judgement {
	var j Judgement
	t100, n100 := first100(f.Interim)
	bf := f.BodyStart
	var tf time.Time
	if f.Final != nil {
		tf = f.Final.At
	}
	has := func(t time.Time) bool { return !t.IsZero() }

	switch {
	case has(bf) && (!has(t100) || bf.Before(t100)) && (!has(tf) || bf.Before(tf)):
		if bf.Sub(f.HeadersEnd) <= noWaitUnder {
			j.Verdict = NoWait
		} else {
			j.Verdict = TimedOut
		}
	case has(t100) && (!has(tf) || !t100.After(tf)):
		j.Verdict = Continued
	case f.Final != nil && f.Final.Status == 417:
		j.Verdict = Rejected
	case f.Final != nil:
		j.Verdict = FinalBeforeBody
	default:
		j.Verdict = Unanswered
	}
	// A capture gap before the event that decided it leaves the outcome open.
	if has(f.FirstGap) {
		decided := f.End
		for _, t := range []time.Time{bf, t100, tf} {
			if has(t) && t.Before(decided) {
				decided = t
			}
		}
		if !f.FirstGap.After(decided) {
			j.Verdict = Incomplete
		}
	}

	add := func(fl Flag) { j.Flags = append(j.Flags, fl) }
	hasContinue, hasOther := expectTokens(f.Expect)
	final := f.Final
	if hasOther {
		add(FlagUnknownExpectation)
	}
	if hasContinue && !f.Chunked && f.ContentLength <= 0 {
		add(FlagExpectWithoutBody)
	}
	if f.Version == "HTTP/1.0" && f.Expect != "" {
		add(FlagExpectOnHTTP10)
	}
	if f.Version == "HTTP/1.0" && len(f.Interim) > 0 {
		add(Flag1xxToHTTP10)
	}
	if final != nil && final.Status == 417 && has(bf) && bf.After(tf) {
		add(FlagBodyAfter417)
	}
	if final != nil && final.Status >= 400 && final.Status != 417 && has(f.BodyEnd) && f.BodyEnd.After(tf) {
		add(FlagBodyAfterFinal)
	}
	if j.Verdict == TimedOut && has(t100) && t100.After(bf) {
		add(FlagLate100)
	}
	if has(t100) {
		after := j.Verdict != TimedOut && has(bf) && t100.After(bf)
		for _, i := range f.Interim {
			if i.Status == 100 && has(tf) && i.At.After(tf) {
				after = true
			}
		}
		if after {
			add(Flag100AfterBody)
		}
	}
	if n100 > 1 {
		add(FlagDuplicate100)
	}
	for _, i := range f.Interim {
		if i.Status == 100 && i.Headers > 0 {
			add(Flag100WithHeaders)
			break
		}
	}
	if has(t100) && has(bf) && final != nil && final.Status >= 400 && final.Status != 417 && tf.After(t100) {
		add(FlagErrorAfter100)
	}
	if f.Misframed {
		add(FlagUnreadBody)
	}
	if has(bf) && final == nil {
		add(FlagNoFinal)
	}
	if has(bf) && !f.BodyComplete && has(f.ServerEnd) && !f.ServerEnd.Before(bf) {
		add(FlagClosedMidBody)
	}

	if has(t100) {
		j.Wait100Ms = ms(t100.Sub(f.HeadersEnd))
	}
	if has(bf) {
		j.ClientWaitMs = ms(bf.Sub(f.HeadersEnd))
	}
	switch j.Verdict {
	case TimedOut:
		j.LostMs = j.ClientWaitMs
		j.TimeoutGuess = guessTimer(bf.Sub(f.HeadersEnd))
	case Unanswered:
		if has(f.End) && f.End.After(f.HeadersEnd) {
			j.LostMs = ms(f.End.Sub(f.HeadersEnd))
		}
	}
	return j
}

// guessTimer returns the known client timer closest to the wait, when
// the wait is within a quarter of it (a slower wait is no timer's).
func guessTimer(wait time.Duration) *int {
	w := float64(wait) / float64(time.Millisecond)
	best, bestDiff := 0, math.MaxFloat64
	for _, t := range KnownTimers {
		if d := math.Abs(w - float64(t)); d < bestDiff {
			best, bestDiff = t, d
		}
	}
	if bestDiff > 0.25*float64(best) {
		return nil
	}
	return &best
}
