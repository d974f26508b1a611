package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// openMappedFile writes data to a file and opens it mapped (any size).
func openMappedFile(t *testing.T, data []byte) Source {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("files are mapped on Linux only")
	}
	path := filepath.Join(t.TempDir(), "f.pcap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := Open([]string{path}, Options{MapMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !src.(FrameSource).Mapped() {
		t.Fatal("not mapped")
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func warnStrings(ws []*Warning) []string {
	var out []string
	for _, w := range ws {
		out = append(out, fmt.Sprintf("packet %d offset %d: %v", w.Packet, w.Offset, w.Err))
	}
	return out
}

// TestMappedSameAsStream cuts a pcap file at every byte and reads it
// mapped and as a stream: the same segments, warnings and counters.
func TestMappedSameAsStream(t *testing.T) {
	recs := session(t, linkCases[1], false, 4, t0)
	for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, nano := range []bool{false, true} {
			file := pcapFile(order, nano, LinkEthernet, recs)
			for cut := 4; cut <= len(file); cut++ {
				stream, err := openBytes(file[:cut])
				if err != nil {
					t.Fatal(err)
				}
				wantSegs, wantWarns := drain(t, stream)
				mapped := openMappedFile(t, file[:cut])
				segs, warns := drain(t, mapped)
				if fmt.Sprint(segs) != fmt.Sprint(wantSegs) {
					t.Errorf("cut %d: segments %v, want %v", cut, segs, wantSegs)
				}
				if fmt.Sprint(warnStrings(warns)) != fmt.Sprint(warnStrings(wantWarns)) {
					t.Errorf("cut %d: warnings %v, want %v", cut, warnStrings(warns), warnStrings(wantWarns))
				}
				if a, b := mapped.Stats(), stream.Stats(); a != b {
					t.Errorf("cut %d: stats %+v, want %+v", cut, a, b)
				}
			}
		}
	}
}

func TestMappedCorruptRecordLength(t *testing.T) {
	recs := session(t, linkCases[0], true, 3, t0)
	file := pcapFile(binary.LittleEndian, false, LinkEthernet, recs)
	off := 24 + 16 + len(recs[0].data)
	binary.LittleEndian.PutUint32(file[off+8:], 300000)
	segs, warns := drain(t, openMappedFile(t, file))
	if len(segs) != 1 || len(warns) != 1 {
		t.Fatalf("%d segments, warnings %v", len(segs), warns)
	}
	if w := warns[0]; !errors.Is(w, ErrCorrupt) || w.Packet != 2 || w.Offset != int64(off) || !strings.HasSuffix(w.Error(), "record length 300000 exceeds 262144") {
		t.Errorf("warning %v", w)
	}
}

// TestFramesDecodedApart decodes the frames of a mapped file with two
// Decoders taking turns, fragments deferred to a third in order: the same
// segments and, summed, the same counters as Next.
func TestFramesDecodedApart(t *testing.T) {
	recs := session(t, linkCases[0], false, 3, t0)
	ip := ipPacket(t, tpkt{payload: strings.Repeat("fragmented body ", 10), seq: 9})
	for _, f := range fragments(ip, 48, 96) {
		recs = append(recs, rec{ts: t0.Add(time01), data: linkCases[0].wrap(f)})
	}
	recs = append(recs, session(t, linkCases[0], false, 2, t0.Add(2*time01))...)
	file := pcapFile(binary.LittleEndian, true, LinkEthernet, recs)
	want, _ := drain(t, openMappedFile(t, file))
	wantStats := openMappedFileStats(t, file)
	if len(want) != 6 || want[3].Seq != 9 || wantStats.Reassembled != 1 {
		t.Fatalf("fragments not reassembled: %v %+v", want, wantStats)
	}

	src := openMappedFile(t, file).(FrameSource)
	decs := []*Decoder{NewDecoder(), NewDecoder()}
	seqd := NewDecoder()
	var segs []got
	var f Frame
	for n := uint64(1); ; n++ {
		err := src.NextFrame(&f)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var seg Segment
		ok, deferred := decs[n%2].DecodeFrame(&f, n, &seg, false)
		if deferred {
			ok, deferred = seqd.DecodeFrame(&f, n, &seg, true)
			if deferred {
				t.Fatal("deferred by the sequential decoder")
			}
		}
		if ok {
			segs = append(segs, got{seg.Packet, seg.Time, seg.Src, seg.Seq, string(seg.Payload), seg.LinkType})
		}
	}
	if fmt.Sprint(segs) != fmt.Sprint(want) {
		t.Errorf("segments\n%v\nwant\n%v", segs, want)
	}
	st := src.Stats()
	for _, d := range append(decs, seqd) {
		s := d.Stats()
		st.Packets += s.Packets
		st.Bytes += s.Bytes
		st.TCP += s.TCP
		st.NonTCP += s.NonTCP
		st.Fragments += s.Fragments
		st.Reassembled += s.Reassembled
		st.DecodeErrs += s.DecodeErrs
		st.Truncated += s.Truncated
	}
	if st != wantStats {
		t.Errorf("stats %+v, want %+v", st, wantStats)
	}
}

const time01 = 100_000_000 // 100 ms

func openMappedFileStats(t *testing.T, file []byte) Stats {
	src := openMappedFile(t, file)
	drain(t, src)
	return src.Stats()
}
