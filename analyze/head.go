package analyze

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors a header block can fail with. They wrap into *ParseError, which
// says where.
var (
	ErrHeaderTooLarge = errors.New("header block too large")
	ErrBadRequestLine = errors.New("malformed request line")
	ErrBadStatusLine  = errors.New("malformed status line")
	ErrBadHeaderLine  = errors.New("malformed header line")
	ErrBadLength      = errors.New("invalid Content-Length")
	ErrBadChunk       = errors.New("invalid chunk size line")
	ErrTooManyHeaders = errors.New("too many header fields")
	errConflictLength = fmt.Errorf("%w: conflicting values", ErrBadLength)
)

// ParseError reports a malformed message and the bytes that made it so.
type ParseError struct {
	Err  error
	Near string // offending bytes, at most 32, quoted with %q when printed
}

func (e *ParseError) Error() string { return fmt.Sprintf("%v near %q", e.Err, e.Near) }
func (e *ParseError) Unwrap() error { return e.Err }

func parseErr(err error, near []byte) error {
	if len(near) > 32 {
		near = near[:32]
	}
	return &ParseError{Err: err, Near: string(near)}
}

// header holds the fields the analysis uses. Only these are kept: the
// rest are counted, never stored, so a header bomb costs no memory.
type header struct {
	fields        int
	host          string
	expect        string
	contentLength int64 // -1 when absent
	chunked       bool  // Transfer-Encoding ends in chunked
	te            bool  // any Transfer-Encoding
	userAgent     string
	via           string
	xff           string
	xRequestID    string
	connection    string
	server        string
}

// requestHead is a parsed request line and header block.
type requestHead struct {
	method, target, version string
	h                       header
}

// responseHead is a parsed status line and header block.
type responseHead struct {
	version string
	status  int
	reason  string
	h       header
}

// maxHeaderFields bounds the fields of one message; more is a bomb.
const maxHeaderFields = 1000

// maxKeptValue bounds a kept header value: enough for any real Host,
// User-Agent or Via, small enough that a hostile one costs little.
const maxKeptValue = 1024

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool { return tokenChars[c] }

// tokenChars holds RFC 9110's tchar set, looked up per byte by the
// parsers and the hunt (a table beats the comparisons on bytes that are
// not text).
var tokenChars = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// nextLine splits b at the first LF, dropping a CR before it (bare LF is
// tolerated as net/textproto does).
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func validVersion(v []byte) bool {
	return len(v) == 8 && bytes.HasPrefix(v, []byte("HTTP/")) && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0' && v[7] <= '9'
}

// maxMethodLen bounds a method; startsRequest judges longer tokens not to
// start a request, and the two must agree or hunting never ends (registered
// methods are at most 17 characters).
const maxMethodLen = 32

// parseRequestLine parses "METHOD SP target SP HTTP/x.y".
func parseRequestLine(line []byte) (method, target, version []byte, err error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil, nil, nil, parseErr(ErrBadRequestLine, line)
	}
	method = line[:sp1]
	if len(method) > maxMethodLen {
		return nil, nil, nil, parseErr(ErrBadRequestLine, line)
	}
	for _, c := range method {
		if !isTokenChar(c) {
			return nil, nil, nil, parseErr(ErrBadRequestLine, line)
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 < 0 {
		return nil, nil, nil, parseErr(ErrBadRequestLine, line)
	}
	target, version = rest[:sp2], rest[sp2+1:]
	if len(target) == 0 || !validVersion(version) {
		return nil, nil, nil, parseErr(ErrBadRequestLine, line)
	}
	return method, target, version, nil
}

// parseStatusLine parses "HTTP/x.y SP 3DIGIT [SP reason]".
func parseStatusLine(line []byte) (version []byte, status int, reason []byte, err error) {
	if len(line) < 12 || !validVersion(line[:8]) || line[8] != ' ' {
		return nil, 0, nil, parseErr(ErrBadStatusLine, line)
	}
	s := line[9:12]
	for _, c := range s {
		if c < '0' || c > '9' {
			return nil, 0, nil, parseErr(ErrBadStatusLine, line)
		}
	}
	status = int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
	if status < 100 {
		return nil, 0, nil, parseErr(ErrBadStatusLine, line)
	}
	rest := line[12:]
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return nil, 0, nil, parseErr(ErrBadStatusLine, line)
		}
		rest = rest[1:]
	}
	return line[:8], status, rest, nil
}

// keep copies a header value out of the (reused) input buffer, bounded.
func keep(v []byte) string {
	if len(v) > maxKeptValue {
		v = v[:maxKeptValue]
	}
	return common(v)
}

// common returns b as a string without allocating when it is one of the
// values most messages carry (versions, methods, reasons, Expect and
// Connection values): a few allocations less per message.
func common(b []byte) string {
	switch string(b) {
	case "HTTP/1.1":
		return "HTTP/1.1"
	case "HTTP/1.0":
		return "HTTP/1.0"
	case "GET":
		return "GET"
	case "PUT":
		return "PUT"
	case "POST":
		return "POST"
	case "HEAD":
		return "HEAD"
	case "Continue":
		return "Continue"
	case "OK":
		return "OK"
	case "Created":
		return "Created"
	case "No Content":
		return "No Content"
	case "Expectation Failed":
		return "Expectation Failed"
	case "100-continue":
		return "100-continue"
	case "close":
		return "close"
	case "keep-alive":
		return "keep-alive"
	case "":
		return ""
	}
	return string(b)
}

// appendValue joins repeated fields with ", " as RFC 9110 5.3 allows.
func appendValue(old string, v []byte) string {
	if old == "" {
		return keep(v)
	}
	if len(old) >= maxKeptValue {
		return old
	}
	return keep([]byte(old + ", " + string(v)))
}

// parseHeaderFields parses field lines up to the end of block (which
// excludes the terminating empty line).
func parseHeaderFields(block []byte, h *header) error {
	h.contentLength = -1
	var last *string
	for len(block) > 0 {
		var line []byte
		line, block = nextLine(block)
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold (RFC 9112 5.2): continue the previous value.
			if last != nil && len(*last) < maxKeptValue {
				*last = keep([]byte(*last + " " + string(bytes.TrimSpace(line))))
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return parseErr(ErrBadHeaderLine, line)
		}
		name := bytes.TrimRight(line[:colon], " \t")
		value := bytes.TrimSpace(line[colon+1:])
		h.fields++
		if h.fields > maxHeaderFields {
			return parseErr(ErrTooManyHeaders, line)
		}
		last = nil
		switch len(name) {
		case 3:
			if ieq(name, "via") {
				h.via = appendValue(h.via, value)
				last = &h.via
			}
		case 4:
			if ieq(name, "host") && h.host == "" {
				h.host = keep(value)
				last = &h.host
			}
		case 6:
			if ieq(name, "expect") {
				h.expect = appendValue(h.expect, value)
				last = &h.expect
			} else if ieq(name, "server") {
				h.server = keep(value)
				last = &h.server
			}
		case 10:
			if ieq(name, "user-agent") {
				h.userAgent = keep(value)
				last = &h.userAgent
			} else if ieq(name, "connection") {
				h.connection = appendValue(h.connection, value)
				last = &h.connection
			}
		case 12:
			if ieq(name, "x-request-id") {
				h.xRequestID = keep(value)
			}
		case 14:
			if ieq(name, "content-length") {
				n, err := parseContentLength(value)
				if err != nil {
					return err
				}
				if h.contentLength >= 0 && h.contentLength != n {
					return parseErr(errConflictLength, line)
				}
				h.contentLength = n
			}
		case 15:
			if ieq(name, "x-forwarded-for") {
				h.xff = appendValue(h.xff, value)
			}
		case 17:
			if ieq(name, "transfer-encoding") {
				h.te = true
				// The last coding decides (RFC 9112 6.3): chunked must be final.
				v := bytes.TrimSpace(value)
				if i := bytes.LastIndexByte(v, ','); i >= 0 {
					v = bytes.TrimSpace(v[i+1:])
				}
				h.chunked = ieq(v, "chunked")
			}
		}
	}
	return nil
}

// parseContentLength accepts 1*DIGIT, and a list of identical values
// ("5, 5") as RFC 9110 8.6 allows a recipient to.
func parseContentLength(v []byte) (int64, error) {
	if len(v) > 0 && len(v) <= 18 {
		// The usual single value, without the list's splitting.
		var n int64
		for _, c := range v {
			if c < '0' || c > '9' {
				goto list
			}
			n = n*10 + int64(c-'0')
		}
		return n, nil
	}
list:
	var n int64 = -1
	for part := range bytes.SplitSeq(v, []byte(",")) {
		part = bytes.TrimSpace(part)
		if len(part) == 0 || len(part) > 18 {
			return 0, parseErr(ErrBadLength, v)
		}
		m, err := strconv.ParseInt(string(part), 10, 64)
		if err != nil || m < 0 || part[0] == '+' || part[0] == '-' {
			return 0, parseErr(ErrBadLength, v)
		}
		if n >= 0 && m != n {
			return 0, parseErr(errConflictLength, v)
		}
		n = m
	}
	return n, nil
}

// ieq compares ASCII case-insensitively without allocating.
func ieq(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated header value holds token
// (case-insensitive), as for Connection: close.
func hasToken(v, token string) bool {
	for part := range bytes.SplitSeq([]byte(v), []byte(",")) {
		if ieq(bytes.TrimSpace(part), token) {
			return true
		}
	}
	return false
}

// headerEnd finds the end of a header block in b: the index just past the
// empty line, or -1. from is where to resume scanning (bytes before it are
// known to hold no terminator), so accumulation stays linear.
func headerEnd(b []byte, from int) int {
	// A terminator may straddle the previous scan's end: its first LF can
	// be up to two bytes before it ("\n\r" | "\n").
	from = max(from-2, 0)
	for {
		i := bytes.IndexByte(b[from:], '\n')
		if i < 0 {
			return -1
		}
		i += from
		// "\n\n" or "\n\r\n"
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
		from = i + 1
	}
}

// parseRequestHead parses a whole header block (request line included,
// terminator included).
func parseRequestHead(block []byte) (*requestHead, error) {
	line, rest := nextLine(block)
	m, t, v, err := parseRequestLine(line)
	if err != nil {
		return nil, err
	}
	rh := &requestHead{method: common(m), target: keep(t), version: common(v)}
	if err := parseHeaderFields(rest, &rh.h); err != nil {
		return nil, err
	}
	return rh, nil
}

// parseResponseHead parses a whole response header block.
func parseResponseHead(block []byte) (*responseHead, error) {
	line, rest := nextLine(block)
	v, st, reason, err := parseStatusLine(line)
	if err != nil {
		return nil, err
	}
	rh := &responseHead{version: common(v), status: st, reason: keep(reason)}
	if err := parseHeaderFields(rest, &rh.h); err != nil {
		return nil, err
	}
	return rh, nil
}

// requestStart says whether b begins like a request line: "METHOD SP".
// It answers maybe when b is a prefix too short to tell.
type startGuess int

const (
	guessNo startGuess = iota
	guessYes
	guessMaybe
)

func looksLikeRequest(b []byte) startGuess {
	for i, c := range b {
		if c == ' ' {
			if i == 0 {
				return guessNo
			}
			// Require the rest of the line to end in a version when we have it.
			line := b
			if j := bytes.IndexByte(b, '\n'); j >= 0 {
				line = b[:j]
				line = bytes.TrimSuffix(line, []byte("\r"))
				if _, _, _, err := parseRequestLine(line); err != nil {
					return guessNo
				}
				return guessYes
			}
			if len(b) > 8192 {
				return guessNo
			}
			return guessMaybe
		}
		// Methods in use are upper-case tokens; a body rarely starts so.
		if !(c >= 'A' && c <= 'Z' || c == '-' || c == '_') || i > 20 {
			return guessNo
		}
	}
	return guessMaybe
}

// findMessageStart looks for the start of an HTTP message in b so that a
// stream picked up mid-way (or after a gap) resynchronises at the next
// message boundary. It returns the offset and whether it is a request,
// or -1. wantReq/wantResp say which kinds to accept.
func findMessageStart(b []byte, wantReq, wantResp bool) (int, bool) {
	off := 0
	for {
		i := bytes.Index(b[off:], []byte("HTTP/1."))
		if i < 0 {
			return -1, false
		}
		i += off
		ls := bytes.LastIndexByte(b[:i], '\n') + 1
		// A status line starts a line, or follows binary bytes of a
		// non-HTTP prefix (a SOCKS reply) directly.
		if wantResp && (ls == i || b[i-1] < 0x20 && b[i-1] != '\t' || b[i-1] >= 0x7f) {
			le := bytes.IndexByte(b[i:], '\n')
			if le < 0 {
				return -1, false // need the whole line; caller keeps the tail
			}
			if _, _, _, err := parseStatusLine(bytes.TrimSuffix(b[i:i+le], []byte("\r"))); err == nil {
				return i, false
			}
		}
		if wantReq && ls < i {
			le := bytes.IndexByte(b[i:], '\n')
			if le < 0 {
				return -1, false
			}
			// The method usually starts the line, but after a non-HTTP
			// prefix (a SOCKS handshake) it starts where the prefix ends.
			// A known method wins over a longer token that swallowed a
			// prefix byte (SOCKS's port 80 is "\x00P", glued to "POST").
			for pass := 0; pass < 2; pass++ {
				for p := ls; p < i; p++ {
					if b[p] < 'A' || b[p] > 'Z' || pass == 1 && p > ls && isTokenChar(b[p-1]) {
						continue
					}
					m, _, _, err := parseRequestLine(bytes.TrimSuffix(b[p:i+le], []byte("\r")))
					if err == nil && (pass == 1 || knownMethod(m)) {
						return p, true
					}
				}
			}
		}
		off = i + 1
	}
}

// huntWindow is the most hunted bytes kept for the next chunk: a request
// line longer than this, cut across chunks, is not found.
const huntWindow = 8 << 10

// huntTail returns where the part of hunted bytes b that findMessageStart
// may still need, once more bytes come, begins. A message it finds starts
// on a line that ends in a later chunk, so after b's last line break, and
// at or after the first of: "HTTP/1." (on that line it has no line end
// yet), a start of it at the very end of b, and, for a request, an
// upper-case letter that starts 1 to maxMethodLen token characters ending
// at a space or at the end of b (a method). One byte before that is kept,
// for the checks on the byte before a start, and never more than the last
// huntWindow bytes. Bytes before it cannot change what is found.
func huntTail(b []byte, wantReq bool) int {
	from := max(0, len(b)-huntWindow)
	if i := bytes.LastIndexByte(b[from:], '\n'); i >= 0 {
		from += i + 1
	}
	keep := len(b) - partialPrefix(b[from:], "HTTP/1.")
	if i := bytes.Index(b[from:], []byte("HTTP/1.")); i >= 0 {
		keep = min(keep, from+i)
	}
	if wantReq {
		if p := firstMethodStart(b[from:]); p >= 0 {
			keep = min(keep, from+p)
		}
	}
	return max(from, keep-1)
}

// partialPrefix returns the length of the longest end of b that is a
// proper prefix of p (a p that the next bytes may complete).
func partialPrefix(b []byte, p string) int {
	for n := min(len(b), len(p)-1); n > 0; n-- {
		if string(b[len(b)-n:]) == p[:n] {
			return n
		}
	}
	return 0
}

// firstMethodStart returns the first index of b where a request line's
// method may start (see huntTail), or -1.
func firstMethodStart(b []byte) int {
	// A method ends at a space or at the end of b: look back from each.
	for from := 0; ; {
		end := len(b)
		sp := bytes.IndexByte(b[from:], ' ')
		if sp >= 0 {
			end = from + sp
		}
		start := end
		for start > from && start > end-maxMethodLen && isTokenChar(b[start-1]) {
			start--
		}
		for p := start; p < end; p++ {
			if b[p] >= 'A' && b[p] <= 'Z' {
				return p
			}
		}
		if sp < 0 {
			return -1
		}
		from = end + 1
	}
}

// knownMethod reports whether m is a registered HTTP method in common use.
func knownMethod(m []byte) bool {
	switch string(m) {
	case "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
		"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH", "MKCALENDAR":
		return true
	}
	return false
}
