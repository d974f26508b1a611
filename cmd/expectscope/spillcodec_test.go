package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

func roundTrip(t *testing.T, r *analyze.Record) *analyze.Record {
	t.Helper()
	b := appendRecord(nil, r)
	n, k := binary.Uvarint(b)
	if k <= 0 || n != uint64(len(b)-k) {
		t.Fatalf("%s: length prefix %d, %d bytes follow", r.ID, n, len(b)-k)
	}
	got, err := decodeRecord(b[k:])
	if err != nil {
		t.Fatalf("%s: %v", r.ID, err)
	}
	// Every shorter encoding is an error, never a panic or a record.
	in := newInterner()
	for i := range len(b) - k {
		if _, err := decodeRecord(b[k : k+i]); err == nil {
			t.Fatalf("%s: %d of %d bytes decoded without error", r.ID, i, len(b)-k)
		}
		if _, err := decodeRecordIn(b[k:k+i], in); err == nil {
			t.Fatalf("%s: %d of %d bytes decoded without error (interned)", r.ID, i, len(b)-k)
		}
	}
	// Sharing strings changes nothing, the second time (from the
	// interner) as the first.
	for range 2 {
		again, err := decodeRecordIn(b[k:], in)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("%s: interned decoding differs: %v\n%+v\n%+v", r.ID, err, again, got)
		}
	}
	return got
}

// filled sets every field of v, recursively, to something other than
// its zero value, so that a field the codec forgets shows.
func filled(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)) + "\x00é")
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(-*n * 1000003))
	case reflect.Uint64:
		v.SetUint(uint64(*n) << 40)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.1)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		filled(p.Elem(), n)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			filled(s.Index(i), n)
		}
		v.Set(s)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Unix(1700000000+int64(*n), int64(*n)*1000+7).UTC()))
			return
		}
		for i := range v.NumField() {
			filled(v.Field(i), n)
		}
	default:
		panic("filled: " + v.Kind().String())
	}
}

// TestSpillCodec: records come back from the spill as they went in:
// every field (filled by reflection, so a field added to Record and not
// to the codec fails here), nil and empty slices told apart, the
// records of the corpus, and a time with an offset printed as it was.
func TestSpillCodec(t *testing.T) {
	var full analyze.Record
	n := 0
	filled(reflect.ValueOf(&full).Elem(), &n)
	if got := roundTrip(t, &full); !reflect.DeepEqual(got, &full) {
		t.Errorf("filled record: got\n%+v\nwant\n%+v", got, &full)
	}
	for _, r := range []*analyze.Record{
		{ID: "empty slices", Interim: []analyze.Interim{}, Flags: []analyze.Flag{}},
		{ID: "nil slices"},
	} {
		if got := roundTrip(t, r); !reflect.DeepEqual(got, r) {
			t.Errorf("%s: got %+v", r.ID, got)
		}
	}
	for _, r := range uncorrelatedCorpus(t) {
		if got := roundTrip(t, r); !reflect.DeepEqual(got, r) {
			t.Fatalf("%s: got\n%+v\nwant\n%+v", r.ID, got, r)
		}
	}
	// Local time of a live capture: printed with the same offset.
	r := &analyze.Record{ID: "offset", HeadersEndAt: time.Date(2026, 11, 26, 16, 0, 0, 123456789, time.FixedZone("CET", 3600))}
	want, _ := json.Marshal(r)
	got, _ := json.Marshal(roundTrip(t, r))
	if string(got) != string(want) {
		t.Errorf("offset time: %s, want %s", got, want)
	}
}

// FuzzSpillCodec: any bytes decode to an error or a record, never a
// panic or a huge allocation, and a record decoded encodes back to the
// same bytes.
func FuzzSpillCodec(f *testing.F) {
	var full analyze.Record
	n := 0
	filled(reflect.ValueOf(&full).Elem(), &n)
	for _, r := range []*analyze.Record{&full, {ID: "1-1", Flags: []analyze.Flag{}}} {
		b := appendRecord(nil, r)
		_, k := binary.Uvarint(b)
		f.Add(b[k:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		again := appendRecord(nil, r)
		_, k := binary.Uvarint(again)
		r2, err := decodeRecord(again[k:])
		// Compared encoded: a float decoded from any 8 bytes may be NaN,
		// which no comparison of values finds equal to itself.
		if err != nil || !bytes.Equal(appendRecord(nil, r2), again) {
			t.Fatalf("decoded record does not survive a round trip: %v", err)
		}
	})
}
