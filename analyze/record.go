package analyze

import "time"

// Record types in the ndjson schema v1.
const (
	TypeNegotiation = "negotiation"
	TypeExchange    = "exchange"
	TypeHop         = "hop"
)

// Verdict says what happened to one Expect negotiation: exactly one per record.
type Verdict string

const (
	Continued       Verdict = "continued"
	Rejected        Verdict = "rejected"
	FinalBeforeBody Verdict = "final-before-body"
	TimedOut        Verdict = "timed-out"
	NoWait          Verdict = "no-wait"
	Unanswered      Verdict = "unanswered"
	Incomplete      Verdict = "incomplete"
)

// Verdicts lists every verdict in the order reports show them.
var Verdicts = []Verdict{Continued, Rejected, FinalBeforeBody, TimedOut, NoWait, Unanswered, Incomplete}

// Flag names something wrong or notable about a negotiation.
type Flag string

const (
	FlagBodyAfter417         Flag = "body-after-417"
	FlagBodyAfterFinal       Flag = "body-after-final"
	FlagNoRetryAfter417      Flag = "no-retry-after-417"
	FlagRetriedWithoutExpect Flag = "retried-without-expect"
	FlagLate100              Flag = "late-100"
	Flag100AfterBody         Flag = "100-after-body"
	FlagDuplicate100         Flag = "duplicate-100"
	Flag100WithHeaders       Flag = "100-with-headers"
	FlagErrorAfter100        Flag = "error-after-100"
	FlagExpectWithoutBody    Flag = "expect-without-body"
	FlagExpectOnHTTP10       Flag = "expect-on-http10"
	Flag1xxToHTTP10          Flag = "1xx-to-http10"
	FlagUnknownExpectation   Flag = "unknown-expectation"
	FlagUnreadBody           Flag = "unread-body"
	FlagNoFinal              Flag = "no-final"
	FlagClosedMidBody        Flag = "closed-mid-body"
	FlagUnsolicited100       Flag = "unsolicited-100"
	// Set from intermediary correlation (one leg visible).
	FlagViaIntermediary Flag = "via-intermediary"
)

// FlagInfo is the documentation of a flag: the rule it cites and what it means.
type FlagInfo struct {
	Flag    Flag
	Rule    string
	Meaning string
}

// Flags lists every flag with the rule it cites, in report order.
var Flags = []FlagInfo{
	{FlagBodyAfter417, "RFC 9110 10.1.1", "body bytes sent after the 417 arrived"},
	{FlagBodyAfterFinal, "RFC 9110 10.1.1, RFC 9112 9.3", "body kept flowing after a final error status arrived"},
	{FlagNoRetryAfter417, "RFC 9110 10.1.1 (SHOULD repeat)", "417 and the request never came again without Expect"},
	{FlagRetriedWithoutExpect, "RFC 9110 10.1.1", "after 417 the request came again without Expect"},
	{FlagLate100, "RFC 9110 10.1.1", "the 100 arrived after the client gave up waiting"},
	{Flag100AfterBody, "RFC 9110 10.1.1 (MUST NOT wait for content)", "the server sent its 100 only after body bytes reached it, or after the final"},
	{FlagDuplicate100, "RFC 9110 15.2", "more than one 100 for one request"},
	{Flag100WithHeaders, "RFC 9110 15.2.1", "the 100 carried header fields"},
	{FlagErrorAfter100, "RFC 9110 10.1.1", "100 sent, then a 4xx/5xx after the upload"},
	{FlagExpectWithoutBody, "RFC 9110 10.1.1 (client MUST NOT)", "100-continue on a request without content"},
	{FlagExpectOnHTTP10, "RFC 9110 10.1.1 (server MUST ignore)", "Expect on an HTTP/1.0 request"},
	{Flag1xxToHTTP10, "RFC 9110 15.2 (server MUST NOT)", "interim response sent to an HTTP/1.0 client"},
	{FlagUnknownExpectation, "RFC 9110 10.1.1 (MAY 417)", "Expect value other than 100-continue"},
	{FlagUnreadBody, "RFC 9112 9.3", "early final status without close; client and server disagreed on what followed (desync risk)"},
	{FlagNoFinal, "RFC 9110 10.1.1 (MUST send a final status)", "body sent, no final response before the end"},
	{FlagClosedMidBody, "RFC 9112 9.6", "the server closed or reset while the body was in flight"},
	{FlagUnsolicited100, "RFC 9110 15.2", "a 100 for a request without Expect"},
	{FlagViaIntermediary, "RFC 9110 7.6.3", "the 417 or 100 came from an intermediary (Via or a proxy Server)"},
}

// RuleOf returns the rule a flag cites.
func RuleOf(f Flag) string {
	for _, fi := range Flags {
		if fi.Flag == f {
			return fi.Rule
		}
	}
	return ""
}

// Conn names the two endpoints in net.JoinHostPort form.
type Conn struct {
	Client string `json:"client"`
	Server string `json:"server"`
}

// Request is what the client asked.
type Request struct {
	Method        string `json:"method"`
	Target        string `json:"target"`
	Version       string `json:"version"`
	Host          string `json:"host"`
	Expect        string `json:"expect"` // raw value(s), "" when absent
	ContentLength *int64 `json:"content_length"`
	Chunked       bool   `json:"chunked"`
	UserAgent     string `json:"user_agent"`
	Via           string `json:"via,omitempty"`
	XForwardedFor string `json:"x_forwarded_for,omitempty"`
	XRequestID    string `json:"x_request_id,omitempty"`
	Connection    string `json:"connection,omitempty"`
}

// Interim is one 1xx response.
type Interim struct {
	Status  int       `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
	Headers int       `json:"headers,omitempty"` // header fields it carried
}

// Final is the final response.
type Final struct {
	Status     int       `json:"status"`
	Reason     string    `json:"reason"`
	Version    string    `json:"version,omitempty"`
	Server     string    `json:"server"`
	Via        string    `json:"via"`
	Connection string    `json:"connection,omitempty"`
	At         time.Time `json:"at"`
}

// Record is one request's story: a negotiation (request with Expect) or a
// plain exchange. It is the unit every renderer consumes.
type Record struct {
	Type         string     `json:"type"`
	ID           string     `json:"id"`
	Conn         Conn       `json:"conn"`
	Request      Request    `json:"request"`
	Interim      []Interim  `json:"interim"`
	Final        *Final     `json:"final"`
	HeadersEndAt time.Time  `json:"headers_end_at"`
	BodyStartAt  *time.Time `json:"body_start_at"`
	BodyEndAt    *time.Time `json:"body_end_at"`
	BodyBytes    int64      `json:"body_bytes"`
	// BodyDataBytes is the decoded content (BodyBytes less chunk framing).
	BodyDataBytes int64 `json:"body_data_bytes"`
	// BodyComplete is true when the declared body (length or last chunk) was all seen.
	BodyComplete bool     `json:"body_complete"`
	Verdict      Verdict  `json:"verdict"`
	Flags        []Flag   `json:"flags"`
	Wait100Ms    *float64 `json:"wait_100_ms"`
	ClientWaitMs *float64 `json:"client_wait_ms"`
	LostMs       *float64 `json:"lost_ms"`
	TimeoutGuess *int     `json:"timeout_guess_ms"`
	RTTMs        *float64 `json:"rtt_ms"`
	RetryOf      *string  `json:"retry_of"`
	RetriedBy    *string  `json:"retried_by"`
	// AfterEarlyFinal says what the client's next bytes were after a final
	// status that came before any body byte: "body", "new-request", "close"
	// or "" when that did not happen.
	AfterEarlyFinal string `json:"after_early_final,omitempty"`
	// ConnEnd is how the connection ended ("fin", "rst", "end-of-capture"...).
	ConnEnd   string `json:"conn_end,omitempty"`
	Gaps      int    `json:"gaps,omitempty"` // capture gaps while the exchange was open
	Diagnosis string `json:"diagnosis,omitempty"`
	// Packet is the capture packet number that completed the request headers.
	Packet uint64 `json:"packet"`
	// Intermediary is filled by correlation: the hop this record belongs to.
	Intermediary string `json:"intermediary,omitempty"`
}

// HasFlag reports whether r carries f.
func (r *Record) HasFlag(f Flag) bool {
	for _, g := range r.Flags {
		if g == f {
			return true
		}
	}
	return false
}

// Endpoint is one leg's identity inside a hop record.
type Endpoint struct {
	ID     string `json:"id"`
	Client string `json:"client"`
	Server string `json:"server"`
}

// Hop links the downstream and upstream legs of one proxied request.
type Hop struct {
	Type         string   `json:"type"` // "hop"
	Intermediary string   `json:"intermediary"`
	Downstream   Endpoint `json:"downstream"`
	Upstream     Endpoint `json:"upstream"`
	Changes      []string `json:"changes"`
	// What it cost the client.
	WastedBytes int64    `json:"wasted_bytes,omitempty"`
	LostMs      *float64 `json:"lost_ms,omitempty"`
	// AttributedBy says, for a hop without an upstream leg (a proxy-417),
	// what proves the intermediary answered: "server: squid/5.7" or
	// "endpoint: ..." (the endpoint proxies other requests of the run).
	AttributedBy string `json:"attributed_by,omitempty"`
}
