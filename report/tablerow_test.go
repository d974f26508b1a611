package report

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
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

// TestDrawTable holds drawTable to the bytes newTable's tablewriter
// renders for the same table, and checks that it declines the tables it
// does not draw.
func TestDrawTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	words := []string{"", " ", "a", "count", "  lead", "trail  ", " both ", "127.0.0.1:80", "p50 / p90 / p99", "|", "-", "x y  z", "rejected 1", "1.000"}
	odd := []string{"漢字", "two\nlines", "tab\there", "\x1b[31mred"}
	tw := func(header []string, rows [][]string) []byte {
		var buf bytes.Buffer
		tb := newTable(&buf, header)
		for _, r := range rows {
			if err := tb.Append(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := tb.Render(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	drawn := 0
	for round := range 500 {
		cols := 1 + rng.IntN(6)
		cell := func() string {
			if rng.IntN(40) == 0 {
				return odd[rng.IntN(len(odd))]
			}
			w := words[rng.IntN(len(words))]
			if rng.IntN(5) == 0 {
				w += strings.Repeat("w", rng.IntN(30))
			}
			return w
		}
		header := make([]string, cols)
		for i := range header {
			header[i] = cell()
		}
		rows := make([][]string, rng.IntN(8))
		for r := range rows {
			rows[r] = make([]string, cols)
			for i := range rows[r] {
				rows[r][i] = cell()
			}
		}
		got, ok := drawTable(nil, header, rows)
		plain := len(rows) > 0 && strings.TrimSpace(strings.Join(header, "")) != ""
		for _, r := range append([][]string{header}, rows...) {
			for _, c := range r {
				if strings.ContainsFunc(c, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
					plain = false
				}
			}
		}
		if ok != plain {
			t.Fatalf("round %d: drawTable drew=%v, want %v for %q %q", round, ok, plain, header, rows)
		}
		if !ok {
			continue
		}
		drawn++
		if want := tw(header, rows); !bytes.Equal(got, want) {
			t.Fatalf("round %d: %q %q:\n got\n%s\nwant\n%s", round, header, rows, got, want)
		}
	}
	if drawn < 250 {
		t.Fatalf("only %d of 500 tables drawn: the test checks too little", drawn)
	}
}
