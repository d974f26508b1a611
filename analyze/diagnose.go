package analyze

import "strconv"

// Diagnose names the likely cause of a negotiation that is not plainly
// continued, in a reviewer's words. It returns "" for a clean one.
func Diagnose(r *Record) string {
	if r.Type != TypeNegotiation {
		if r.HasFlag(FlagUnsolicited100) {
			return "the server sent 100 Continue to a request that did not ask for it"
		}
		return ""
	}
	// who answered, named for a sentence (who) and after "from" (name);
	// built only for the verdicts that say it (most negotiations do not).
	names := func() (who, name string) {
		who, name = "the server", "the server"
		if r.Final != nil && r.Final.Server != "" {
			who = "the server (" + r.Final.Server + ")"
			name = r.Final.Server
		}
		if r.Final != nil && r.Final.Via != "" {
			who = "an intermediary (Via: " + r.Final.Via + ")"
			name = who
		}
		return who, name
	}
	status := 0
	if r.Final != nil {
		status = r.Final.Status
	}
	switch r.Verdict {
	case Rejected:
		who, _ := names()
		s := who + " does not support the expectation: 417 before any body"
		if r.HasFlag(FlagBodyAfter417) {
			s += "; the client sent the body anyway"
		}
		switch {
		case r.HasFlag(FlagRetriedWithoutExpect):
			s += "; the client retried without Expect"
		case r.RetriedBy != nil:
			// Linked, yet no-retry-after-417: the retry asked again.
			s += "; the client retried with Expect again, where RFC 9110 10.1.1 says to repeat the request without it"
		case r.HasFlag(FlagNoRetryAfter417):
			s += "; the request did not come again without Expect"
		}
		if r.HasFlag(FlagUnreadBody) {
			s += "; the server then misread the client's next bytes (desync)"
		}
		return s
	case FinalBeforeBody:
		who, name := names()
		code := strconv.Itoa(status)
		switch {
		case status == 413:
			return "a policy refused the upload before the body (413 from " + name + ")"
		case status == 401 || status == 403 || status == 407:
			return "authentication or authorization refused the upload before the body (" + code + " from " + name + ")"
		case status >= 400:
			return who + " refused the request before the body (" + code + "); Expect saved the upload"
		default:
			return who + " answered " + code + " without asking for the body"
		}
	case TimedOut:
		s := "the client gave up waiting"
		if r.ClientWaitMs != nil {
			s = "the client gave up after " + strconv.FormatFloat(*r.ClientWaitMs/1000, 'f', 3, 64) + " s"
		}
		if r.TimeoutGuess != nil {
			s += " (" + timerName(*r.TimeoutGuess) + ")"
		}
		if r.HasFlag(FlagLate100) {
			return s + " because the 100 came late"
		}
		return s + " because no 100 came"
	case NoWait:
		if r.Request.Version == "HTTP/1.0" {
			return "HTTP/1.0 request: the client sent the body at once, as it must not wait"
		}
		return "the client sent the body at once without waiting for 100"
	case Unanswered:
		return "no response and no body before the connection or the capture ended"
	case Incomplete:
		return "capture gaps hide part of the negotiation"
	case Continued:
		switch {
		case r.HasFlag(FlagErrorAfter100):
			return "the server said 100 Continue, took the upload, then refused it with " + strconv.Itoa(status) + " (a wasted upload)"
		case r.HasFlag(FlagNoFinal):
			return "the body went out after 100 but no final response came"
		case r.HasFlag(FlagClosedMidBody):
			return "the server closed the connection while the body was in flight"
		}
	}
	return ""
}

func timerName(ms int) string {
	switch ms {
	case 350:
		return ".NET Framework's 350 ms timer"
	case 1000:
		return "curl's and Go's default 1 s timer"
	case 2000:
		return "a 2 s timer"
	case 2500:
		return "Java's 2.5 s timer"
	case 5000:
		return "a 5 s timer"
	}
	return "a " + strconv.Itoa(ms) + " ms timer"
}
