package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// session returns n TCP frames for a link case, seq numbers 1..n, payloads
// "p1".."pn", one millisecond apart, with a UDP packet after the first.
func session(t testing.TB, lc linkCase, v6 bool, n int, start time.Time) []rec {
	var recs []rec
	for i := 1; i <= n; i++ {
		ts := start.Add(time.Duration(i) * time.Millisecond).Add(123) // nanoseconds show resolution
		recs = append(recs, rec{ts: ts, data: lc.wrap(ipPacket(t, tpkt{v6: v6, seq: uint32(i), payload: fmt.Sprintf("p%d", i)}))})
		if i == 1 && !v6 {
			recs = append(recs, rec{ts: ts, data: lc.wrap(udpPacket(t))})
		}
	}
	return recs
}

const anyLink LinkType = 0xffff

func checkSession(t *testing.T, segs []got, n int, link LinkType, nano bool) {
	t.Helper()
	if len(segs) != n {
		t.Fatalf("got %d segments, want %d", len(segs), n)
	}
	for i, s := range segs {
		want := t0.Add(time.Duration(i+1) * time.Millisecond)
		if nano {
			want = want.Add(123)
		}
		if s.Seq != uint32(i+1) || s.Payload != fmt.Sprintf("p%d", i+1) || !s.Time.Equal(want) || link != anyLink && s.Link != link {
			t.Errorf("segment %d: %+v", i, s)
		}
	}
}

func TestOpenPcap(t *testing.T) {
	for _, lc := range linkCases {
		for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, nano := range []bool{false, true} {
				name := fmt.Sprintf("%s/%v/nano=%v", lc.name, order, nano)
				t.Run(name, func(t *testing.T) {
					v6 := lc.link == LinkSLL2 || lc.link == LinkLoop
					file := pcapFile(order, nano, lc.link, session(t, lc, v6, 5, t0))
					src, err := openBytes(file)
					if err != nil {
						t.Fatal(err)
					}
					defer src.Close()
					segs, warns := drain(t, src)
					if len(warns) > 0 {
						t.Fatalf("warnings: %v", warns)
					}
					checkSession(t, segs, 5, lc.link, nano)
					wantPkts := uint64(6)
					if v6 {
						wantPkts = 5
					}
					if st := src.Stats(); st.Packets != wantPkts || st.TCP != 5 || st.NonTCP != wantPkts-5 {
						t.Errorf("stats %+v", st)
					}
					// Packet numbers count every packet, the dropped ones too.
					if segs[1].Packet != wantPkts-3 {
						t.Errorf("second segment is packet %d", segs[1].Packet)
					}
				})
			}
		}
	}
}

func TestOpenPcapngMixedLinkTypes(t *testing.T) {
	links := []LinkType{LinkEthernet, LinkSLL2, LinkRaw, LinkNull}
	var recs []ngRec
	for i := 1; i <= 8; i++ {
		iface := i % len(links)
		lc := map[LinkType]linkCase{LinkEthernet: linkCases[0], LinkSLL2: linkCases[4], LinkRaw: linkCases[8], LinkNull: linkCases[5]}[links[iface]]
		recs = append(recs, ngRec{iface, rec{ts: t0.Add(time.Duration(i)*time.Millisecond + 123), data: lc.wrap(ipPacket(t, tpkt{v6: i%2 == 0, seq: uint32(i), payload: fmt.Sprintf("p%d", i)}))}})
	}
	file, _ := pcapngFile(t, links, recs)
	src, err := openBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	segs, warns := drain(t, src)
	if len(warns) > 0 {
		t.Fatal(warns)
	}
	checkSession(t, segs, 8, anyLink, true)
	for i, s := range segs {
		if s.Link != links[(i+1)%len(links)] {
			t.Errorf("segment %d: link %d", i, s.Link)
		}
	}
}

func TestOpenCompressed(t *testing.T) {
	pcap := pcapFile(binary.LittleEndian, false, LinkEthernet, session(t, linkCases[0], false, 5, t0))
	ng, _ := pcapngFile(t, []LinkType{LinkEthernet}, []ngRec{{0, session(t, linkCases[0], false, 1, t0)[0]}})
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	zs := func(b []byte) []byte {
		w, _ := zstd.NewWriter(nil)
		return w.EncodeAll(b, nil)
	}
	tests := []struct {
		name string
		file []byte
		n    int
	}{
		{"gzip", gz(pcap), 5},
		{"zstd", zs(pcap), 5},
		{"zstd of gzip", zs(gz(pcap)), 5},
		{"gzip pcapng", gz(ng), 1},
		{"zstd pcapng", zs(ng), 1},
		{"concatenated gzip", cat(gz(pcap[:100]), gz(pcap[100:])), 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := openBytes(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			segs, warns := drain(t, src)
			if len(segs) != tt.n || len(warns) != 0 {
				t.Errorf("%d segments, warnings %v", len(segs), warns)
			}
		})
	}
	// Too many layers is refused rather than unwrapped forever.
	deep := pcap
	for range maxWrappers + 1 {
		deep = gz(deep)
	}
	if _, err := openBytes(deep); err == nil || !strings.Contains(err.Error(), "layers") {
		t.Errorf("deep nesting: %v", err)
	}
	// A damaged gzip stream ends the file with a warning.
	bad := gz(pcap)
	bad[len(bad)-6] ^= 0xff // CRC
	src, err := openBytes(bad)
	if err != nil {
		t.Fatal(err)
	}
	segs, warns := drain(t, src)
	if len(segs) != 5 || len(warns) != 1 {
		t.Errorf("bad crc: %d segments, warnings %v", len(segs), warns)
	}
}

func TestOpenUnknownFormat(t *testing.T) {
	for _, data := range []string{"", "ab", "GET / HTTP/1.1\r\n\r\n", "\xa1\xb2\xc3"} {
		_, err := openBytes([]byte(data))
		if err == nil || !strings.Contains(err.Error(), "-: unknown file format") || !strings.Contains(err.Error(), fmt.Sprintf("%q", data[:min(len(data), 16)])) {
			t.Errorf("%q: %v", data, err)
		}
	}
	if _, err := Open([]string{filepath.Join(t.TempDir(), "missing.pcap")}, Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(nil, Options{}); err == nil {
		t.Error("no files: no error")
	}
}

// TestTruncatedEverywhere cuts files at every byte: never a panic; the
// segments in whole records come out, then one warning unless the cut
// fell between records, then io.EOF.
func TestTruncatedEverywhere(t *testing.T) {
	recs := session(t, linkCases[2], false, 4, t0)
	pcap := pcapFile(binary.BigEndian, true, LinkEthernet, recs)
	pcapEnds := []int{24}
	for _, r := range recs {
		pcapEnds = append(pcapEnds, pcapEnds[len(pcapEnds)-1]+16+len(r.data))
	}
	var ngRecs []ngRec
	for _, r := range recs {
		ngRecs = append(ngRecs, ngRec{0, r})
	}
	ng, ngEnds := pcapngFile(t, []LinkType{LinkEthernet}, ngRecs)
	// segsBefore is the number of TCP segments among the first k records.
	segsBefore := func(k int) int {
		if k >= 2 {
			return k - 1 // record 2 is UDP
		}
		return k
	}
	for _, tc := range []struct {
		name  string
		file  []byte
		ends  []int
		empty int // where a cut leaves a valid file with no interfaces
	}{{"pcap", pcap, pcapEnds, -1}, {"pcapng", ng, ngEnds, int(binary.LittleEndian.Uint32(ng[4:8]))}} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut < len(tc.file); cut++ {
				src, err := openBytes(tc.file[:cut])
				if cut < 4 {
					if err == nil {
						t.Errorf("cut %d: opened", cut)
					}
					continue
				}
				if err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				segs, warns := drain(t, src)
				whole, clean := 0, false
				for i, e := range tc.ends {
					if e <= cut {
						whole = i
					}
					clean = clean || e == cut
				}
				clean = clean || cut == tc.empty
				if len(segs) != segsBefore(whole) {
					t.Errorf("cut %d: %d segments, want %d", cut, len(segs), segsBefore(whole))
				}
				if clean != (len(warns) == 0) || len(warns) > 1 {
					t.Errorf("cut %d: warnings %v", cut, warns)
					continue
				}
				if len(warns) == 1 {
					w := warns[0]
					// Before the first packet pcapng may still be reading
					// interface blocks: the offset is where that began.
					if cut > tc.ends[0] && (w.Packet != uint64(whole+1) || w.Offset != int64(tc.ends[whole])) && (whole > 0 || tc.empty < 0) {
						t.Errorf("cut %d: warning at packet %d offset %d, want %d, %d: %v", cut, w.Packet, w.Offset, whole+1, tc.ends[whole], w)
					}
					if !errors.Is(w, io.ErrUnexpectedEOF) || w.File != "-" {
						t.Errorf("cut %d: %v", cut, w)
					}
					if st := src.Stats(); st.FileErrors != 1 {
						t.Errorf("cut %d: stats %+v", cut, st)
					}
				}
				// After the end, the end again.
				if _, err := src.Next(); err != io.EOF {
					t.Errorf("cut %d: after the end: %v", cut, err)
				}
			}
		})
	}
}

func TestCorruptRecordLength(t *testing.T) {
	recs := session(t, linkCases[0], true, 3, t0)
	file := pcapFile(binary.LittleEndian, false, LinkEthernet, recs)
	off := 24 + 16 + len(recs[0].data)
	binary.LittleEndian.PutUint32(file[off+8:], 300000) // caplen of record 2
	src, err := openBytes(file)
	if err != nil {
		t.Fatal(err)
	}
	segs, warns := drain(t, src)
	if len(segs) != 1 || len(warns) != 1 {
		t.Fatalf("%d segments, warnings %v", len(segs), warns)
	}
	w := warns[0]
	if !errors.Is(w, ErrCorrupt) || w.Packet != 2 || w.Offset != int64(off) {
		t.Errorf("warning %#v", w)
	}
	want := fmt.Sprintf("-: packet 2 at offset %d: corrupt capture file: record length 300000 exceeds 262144", off)
	if w.Error() != want {
		t.Errorf("message %q, want %q", w.Error(), want)
	}
	if st := src.Stats(); st.FileErrors != 1 || st.TCP != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestCorruptPcapng(t *testing.T) {
	recs := session(t, linkCases[0], true, 3, t0)
	var ngRecs []ngRec
	for _, r := range recs {
		ngRecs = append(ngRecs, ngRec{0, r})
	}
	file, ends := pcapngFile(t, []LinkType{LinkEthernet}, ngRecs)
	for _, garbage := range [][]byte{
		{6, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f},  // EPB claiming 2 GiB
		{6, 0, 0, 0, 4, 0, 0, 0},              // EPB shorter than its header
		{6, 0, 0, 0, 64, 0, 0, 0, 9, 0, 0, 0}, // EPB on an interface that does not exist
	} {
		bad := cat(file[:ends[1]], garbage, make([]byte, 60), file[ends[1]:])
		src, err := openBytes(bad)
		if err != nil {
			t.Fatal(err)
		}
		segs, warns := drain(t, src)
		if len(segs) != 1 || len(warns) != 1 || warns[0].Packet != 2 || warns[0].Offset != int64(ends[1]) {
			t.Errorf("garbage %x: %d segments, warnings %v", garbage, len(segs), warns)
		}
	}
}

// writeFile writes data to a file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMergeOrder(t *testing.T) {
	dir := t.TempDir()
	lc := linkCases[0]
	mk := func(seq uint32, ms int) rec {
		return rec{ts: t0.Add(time.Duration(ms) * time.Millisecond), data: lc.wrap(ipPacket(t, tpkt{seq: seq, payload: "x"}))}
	}
	// a and b interleave and tie at 3 ms (file order wins); c is pcapng
	// and ends in a cut record; d is empty apart from its header.
	a := writeFile(t, dir, "a", pcapFile(binary.LittleEndian, false, LinkEthernet, []rec{mk(11, 1), mk(12, 3), mk(13, 5)}))
	b := writeFile(t, dir, "b", pcapFile(binary.BigEndian, true, LinkEthernet, []rec{mk(21, 2), mk(22, 3), mk(23, 4), mk(24, 9)}))
	ng, _ := pcapngFile(t, []LinkType{LinkEthernet}, []ngRec{{0, mk(31, 0)}, {0, mk(32, 6)}, {0, mk(33, 7)}})
	c := writeFile(t, dir, "c", ng[:len(ng)-10])
	d := writeFile(t, dir, "d", pcapFile(binary.LittleEndian, false, LinkEthernet, nil))
	src, err := Open([]string{a, b, c, d}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var order []uint32
	var warns []*Warning
	var prev *Segment
	var prevPayload string
	for {
		seg, err := src.Next()
		if err == io.EOF {
			break
		}
		if w := (*Warning)(nil); errors.As(err, &w) {
			warns = append(warns, w)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil && string(prev.Payload) != prevPayload {
			t.Error("payload changed before the next call")
		}
		if seg.Packet != uint64(len(order)+1) {
			t.Errorf("segment %d is packet %d", len(order), seg.Packet)
		}
		order = append(order, seg.Seq)
		prev, prevPayload = seg, string(seg.Payload)
	}
	want := []uint32{31, 11, 21, 12, 22, 23, 13, 32, 24}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("order %v, want %v", order, want)
	}
	if len(warns) != 1 || warns[0].File != c || warns[0].Packet != 3 {
		t.Errorf("warnings %v", warns)
	}
	if st := src.Stats(); st.FileErrors != 1 || st.Packets != 9 {
		t.Errorf("stats %+v", st)
	}
}

func TestPcapWriterRoundTrip(t *testing.T) {
	recs := session(t, linkCases[1], false, 4, t0)
	recs[2].wire = len(recs[2].data) + 50 // as if cut by snaplen
	recs[2].data = recs[2].data[:len(recs[2].data)-1]
	src, err := openBytes(pcapFile(binary.LittleEndian, true, LinkEthernet, recs))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w, err := NewPcapWriter(&out, LinkEthernet, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []got
	for {
		seg, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteSegment(seg); err != nil {
			t.Fatal(err)
		}
		want = append(want, got{uint64(len(want) + 1), seg.Time, seg.Src, seg.Seq, string(seg.Payload), seg.LinkType})
	}
	back, err := openBytes(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	segs, warns := drain(t, back)
	if fmt.Sprint(segs) != fmt.Sprint(want) || len(warns) > 0 {
		t.Errorf("read back %v, want %v (%v)", segs, want, warns)
	}
	if st := back.Stats(); st.Truncated != 1 {
		t.Errorf("snaplen cut lost: %+v", st)
	}
	if err := w.WriteSegment(&Segment{LinkType: LinkSLL2}); err == nil {
		t.Error("wrote a frame of another link type")
	}
}

func BenchmarkReadFile(b *testing.B) {
	file := filepath.Join("..", "testdata", "corpus", "direct", "curl-nginx-post-continue.pcap.gz")
	f, err := os.Open(file)
	if err != nil {
		b.Skip(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "x.pcap")
	os.WriteFile(path, data, 0o644)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var pkts uint64
	for b.Loop() {
		src, err := Open([]string{path}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := src.Next(); err != nil {
				break
			}
		}
		pkts = src.Stats().Packets
		src.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(uint64(b.N)*pkts), "ns/packet")
}
