package report

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// marshalStd is the reference: encoding/json as the writers used it.
func marshalStd(t testing.TB, v any) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

var trickyStrings = []string{
	"", "a", "PUT", "100-continue", `quo"te`, `back\slash`, "tab\there", "nl\nx", "cr\rx",
	"\b\f", "\x00\x01\x1f\x7f", "<html>&amp;", "caf\u00e9", "\u2028\u2029", "\xff\xfe bad utf8 \xc3",
	"\xe2\x80", "emoji \U0001F600", "\u200e\u202e bidi", "\x1b[31mred\x1b[0m", "127.0.0.1:80", "[2001:db8::1]:443",
}

var trickyFloats = []float64{0, math.Copysign(0, -1), 1, -1, 0.5, 1e-6, 9.99e-7, 1e-7, 1.5e-9, 1e20, 1e21, 1.2345e22,
	-1e21, 123.456, 1000.0001, 0.1 + 0.2, math.MaxFloat64, math.SmallestNonzeroFloat64}

// fill sets v (addressable) and everything under it at random, every
// field visited by reflection so that a field added to Record is covered.
func fill(rng *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if rng.IntN(4) == 0 {
			b := make([]byte, rng.IntN(12))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			v.SetString(string(b))
		} else {
			v.SetString(trickyStrings[rng.IntN(len(trickyStrings))])
		}
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int, reflect.Int64, reflect.Int32:
		switch rng.IntN(3) {
		case 0:
			v.SetInt(0)
		case 1:
			v.SetInt(rng.Int64N(2000) - 1000)
		default:
			v.SetInt(int64(rng.Uint64() >> 1))
		}
	case reflect.Uint64:
		v.SetUint(rng.Uint64())
	case reflect.Float64:
		if rng.IntN(3) == 0 {
			v.SetFloat((rng.Float64() - 0.5) * math.Pow(10, float64(rng.IntN(50)-25)))
		} else {
			v.SetFloat(trickyFloats[rng.IntN(len(trickyFloats))])
		}
	case reflect.Pointer:
		if rng.IntN(3) == 0 {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		fill(rng, p.Elem())
		v.Set(p)
	case reflect.Slice:
		switch rng.IntN(4) {
		case 0:
			v.SetZero()
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		default:
			s := reflect.MakeSlice(v.Type(), 1+rng.IntN(3), 3)
			for i := range s.Len() {
				fill(rng, s.Index(i))
			}
			v.Set(s)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			t := time.Unix(rng.Int64N(4e9), rng.Int64N(1e9))
			switch rng.IntN(4) {
			case 0:
				t = t.UTC()
			case 1:
				t = t.In(time.FixedZone("X", (rng.IntN(48)-24)*1800))
			case 2:
				t = t.Truncate(time.Second).UTC()
			default:
				t = t.Round(time.Millisecond).In(time.FixedZone("", 5*3600+30*60))
			}
			v.Set(reflect.ValueOf(t))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(rng, v.Field(i))
			}
		}
	case reflect.Map:
		switch rng.IntN(4) {
		case 0:
			v.SetZero()
		case 1:
			v.Set(reflect.MakeMap(v.Type()))
		default:
			m := reflect.MakeMap(v.Type())
			for range 1 + rng.IntN(5) {
				k := reflect.New(v.Type().Key()).Elem()
				fill(rng, k)
				e := reflect.New(v.Type().Elem()).Elem()
				fill(rng, e)
				m.SetMapIndex(k, e)
			}
			v.Set(m)
		}
	default:
		panic("fill: no case for " + v.Kind().String())
	}
}

// TestAppendRecordJSON: the hand encoder writes what encoding/json
// writes, on 20 000 records with every field set at random (strings with
// control characters, invalid UTF-8, U+2028; floats near the exponent
// thresholds; nil, empty and full slices; times in odd zones).
func TestAppendRecordJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range 20000 {
		var r analyze.Record
		fill(rng, reflect.ValueOf(&r).Elem())
		want, werr := marshalStd(t, &r)
		got, gerr := AppendRecordJSON(nil, &r)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("record %d: error %v, encoding/json %v", i, gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("record %d differs:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestAppendRecordJSONRefusals: what encoding/json refuses (a year past
// 9999, NaN) is refused too, not written.
func TestAppendRecordJSONRefusals(t *testing.T) {
	nan := math.NaN()
	for _, r := range []*analyze.Record{
		{HeadersEndAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Wait100Ms: &nan},
	} {
		if _, err := AppendRecordJSON(nil, r); err == nil {
			t.Errorf("%+v: no error", r)
		}
	}
}

// FuzzAppendRecordJSON compares the hand encoder with encoding/json on
// arbitrary strings, numbers and times.
func FuzzAppendRecordJSON(f *testing.F) {
	f.Add("PUT", "/up\u2028", "curl/8\xff", 1.5e-7, int64(1700000000), int64(123456789), 3600)
	f.Add("", "\x00", "<>&", 1e21, int64(0), int64(0), 0)
	f.Fuzz(func(t *testing.T, method, target, ua string, ms float64, sec, nsec int64, zone int) {
		at := time.Unix(sec, nsec).In(time.FixedZone("", zone))
		r := &analyze.Record{Type: "negotiation", ID: target + "-1", Verdict: analyze.Verdict(ua),
			Request:      analyze.Request{Method: method, Target: target, UserAgent: ua, Via: ua},
			Interim:      []analyze.Interim{{Status: 100, Reason: ua, At: at}},
			Final:        &analyze.Final{Status: 417, Reason: method, At: at},
			HeadersEndAt: at, BodyStartAt: &at, Wait100Ms: &ms, Flags: []analyze.Flag{analyze.Flag(method)},
			Diagnosis: target, RetryOf: &ua}
		want, werr := marshalStd(t, r)
		got, gerr := AppendRecordJSON(nil, r)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("error %v, encoding/json %v", gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs:\n got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkRecordJSON encodes a typical record (ASCII, UTC times).
func BenchmarkRecordJSON(b *testing.B) {
	at := time.Unix(1700000000, 123456000).UTC()
	body, w, cl := at.Add(2*time.Millisecond), 1.234, int64(204800)
	r := &analyze.Record{Type: "negotiation", ID: "1234-1", Conn: analyze.Conn{Client: "10.0.0.7:51234", Server: "192.0.2.1:80"},
		Request: analyze.Request{Method: "PUT", Target: "/files/upload/0001.bin", Version: "HTTP/1.1", Host: "upload.example",
			Expect: "100-continue", ContentLength: &cl, UserAgent: "curl/7.88.1"},
		Interim:      []analyze.Interim{{Status: 100, Reason: "Continue", At: at.Add(time.Millisecond)}},
		Final:        &analyze.Final{Status: 201, Reason: "Created", Version: "HTTP/1.1", Server: "nginx/1.22.1", At: at.Add(9 * time.Millisecond)},
		HeadersEndAt: at, BodyStartAt: &body, BodyEndAt: &body, BodyBytes: cl, BodyDataBytes: cl, BodyComplete: true,
		Verdict: "continued", Flags: []analyze.Flag{}, Wait100Ms: &w, ClientWaitMs: &w, ConnEnd: "fin", Packet: 123456}
	b.Run("hand", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = AppendRecordJSON(buf[:0], r)
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("encoding/json", func(b *testing.B) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		for b.Loop() {
			buf.Reset()
			_ = enc.Encode(r)
		}
		b.SetBytes(int64(buf.Len()))
	})
}

// TestRFC3339Nano: appendRFC3339Nano writes what time.Time.AppendFormat
// does with time.RFC3339Nano, for UTC and other zones, whole seconds,
// every trailing-zero count and years out of its range.
func TestRFC3339Nano(t *testing.T) {
	times := []time.Time{
		time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2024, 5, 1, 12, 0, 0, 400000, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 27, 8, 30, 0, 120000000, time.FixedZone("", 3600)),
		time.Date(2026, 11, 27, 8, 30, 0, 120000000, time.Local),
		time.Unix(1714564800, 123456789),
		time.Unix(1714564800, 123456789).UTC(),
	}
	for ns, p := 1, 0; p < 9; ns, p = ns*10, p+1 {
		times = append(times, time.Unix(1714564800, int64(ns)).UTC(), time.Unix(1714564800, int64(7*ns)).UTC())
	}
	for _, tm := range times {
		if got, want := string(appendRFC3339Nano(nil, tm)), tm.Format(time.RFC3339Nano); got != want {
			t.Errorf("appendRFC3339Nano(%v) = %s, want %s", tm, got, want)
		}
	}
}

func FuzzRFC3339Nano(f *testing.F) {
	f.Add(int64(1714564800), int64(400000), int32(0))
	f.Add(int64(-62135596800), int64(1), int32(3600))
	f.Fuzz(func(t *testing.T, sec, nsec int64, offset int32) {
		tm := time.Unix(sec, nsec).UTC()
		if offset%2 != 0 {
			tm = tm.In(time.FixedZone("", int(offset%100000)))
		}
		if got, want := string(appendRFC3339Nano(nil, tm)), tm.Format(time.RFC3339Nano); got != want {
			t.Fatalf("appendRFC3339Nano(%v) = %s, want %s", tm, got, want)
		}
	})
}
