package capture

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestChunkerGuess: Guess finds the first record that starts in each
// chunk of a pcap file in either byte order and either resolution, with
// records of varied sizes, also when the seconds cross a multiple of 2^24
// (the top byte Guess tests first changes there).
func TestChunkerGuess(t *testing.T) {
	for _, c := range []struct {
		order binary.AppendByteOrder
		nano  bool
		sec0  uint32
	}{
		{binary.LittleEndian, false, 1_714_564_800},
		{binary.BigEndian, false, 1_714_564_800},
		{binary.LittleEndian, true, 1_714_564_800},
		{binary.LittleEndian, false, 1<<24*102 - 3}, // top byte 101 -> 102
		{binary.BigEndian, true, 1<<24*102 - 3},
	} {
		t.Run(fmt.Sprintf("%v nano=%v sec0=%d", c.order, c.nano, c.sec0), func(t *testing.T) {
			file, starts := guessPcap(c.order, c.nano, c.sec0)
			path := filepath.Join(t.TempDir(), "g.pcap")
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			src, err := Open([]string{path}, Options{MapMin: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			const size = 4096
			ch := src.(*fileSource).Chunker(size)
			if ch == nil {
				t.Fatal("no Chunker for a mapped pcap file")
			}
			for i := range ch.Len() {
				lo := 24 + i*size
				k, _ := slices.BinarySearch(starts, lo)
				want := int64(-1)
				if k < len(starts) && starts[k] < lo+size {
					want = int64(starts[k])
				}
				if got := ch.Guess(i); got != want {
					t.Errorf("chunk %d [%d, %d): Guess %d, want %d", i, lo, lo+size, got, want)
				}
			}
		})
	}
}

// guessPcap is a pcap file of records of 40 to 1540 bytes whose payload
// is made of bytes that look like record headers as little as real data
// does, and the offsets of its records.
func guessPcap(order binary.AppendByteOrder, nano bool, sec0 uint32) ([]byte, []int) {
	var recs []rec
	var starts []int
	off := 24
	for i := range 2000 {
		n := 40 + (i*7919)%1500
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(i*31 + j*17)
		}
		ts := time.Unix(int64(sec0)+int64(i/100), int64(i*337%1000)*1000)
		recs = append(recs, rec{ts: ts, data: data})
		starts = append(starts, off)
		off += 16 + n
	}
	return pcapFile(order, nano, LinkEthernet, recs), starts
}
