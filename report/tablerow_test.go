package report

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
)

// streamTable renders recs as the streamed, sized table.
func streamTable(t *testing.T, recs []*analyze.Record, slow bool) []byte {
	t.Helper()
	defer func(old bool) { slowTableRows = old }(slowTableRows)
	slowTableRows = slow
	start := recs[0].HeadersEndAt
	z := NewTableSizer(start)
	for _, r := range recs {
		z.Add(r)
	}
	var buf bytes.Buffer
	rw, err := NewRecordWriter(&buf, FormatTable, nil)
	if err != nil {
		t.Fatal(err)
	}
	rw.Start, rw.Widths = start, z.Widths()
	for _, r := range recs {
		if err := rw.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := rw.Close(nil, Tally(recs)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAppendTableRow: rows drawn by appendTableRow are tablewriter's,
// byte for byte, on records with every field set at random (spaces
// around cells, wide and escaped characters, several flags to a cell).
func TestAppendTableRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	spaced := []string{"  lead", "trail  ", " both ", "漢字のホスト", "emoji \U0001F600 x", "a\u0301b", "plain"}
	for round := range 150 {
		recs := make([]*analyze.Record, 1+rng.IntN(60))
		for i := range recs {
			r := &analyze.Record{}
			fill(rng, reflect.ValueOf(r).Elem())
			r.HeadersEndAt = time.Unix(1700000000+int64(i), 0).UTC()
			if rng.IntN(2) == 0 {
				r.Request.UserAgent = spaced[rng.IntN(len(spaced))]
				r.Request.Host = spaced[rng.IntN(len(spaced))]
			}
			recs[i] = r
		}
		want := streamTable(t, recs, true)
		if got := streamTable(t, recs, false); !bytes.Equal(got, want) {
			t.Fatalf("round %d: rows differ from tablewriter's:\n got %s\nwant %s", round, got, want)
		}
	}
}
