package report

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/expectscope/expectscope/analyze"
)

// AppendRecordJSON appends r in ndjson schema v1, byte for byte as
// encoding/json encodes it with SetEscapeHTML(false) (without the
// newline): on a capture of many small requests, encoding records by
// reflection was a sixth of the run. TestAppendRecordJSON compares the
// two on records with every field set at random.
func AppendRecordJSON(b []byte, r *analyze.Record) ([]byte, error) {
	if !encodable(r) {
		// A time encoding/json refuses, or a float it cannot write: let it
		// say so.
		out, err := json.Marshal(r)
		return append(b, out...), err
	}
	b = append(b, `{"type":`...)
	b = appendJSONString(b, r.Type)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, r.ID)
	b = append(b, `,"conn":{"client":`...)
	b = appendJSONString(b, r.Conn.Client)
	b = append(b, `,"server":`...)
	b = appendJSONString(b, r.Conn.Server)
	b = append(b, `},"request":`...)
	b = appendRequest(b, &r.Request)
	b = append(b, `,"interim":`...)
	if r.Interim == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Interim {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendInterim(b, &r.Interim[i])
		}
		b = append(b, ']')
	}
	b = append(b, `,"final":`...)
	if r.Final == nil {
		b = append(b, "null"...)
	} else {
		b = appendFinal(b, r.Final)
	}
	b = append(b, `,"headers_end_at":`...)
	b = appendJSONTime(b, r.HeadersEndAt)
	b = append(b, `,"body_start_at":`...)
	b = appendJSONTimePtr(b, r.BodyStartAt)
	b = append(b, `,"body_end_at":`...)
	b = appendJSONTimePtr(b, r.BodyEndAt)
	b = append(b, `,"body_bytes":`...)
	b = strconv.AppendInt(b, r.BodyBytes, 10)
	b = append(b, `,"body_data_bytes":`...)
	b = strconv.AppendInt(b, r.BodyDataBytes, 10)
	b = append(b, `,"body_complete":`...)
	b = strconv.AppendBool(b, r.BodyComplete)
	b = append(b, `,"verdict":`...)
	b = appendJSONString(b, string(r.Verdict))
	b = append(b, `,"flags":`...)
	if r.Flags == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, f := range r.Flags {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, string(f))
		}
		b = append(b, ']')
	}
	b = append(b, `,"wait_100_ms":`...)
	b = appendJSONFloatPtr(b, r.Wait100Ms)
	b = append(b, `,"client_wait_ms":`...)
	b = appendJSONFloatPtr(b, r.ClientWaitMs)
	b = append(b, `,"lost_ms":`...)
	b = appendJSONFloatPtr(b, r.LostMs)
	b = append(b, `,"timeout_guess_ms":`...)
	if r.TimeoutGuess == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(*r.TimeoutGuess), 10)
	}
	b = append(b, `,"rtt_ms":`...)
	b = appendJSONFloatPtr(b, r.RTTMs)
	b = append(b, `,"retry_of":`...)
	b = appendJSONStringPtr(b, r.RetryOf)
	b = append(b, `,"retried_by":`...)
	b = appendJSONStringPtr(b, r.RetriedBy)
	b = appendOmitEmpty(b, `,"after_early_final":`, r.AfterEarlyFinal)
	b = appendOmitEmpty(b, `,"conn_end":`, r.ConnEnd)
	if r.Gaps != 0 {
		b = append(b, `,"gaps":`...)
		b = strconv.AppendInt(b, int64(r.Gaps), 10)
	}
	b = appendOmitEmpty(b, `,"diagnosis":`, r.Diagnosis)
	b = append(b, `,"packet":`...)
	b = strconv.AppendUint(b, r.Packet, 10)
	b = appendOmitEmpty(b, `,"intermediary":`, r.Intermediary)
	return append(b, '}'), nil
}

func appendRequest(b []byte, q *analyze.Request) []byte {
	b = append(b, `{"method":`...)
	b = appendJSONString(b, q.Method)
	b = append(b, `,"target":`...)
	b = appendJSONString(b, q.Target)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, q.Version)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, q.Host)
	b = append(b, `,"expect":`...)
	b = appendJSONString(b, q.Expect)
	b = append(b, `,"content_length":`...)
	if q.ContentLength == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *q.ContentLength, 10)
	}
	b = append(b, `,"chunked":`...)
	b = strconv.AppendBool(b, q.Chunked)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, q.UserAgent)
	b = appendOmitEmpty(b, `,"via":`, q.Via)
	b = appendOmitEmpty(b, `,"x_forwarded_for":`, q.XForwardedFor)
	b = appendOmitEmpty(b, `,"x_request_id":`, q.XRequestID)
	b = appendOmitEmpty(b, `,"connection":`, q.Connection)
	return append(b, '}')
}

func appendInterim(b []byte, in *analyze.Interim) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(in.Status), 10)
	b = appendOmitEmpty(b, `,"reason":`, in.Reason)
	b = append(b, `,"at":`...)
	b = appendJSONTime(b, in.At)
	if in.Headers != 0 {
		b = append(b, `,"headers":`...)
		b = strconv.AppendInt(b, int64(in.Headers), 10)
	}
	return append(b, '}')
}

func appendFinal(b []byte, f *analyze.Final) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(f.Status), 10)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, f.Reason)
	b = appendOmitEmpty(b, `,"version":`, f.Version)
	b = append(b, `,"server":`...)
	b = appendJSONString(b, f.Server)
	b = append(b, `,"via":`...)
	b = appendJSONString(b, f.Via)
	b = appendOmitEmpty(b, `,"connection":`, f.Connection)
	b = append(b, `,"at":`...)
	b = appendJSONTime(b, f.At)
	return append(b, '}')
}

// encodable reports whether every time and float of r is one encoding/json
// writes without an error.
func encodable(r *analyze.Record) bool {
	if !timeOK(r.HeadersEndAt) || r.BodyStartAt != nil && !timeOK(*r.BodyStartAt) || r.BodyEndAt != nil && !timeOK(*r.BodyEndAt) {
		return false
	}
	for i := range r.Interim {
		if !timeOK(r.Interim[i].At) {
			return false
		}
	}
	if r.Final != nil && !timeOK(r.Final.At) {
		return false
	}
	for _, f := range []*float64{r.Wait100Ms, r.ClientWaitMs, r.LostMs, r.RTTMs} {
		if f != nil && (math.IsNaN(*f) || math.IsInf(*f, 0)) {
			return false
		}
	}
	return true
}

// timeOK: time.Time.MarshalJSON refuses years outside [0,9999] and zone
// offsets of a day or more.
func timeOK(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*3600 && off < 24*3600
}

func appendOmitEmpty(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return appendJSONString(b, s)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = appendRFC3339Nano(b, t)
	return append(b, '"')
}

// appendRFC3339Nano is t.AppendFormat(b, time.RFC3339Nano), written out
// for UTC times of years 0-9999 (every time a capture file gives): a
// record has up to six times, and formatting them was a tenth of
// encoding it.
func appendRFC3339Nano(b []byte, t time.Time) []byte {
	year, month, day := t.Date()
	if t.Location() != time.UTC || year < 0 || year > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	hour, minute, sec := t.Clock()
	b = append(b,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-',
		byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}

func appendJSONTimePtr(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendJSONTime(b, *t)
}

func appendJSONStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

// appendJSONFloatPtr writes a float64 as encoding/json does: the shortest
// representation, in exponent form below 1e-6 and from 1e21, with a
// one-digit negative exponent unpadded.
func appendJSONFloatPtr(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, "null"...)
	}
	v := *f
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as encoding/json does without HTML escaping:
// control characters escaped (\b \f \n \r \t by name), invalid UTF-8 as
// U+FFFD, U+2028 and U+2029 escaped for JavaScript.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
