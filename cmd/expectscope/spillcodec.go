package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// The spill's record encoding: every field of analyze.Record in order,
// strings and counts as varints, nil told from empty. JSON was most of
// the time of a capture with many records (a quarter of a million
// records: 5 s of 12 encoding them and reading them back); this is some
// ten times faster. It only ever lives in the spill's temporary files.
// TestSpillCodec fills every field by reflection: a field added to
// Record and not here fails it.

// appendRecord appends r's encoding, preceded by its length.
func appendRecord(b []byte, r *analyze.Record) []byte {
	var e recEncoder
	return e.append(b, r)
}

// append is appendRecord with e's buffer, kept from call to call (a
// buffer grown anew for every record was a sixth of what a run with many
// records allocated).
func (e *recEncoder) append(b []byte, r *analyze.Record) []byte {
	e.b = e.b[:0]
	e.record(r)
	b = binary.AppendUvarint(b, uint64(len(e.b)))
	return append(b, e.b...)
}

// decodeRecord decodes one record as appendRecord wrote it (the length
// prefix excluded).
func decodeRecord(b []byte) (*analyze.Record, error) { return decodeRecordIn(b, nil) }

// decodeRecordIn is decodeRecord sharing the strings that repeat from
// record to record (methods, hosts, user agents, verdicts, flags...)
// through in: reading a spill of 237 000 records allocated 2.5 million
// strings, most of them copies of a few hundred.
func decodeRecordIn(b []byte, in *interner) (*analyze.Record, error) {
	d := recDecoder{b: b, in: in}
	r := d.record()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after a record", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("spilled record: %w", d.err)
	}
	return r, nil
}

type recEncoder struct{ b []byte }

func (e *recEncoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *recEncoder) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *recEncoder) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *recEncoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// time writes t's instant and, unless it is UTC (every capture file's
// time is), its offset: live captures stamp local time, and JSON keeps
// the offset a time prints with.
func (e *recEncoder) time(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	if _, off := t.Zone(); off != 0 {
		e.b = append(e.b, 2)
		e.int(int64(off))
	} else {
		e.b = append(e.b, 1)
	}
	e.int(t.Unix())
	e.uint(uint64(t.Nanosecond()))
}

func (e *recEncoder) float(p *float64) {
	e.bool(p != nil)
	if p != nil {
		e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(*p))
	}
}

func (e *recEncoder) optStr(p *string) {
	e.bool(p != nil)
	if p != nil {
		e.str(*p)
	}
}

func (e *recEncoder) optTime(p *time.Time) {
	e.bool(p != nil)
	if p != nil {
		e.time(*p)
	}
}

// count writes a slice's length, 0 for nil and n+1 otherwise.
func (e *recEncoder) count(n int, isNil bool) {
	if isNil {
		e.uint(0)
	} else {
		e.uint(uint64(n) + 1)
	}
}

func (e *recEncoder) record(r *analyze.Record) {
	e.str(r.Type)
	e.str(r.ID)
	e.str(r.Conn.Client)
	e.str(r.Conn.Server)
	q := &r.Request
	for _, s := range []string{q.Method, q.Target, q.Version, q.Host, q.Expect} {
		e.str(s)
	}
	e.bool(q.ContentLength != nil)
	if q.ContentLength != nil {
		e.int(*q.ContentLength)
	}
	e.bool(q.Chunked)
	for _, s := range []string{q.UserAgent, q.Via, q.XForwardedFor, q.XRequestID, q.Connection} {
		e.str(s)
	}
	e.count(len(r.Interim), r.Interim == nil)
	for _, i := range r.Interim {
		e.int(int64(i.Status))
		e.str(i.Reason)
		e.time(i.At)
		e.int(int64(i.Headers))
	}
	e.bool(r.Final != nil)
	if f := r.Final; f != nil {
		e.int(int64(f.Status))
		for _, s := range []string{f.Reason, f.Version, f.Server, f.Via, f.Connection} {
			e.str(s)
		}
		e.time(f.At)
	}
	e.time(r.HeadersEndAt)
	e.optTime(r.BodyStartAt)
	e.optTime(r.BodyEndAt)
	e.int(r.BodyBytes)
	e.int(r.BodyDataBytes)
	e.bool(r.BodyComplete)
	e.str(string(r.Verdict))
	e.count(len(r.Flags), r.Flags == nil)
	for _, f := range r.Flags {
		e.str(string(f))
	}
	e.float(r.Wait100Ms)
	e.float(r.ClientWaitMs)
	e.float(r.LostMs)
	e.bool(r.TimeoutGuess != nil)
	if r.TimeoutGuess != nil {
		e.int(int64(*r.TimeoutGuess))
	}
	e.float(r.RTTMs)
	e.optStr(r.RetryOf)
	e.optStr(r.RetriedBy)
	e.str(r.AfterEarlyFinal)
	e.str(r.ConnEnd)
	e.int(int64(r.Gaps))
	e.str(r.Diagnosis)
	e.uint(r.Packet)
	e.str(r.Intermediary)
}

type recDecoder struct {
	b    []byte
	err  error
	in   *interner
	slot int // shared fields read so far: see interner.get
}

// interner maps strings to one copy of each. It stops growing at
// internMax entries and does not take strings longer than internLen.
// Before the map it looks at the string the same field (the slot'th
// shared one) of the record before had: the same, more often than not.
type interner struct {
	m    map[string]string
	last [48]string
}

const (
	internMax = 4096
	internLen = 256
)

func newInterner() *interner { return &interner{m: map[string]string{}} }

func (in *interner) get(b []byte, slot int) string {
	if len(b) == 0 {
		return "" // most shared fields are empty; no lookup
	}
	if slot < len(in.last) && in.last[slot] == string(b) {
		return in.last[slot]
	}
	s, ok := in.m[string(b)] // the conversion does not allocate here
	if !ok {
		s = string(b)
		if len(in.m) < internMax && len(b) <= internLen {
			in.m[s] = s
		}
	}
	if slot < len(in.last) {
		in.last[slot] = s
	}
	return s
}

var errShortRecord = errors.New("cut short")

func (d *recDecoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShortRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int reads what binary.AppendVarint wrote: a zigzag-coded uvarint.
func (d *recDecoder) int() int64 {
	u := d.uint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

func (d *recDecoder) str() string {
	n := d.uint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errShortRecord
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// shared reads a string that often repeats across records, through the
// interner when there is one.
func (d *recDecoder) shared() string {
	if d.in == nil {
		return d.str()
	}
	n := d.uint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errShortRecord
		return ""
	}
	s := d.in.get(d.b[:n], d.slot)
	d.slot++
	d.b = d.b[n:]
	return s
}

func (d *recDecoder) bool() bool {
	if d.err != nil || len(d.b) == 0 {
		d.err = errShortRecord
		return false
	}
	v := d.b[0] != 0
	d.b = d.b[1:]
	return v
}

func (d *recDecoder) time() time.Time {
	if d.err != nil || len(d.b) == 0 {
		d.err = errShortRecord
		return time.Time{}
	}
	kind := d.b[0]
	d.b = d.b[1:]
	var off int64
	switch kind {
	case 0:
		return time.Time{}
	case 2:
		off = d.int()
	}
	sec := d.int()
	nsec := d.uint()
	if nsec >= 1e9 || kind > 2 {
		d.err = errors.New("bad time")
	}
	t := time.Unix(sec, int64(nsec)).UTC()
	if kind == 2 && off != 0 {
		t = t.In(time.FixedZone("", int(off)))
	}
	return t
}

// count reads a slice's length: -1 for nil. A length cannot exceed what
// is left to read, so a corrupt count cannot make a huge slice.
func (d *recDecoder) count() int {
	n := d.uint()
	if n == 0 {
		return -1
	}
	if n-1 > uint64(len(d.b)) {
		d.err = errShortRecord
		return -1
	}
	return int(n - 1)
}

// decodedRecord is a decoded record with room for what its pointer
// fields and short slices point to: one allocation instead of up to
// fifteen (reading records back is the serial part of rendering).
type decodedRecord struct {
	r         analyze.Record
	final     analyze.Final
	cl        int64
	guess     int
	bs, be    time.Time
	ms        [4]float64
	retryOf   string
	retriedBy string
	interim   [1]analyze.Interim
	flags     [2]analyze.Flag
}

// floatIn reads an optional float64 (see recEncoder.float) into *v: v,
// or nil when absent.
func (d *recDecoder) floatIn(v *float64) *float64 {
	if !d.bool() {
		return nil
	}
	if d.err != nil || len(d.b) < 8 {
		d.err = errShortRecord
		return nil
	}
	*v = math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

// timeIn reads an optional time (see recEncoder.optTime) into *t: t, or
// nil when absent.
func (d *recDecoder) timeIn(t *time.Time) *time.Time {
	if !d.bool() {
		return nil
	}
	*t = d.time()
	return t
}

// strIn reads an optional string (see recEncoder.optStr) into *s: s, or
// nil when absent.
func (d *recDecoder) strIn(s *string) *string {
	if !d.bool() {
		return nil
	}
	*s = d.str()
	return s
}

func (d *recDecoder) record() *analyze.Record {
	blk := &decodedRecord{}
	r := &blk.r
	r.Type = d.shared()
	r.ID = d.str()
	r.Conn.Client = d.str()
	r.Conn.Server = d.shared()
	q := &r.Request
	q.Method = d.shared()
	q.Target = d.str()
	q.Version = d.shared()
	q.Host = d.shared()
	q.Expect = d.shared()
	if d.bool() {
		blk.cl = d.int()
		q.ContentLength = &blk.cl
	}
	q.Chunked = d.bool()
	q.UserAgent, q.Via = d.shared(), d.shared()
	q.XForwardedFor, q.XRequestID = d.str(), d.str()
	q.Connection = d.shared()
	if n := d.count(); n >= 0 {
		if n <= len(blk.interim) {
			r.Interim = blk.interim[:n:n]
		} else {
			r.Interim = make([]analyze.Interim, n)
		}
		for i := range r.Interim {
			in := &r.Interim[i]
			in.Status = int(d.int())
			in.Reason = d.shared()
			in.At = d.time()
			in.Headers = int(d.int())
		}
	}
	if d.bool() {
		f := &blk.final
		f.Status = int(d.int())
		f.Reason = d.shared()
		f.Version = d.shared()
		f.Server = d.shared()
		f.Via = d.shared()
		f.Connection = d.shared()
		f.At = d.time()
		r.Final = f
	}
	r.HeadersEndAt = d.time()
	r.BodyStartAt = d.timeIn(&blk.bs)
	r.BodyEndAt = d.timeIn(&blk.be)
	r.BodyBytes = d.int()
	r.BodyDataBytes = d.int()
	r.BodyComplete = d.bool()
	r.Verdict = analyze.Verdict(d.shared())
	if n := d.count(); n >= 0 {
		if n <= len(blk.flags) {
			r.Flags = blk.flags[:n:n]
		} else {
			r.Flags = make([]analyze.Flag, n)
		}
		for i := range r.Flags {
			r.Flags[i] = analyze.Flag(d.shared())
		}
	}
	r.Wait100Ms = d.floatIn(&blk.ms[0])
	r.ClientWaitMs = d.floatIn(&blk.ms[1])
	r.LostMs = d.floatIn(&blk.ms[2])
	if d.bool() {
		blk.guess = int(d.int())
		r.TimeoutGuess = &blk.guess
	}
	r.RTTMs = d.floatIn(&blk.ms[3])
	r.RetryOf = d.strIn(&blk.retryOf)
	r.RetriedBy = d.strIn(&blk.retriedBy)
	r.AfterEarlyFinal = d.shared()
	r.ConnEnd = d.shared()
	r.Gaps = int(d.int())
	r.Diagnosis = d.shared()
	r.Packet = d.uint()
	r.Intermediary = d.shared()
	return r
}
