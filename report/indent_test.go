package report

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/expectscope/expectscope/analyze"
)

// TestAppendIndented: records encoded by hand and indented are what
// jsonIndented (encoding/json) wrote, on records with every field set at
// random (strings with quotes, backslashes and braces; empty and full
// slices and objects).
func TestAppendIndented(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	for i := range 5000 {
		var r analyze.Record
		fill(rng, reflect.ValueOf(&r).Elem())
		var want bytes.Buffer
		if err := jsonIndented(&want, &r, "  "); err != nil {
			continue // refused by both: TestAppendRecordJSONRefusals
		}
		compact, err := AppendRecordJSON(nil, &r)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got := appendIndented(nil, compact, "  ", " "); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("record %d differs:\n got %s\nwant %s", i, got, want.Bytes())
		}
	}
}

// FuzzAppendIndented compares appendIndented with encoding/json's Indent
// on any valid JSON written compactly, and requires it not to panic on
// anything else.
func FuzzAppendIndented(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":[1,{},[],"x\"y\\"],"b":{"c":null}}`, `"\\"`, `[{"":""},[[]]]`, `"unterminated\`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got := appendIndented(nil, src, "  ", " ")
		var compact bytes.Buffer
		if json.Compact(&compact, src) != nil || !bytes.Equal(compact.Bytes(), src) {
			return
		}
		var want bytes.Buffer
		if err := json.Indent(&want, src, "  ", " "); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("differs:\n got %s\nwant %s", got, want.Bytes())
		}
	})
}
