package capture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
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
			src := openMappedFile(t, file)
			const size = 4096
			ch := src.(*fileSource).Chunker(size, size)
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

// guessByScan is Guess as it was, testing every offset's top byte of the
// seconds in turn: the reference for TestGuessSameAsScan.
func guessByScan(c *Chunker, i int) int64 {
	if i == 0 {
		return c.Start()
	}
	lo, hi := c.bounds(i)
	m := c.mm.m
	top, at := byte(c.sec0>>24), 3
	if c.pr.big {
		at = 0
	}
	for p := lo; p < hi && p-lo < c.window(); p++ {
		if p+16 <= len(m) && m[p+at]-top+1 > 2 {
			continue
		}
		if c.plausible(p) {
			return int64(p)
		}
	}
	return -1
}

// TestGuessSameAsScan: Guess, which jumps to the offsets whose top byte
// of the seconds is near the first record's, returns what testing every
// offset returns, on records of 40 bytes to 100 KiB (a chunk may hold no
// record start at all) whose payload is random, full of the top byte or
// of its neighbours (every offset a candidate), in both byte orders, at
// chunk sizes that cut records anywhere.
func TestGuessSameAsScan(t *testing.T) {
	const sec0 = 1<<24*107 + 5
	top := byte(sec0 >> 24)
	rng := rand.New(rand.NewPCG(1, 2))
	fills := map[string]func([]byte){
		"random":     func(b []byte) { fillRandom(rng, b) },
		"top":        func(b []byte) { fill(b, top) },
		"neighbours": func(b []byte) { fill(b, top-1, top+1, top) },
		"zero":       func(b []byte) { fill(b, 0) },
	}
	for name, f := range fills {
		for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
			var recs []rec
			for i := range 300 {
				n := 40 + rng.IntN(1500)
				if i%3 == 0 {
					n = 1 + rng.IntN(100<<10)
				}
				data := make([]byte, n)
				f(data)
				recs = append(recs, rec{ts: time.Unix(sec0+int64(i), int64(i)*1000), data: data})
			}
			file := pcapFile(order, false, LinkEthernet, recs)
			for _, size := range []int{4093, 65536, 512 << 10} {
				src := openMappedFile(t, file)
				ch := src.(*fileSource).Chunker(size, size)
				found := 0
				for i := range ch.Len() {
					want := guessByScan(ch, i)
					if got := ch.Guess(i); got != want {
						t.Errorf("%s %v size %d chunk %d: Guess %d, scanning %d", name, order, size, i, got, want)
					}
					if want > 0 {
						found++
					}
				}
				if found == 0 {
					t.Errorf("%s %v size %d: no record found in %d chunks", name, order, size, ch.Len())
				}
			}
		}
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

func fill(b []byte, vals ...byte) {
	for i := range b {
		b[i] = vals[i%len(vals)]
	}
}

// BenchmarkGuess guesses the first record of every 512 KiB chunk of
// 64 KiB records of random payload (loopback with GRO), the size where
// the guesses cost most: half a record to search per chunk.
func BenchmarkGuess(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []rec
	for i := range 800 {
		data := make([]byte, 65483+rng.IntN(66))
		fillRandom(rng, data)
		recs = append(recs, rec{ts: time.Unix(1_796_448_645, int64(i)*1000), data: data})
	}
	path := filepath.Join(b.TempDir(), "g.pcap")
	if err := os.WriteFile(path, pcapFile(binary.LittleEndian, false, LinkEthernet, recs), 0o600); err != nil {
		b.Fatal(err)
	}
	src, err := Open([]string{path}, Options{MapMin: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	ch := src.(*fileSource).Chunker(512<<10, 512<<10)
	b.SetBytes(int64(ch.Len()) * 512 << 10)
	for b.Loop() {
		for i := 1; i < ch.Len(); i++ {
			if ch.Guess(i) < 0 {
				b.Fatal("no record found")
			}
		}
	}
}

// TestChunkerGrowsForLargeRecords: chunks hold about chunkRecords of the
// first records when those are large (64 KiB, as loopback and GRO give),
// within the bounds given, and stay at the size asked for small ones;
// grown or not, framing every chunk from its guess gives every record
// once, in order, for pcap and pcapng.
func TestChunkerGrowsForLargeRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		name     string
		min, max int // record lengths
		want     func(size int) bool
	}{
		{"64 KiB", 65000, 65535, func(size int) bool { return size >= 64*65016 && size <= 8<<20 }},
		{"MSS", 40, 1514, func(size int) bool { return size == 512<<10 }},
		{"256 KiB, capped", 200 << 10, 256 << 10, func(size int) bool { return size == 8<<20 }},
	} {
		var recs []rec
		for i := range 400 {
			data := make([]byte, c.min+rng.IntN(c.max-c.min+1))
			fillRandom(rng, data)
			recs = append(recs, rec{ts: t0.Add(time.Duration(i) * time.Millisecond), data: data})
		}
		for _, ng := range []bool{false, true} {
			file := pcapFile(binary.LittleEndian, false, LinkEthernet, recs)
			if ng {
				var nrecs []ngRec
				for _, r := range recs {
					nrecs = append(nrecs, ngRec{rec: r})
				}
				file, _ = pcapngFile(t, []LinkType{LinkEthernet}, nrecs)
			}
			ch := openMappedFile(t, file).(*fileSource).Chunker(512<<10, 8<<20)
			if !c.want(ch.Size()) {
				t.Errorf("%s ng=%v: chunks of %d bytes", c.name, ng, ch.Size())
			}
			var got int
			pos := ch.Start()
			for i := range ch.Len() {
				lo, hi := ch.bounds(i)
				if g := ch.Guess(i); pos < int64(hi) && g != pos || pos >= int64(hi) && g != -1 {
					t.Fatalf("%s ng=%v: chunk %d [%d, %d) guessed at %d, the next record starts at %d", c.name, ng, i, lo, hi, g, pos)
				}
				if pos >= int64(hi) {
					continue // no record starts in it
				}
				frames, end, err := ch.Frame(i, pos, nil, nil)
				if err != nil && err != io.EOF {
					t.Fatalf("%s ng=%v: chunk %d: %v", c.name, ng, i, err)
				}
				for _, f := range frames {
					if !bytes.Equal(f.Data, recs[got].data) {
						t.Fatalf("%s ng=%v: record %d differs", c.name, ng, got)
					}
					got++
				}
				pos = end
			}
			if got != len(recs) {
				t.Errorf("%s ng=%v: %d records framed, want %d", c.name, ng, got, len(recs))
			}
		}
	}
}
