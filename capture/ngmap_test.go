package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// ngb writes pcapng by hand, so that byte orders, resolutions, offsets,
// obsolete and rare blocks and damage can all be produced.
type ngb struct {
	o binary.AppendByteOrder
	b []byte
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// opt is one option; code 0 is written as the end of options.
func (w *ngb) opt(b []byte, code uint16, v []byte) []byte {
	b = w.o.AppendUint16(b, code)
	b = w.o.AppendUint16(b, uint16(len(v)))
	return pad4(append(b, v...))
}

func (w *ngb) block(typ uint32, body []byte) *ngb {
	body = pad4(body)
	n := uint32(12 + len(body))
	w.b = w.o.AppendUint32(w.b, typ)
	w.b = w.o.AppendUint32(w.b, n)
	w.b = append(w.b, body...)
	w.b = w.o.AppendUint32(w.b, n)
	return w
}

func (w *ngb) shb() *ngb {
	b := w.o.AppendUint32(nil, ngOrderMagic)
	b = w.o.AppendUint16(b, 1)
	b = w.o.AppendUint16(b, 0)
	b = w.o.AppendUint64(b, ^uint64(0))
	b = w.opt(b, 4, []byte("expectscope test"))
	b = w.opt(b, 0, nil)
	return w.block(ngSHB, b)
}

// idb adds an interface; resol 0 leaves if_tsresol out (microseconds).
func (w *ngb) idb(link LinkType, snaplen uint32, resol byte, offset uint64) *ngb {
	b := w.o.AppendUint16(nil, uint16(link))
	b = w.o.AppendUint16(b, 0)
	b = w.o.AppendUint32(b, snaplen)
	b = w.opt(b, 2, []byte("eth0"))
	if resol != 0 {
		b = w.opt(b, ngOptTSResol, []byte{resol})
	}
	if offset != 0 {
		b = w.opt(b, ngOptTSOffset, w.o.AppendUint64(nil, offset))
	}
	b = w.opt(b, 0, nil)
	return w.block(ngIDB, b)
}

// epb adds a packet; units is the timestamp in its interface's units.
func (w *ngb) epb(iface uint32, units uint64, data []byte, wire int, comment bool) *ngb {
	b := w.o.AppendUint32(nil, iface)
	b = w.o.AppendUint32(b, uint32(units>>32))
	b = w.o.AppendUint32(b, uint32(units))
	b = w.o.AppendUint32(b, uint32(len(data)))
	b = w.o.AppendUint32(b, uint32(wire))
	b = pad4(append(b, data...))
	if comment {
		b = w.opt(b, 2, w.o.AppendUint32(nil, 1)) // epb_flags
		b = w.opt(b, 1, []byte("a comment"))
		b = w.opt(b, 0, nil)
	}
	return w.block(ngEPB, b)
}

func (w *ngb) pb(iface uint16, units uint64, data []byte) *ngb {
	b := w.o.AppendUint16(nil, iface)
	b = w.o.AppendUint16(b, 0)
	b = w.o.AppendUint32(b, uint32(units>>32))
	b = w.o.AppendUint32(b, uint32(units))
	b = w.o.AppendUint32(b, uint32(len(data)))
	b = w.o.AppendUint32(b, uint32(len(data)))
	return w.block(ngPB, append(b, data...))
}

func (w *ngb) spb(data []byte, wire int) *ngb {
	return w.block(ngSPB, append(w.o.AppendUint32(nil, uint32(wire)), data...))
}

func (w *ngb) isb(iface uint32) *ngb {
	b := w.o.AppendUint32(nil, iface)
	b = w.o.AppendUint64(b, 0)
	b = w.opt(b, 4, w.o.AppendUint64(nil, 10)) // isb_ifrecv
	b = w.opt(b, 0, nil)
	return w.block(ngISB, b)
}

func (w *ngb) nrb() *ngb {
	b := w.opt(nil, 1, append([]byte{10, 0, 0, 2}, "server\x00"...))
	b = w.opt(b, 2, append(make([]byte, 16), "v6\x00"...))
	b = w.opt(b, 7, []byte("unknown"))
	b = w.opt(b, 0, nil)
	b = w.opt(b, 1, []byte("a comment"))
	return w.block(ngNRB, w.opt(b, 0, nil))
}

// ngCase is a generated pcapng file.
type ngCase struct {
	name string
	file []byte
}

// ngCases builds pcapng files of every feature the reader handles, with
// TCP packets so that the segments can be compared too.
func ngCases(t testing.TB) []ngCase {
	recs := session(t, linkCases[0], false, 3, t0)
	sll := session(t, linkCases[4], false, 3, t0.Add(time01))
	raw := session(t, linkCases[8], true, 2, t0.Add(2*time01))
	units := func(r rec, resol byte, offset uint64) uint64 {
		sec := uint64(r.ts.Unix()) - offset
		ns := uint64(r.ts.Nanosecond())
		if resol&0x80 != 0 {
			e := resol & 0x7f
			return sec<<e | ns<<e/1e9
		}
		div := uint64(1)
		for range 9 - resol {
			div *= 10
		}
		per := uint64(1e9) / div
		return sec*per + ns/div
	}
	var cases []ngCase
	for _, o := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		w := &ngb{o: o}
		// Three interfaces: microseconds, nanoseconds with an offset, 2^-20.
		w.shb().idb(LinkEthernet, 65535, 0, 0).idb(LinkSLL2, 0, 9, 1000).nrb().idb(LinkRaw, 96, 0x80|20, 0)
		for i := range 3 {
			w.epb(0, units(recs[i], 6, 0), recs[i].data, len(recs[i].data), i == 1)
			w.epb(1, units(sll[i], 9, 1000), sll[i].data, len(sll[i].data)+10, false)
			if i < 2 {
				w.epb(2, units(raw[i], 0x80|20, 0), raw[i].data, len(raw[i].data), false)
			}
		}
		w.block(ngDSB, []byte("secrets!")).block(0x40000bad, []byte("custom"))
		w.spb(recs[2].data, len(recs[2].data)).pb(1, units(sll[0], 9, 1000), sll[0].data)
		w.isb(0).isb(2)
		// An interface described mid-file, then a second section (the
		// other byte order) with interfaces of its own.
		w.idb(LinkSLL, 0, 3, 0).epb(3, units(recs[0], 3, 0), linkCases[3].wrap(ipPacket(t, tpkt{seq: 77, payload: "late"})), 0, false)
		o2 := binary.AppendByteOrder(binary.BigEndian)
		if o == binary.BigEndian {
			o2 = binary.LittleEndian
		}
		w.o = o2
		w.shb().idb(LinkRaw, 0, 9, 0).epb(0, units(raw[0], 9, 0), raw[0].data, len(raw[0].data), false)
		w.epb(0, units(raw[1], 9, 0), raw[1].data, len(raw[1].data), true).isb(0)
		cases = append(cases, ngCase{fmt.Sprintf("features-%v", o), w.b})
	}
	var ngRecs []ngRec
	for _, r := range recs {
		ngRecs = append(ngRecs, ngRec{0, r})
	}
	for _, r := range sll {
		ngRecs = append(ngRecs, ngRec{1, r})
	}
	pg, _ := pcapngFile(t, []LinkType{LinkEthernet, LinkSLL2}, ngRecs)
	cases = append(cases, ngCase{"pcapgo", pg})
	return cases
}

// framesOf reads src with NextFrame: every frame and warning, in order.
func framesOf(t testing.TB, src Source) (out []string) {
	t.Helper()
	fs := src.(FrameSource)
	var f Frame
	for n := uint64(1); ; {
		if n > 1e6 {
			t.Fatal("source does not end")
		}
		err := fs.NextFrame(&f)
		if err == io.EOF {
			return out
		}
		var w *Warning
		if errors.As(err, &w) {
			out = append(out, fmt.Sprintf("warning packet %d offset %d: %v", w.Packet, w.Offset, w.Err))
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %v %d %d %x", n, f.Time, f.WireLen, f.Link, f.Data))
		n++
	}
}

// openFile opens a capture file mapped or as a stream.
func openFile(t testing.TB, path string, opt Options) Source {
	t.Helper()
	src, err := Open([]string{path}, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// checkNgSame requires the same frames, segments, warnings and counters
// from file mapped as from the stream.
func checkNgSame(t testing.TB, file []byte, maxPacket int) {
	t.Helper()
	path, done := memFile(t, file)
	defer done()
	open := func(opt Options) Source {
		t.Helper()
		opt.MaxPacket = maxPacket
		src, err := Open([]string{path}, opt)
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	stream := Options{NoMap: true}
	mapped := Options{MapMin: -1}
	s, m := open(stream), open(mapped)
	defer s.Close()
	defer m.Close()
	if !m.(FrameSource).Mapped() {
		t.Fatal("not mapped")
	}
	if got, want := framesOf(t, m), framesOf(t, s); !slices.Equal(got, want) {
		t.Fatalf("frames differ: %s", diffLines(got, want))
	}
	s, m = open(stream), open(mapped)
	defer s.Close()
	defer m.Close()
	wantSegs, wantWarns := drain(t, s)
	segs, warns := drain(t, m)
	if fmt.Sprint(segs) != fmt.Sprint(wantSegs) || fmt.Sprint(warnStrings(warns)) != fmt.Sprint(warnStrings(wantWarns)) {
		t.Fatalf("segments %v %v\nwant %v %v", segs, warnStrings(warns), wantSegs, warnStrings(wantWarns))
	}
	if a, b := m.Stats(), s.Stats(); a != b {
		t.Fatalf("stats %+v, want %+v", a, b)
	}
}

// diffLines shows the first line where a and b differ.
func diffLines(a, b []string) string {
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return fmt.Sprintf("line %d of %d/%d:\n got  %.300s\n want %.300s", i, len(a), len(b), x, y)
		}
	}
	return "same"
}

func skipUnlessLinux(t testing.TB) {
	if runtime.GOOS != "linux" {
		t.Skip("files are mapped on Linux only")
	}
}

// TestMappedNgSameAsStream reads generated pcapng files, whole and cut at
// every byte, mapped and as streams.
func TestMappedNgSameAsStream(t *testing.T) {
	skipUnlessLinux(t)
	dir := t.TempDir()
	for _, c := range ngCases(t) {
		t.Run(c.name, func(t *testing.T) {
			checkNgSame(t, c.file, 0)
			if n := len(framesOf(t, openFile(t, ngTemp(t, dir, c.file), Options{MapMin: -1}))); n < 7 {
				t.Fatalf("only %d frames", n)
			}
			for cut := 4; cut < len(c.file); cut++ {
				checkNgSame(t, c.file[:cut], 0)
			}
		})
	}
}

// ngTemp writes data to a new file in dir: a file already mapped is
// never written again.
func ngTemp(t testing.TB, dir string, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "*.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestMappedNgDamaged damages lengths, interface ids and resolutions in
// every block: the same frames and warnings as the stream.
func TestMappedNgDamaged(t *testing.T) {
	skipUnlessLinux(t)
	base := ngCases(t)[0].file
	le := binary.LittleEndian
	var blocks []int // block starts
	for p := 0; p+8 <= len(base); p += int(le.Uint32(base[p+4:])) {
		blocks = append(blocks, p)
	}
	set := func(off int, v uint32) []byte {
		b := bytes.Clone(base)
		if off+4 <= len(b) {
			le.PutUint32(b[off:], v)
		}
		return b
	}
	cases := map[string][]byte{}
	for i, p := range blocks {
		n := int(le.Uint32(base[p+4:]))
		for _, v := range []uint32{0, 4, 8, 12, 13, uint32(n) - 4, uint32(n) + 4, 1 << 20, 0xfffffff0} {
			cases[fmt.Sprintf("block %d length %d", i, v)] = set(p+4, v)
			cases[fmt.Sprintf("block %d trailer %d", i, v)] = set(p+n-4, v)
		}
		for _, v := range []uint32{1, 2, 3, 7, 0x80, 0xffff} {
			cases[fmt.Sprintf("block %d word 2 %d", i, v)] = set(p+8, v)  // interface id, link type, name record, ...
			cases[fmt.Sprintf("block %d word 5 %d", i, v)] = set(p+20, v) // caplen of EPB and PB, options
			cases[fmt.Sprintf("block %d word 6 %d", i, v)] = set(p+24, v)
		}
		if i > 0 { // the first one's type is the file's magic
			cases[fmt.Sprintf("block %d type 0", i)] = set(p, 0)
			cases[fmt.Sprintf("block %d type SHB", i)] = set(p, ngSHB)
		}
	}
	for _, res := range []byte{0, 1, 19, 63, 64, 127, 0x80, 0x80 | 63, 0x80 | 64, 0xff} {
		b := bytes.Clone(base)
		idx := bytes.Index(b, []byte{ngOptTSResol, 0, 1, 0, 9})
		b[idx+4] = res
		cases[fmt.Sprintf("tsresol %#x", res)] = b
	}
	cases["version 2"] = set(12, 2)
	cases["byte order"] = set(8, 0x12345678)
	cases["max packet"] = base
	for name, file := range cases {
		maxPacket := 0
		if name == "max packet" {
			maxPacket = 60
		}
		t.Run(name, func(t *testing.T) { checkNgSame(t, file, maxPacket) })
	}
}

// TestMappedNgTestdata reads the pcapng captures of testdata mapped and as
// streams.
func TestMappedNgTestdata(t *testing.T) {
	skipUnlessLinux(t)
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*", "*.pcapng.gz"))
	if len(files) == 0 {
		t.Fatal("no pcapng in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data := gunzipFile(t, f, -1)
			checkNgSame(t, data, 0)
			checkNgSame(t, data[:len(data)*2/3], 0)
		})
	}
}

// chunkFrames frames a mapped file with a Chunker as runChunked does: in
// chunk order, accepting a chunk only if it Follows the one before, with
// the guesses given (nil: Guess).
func chunkFrames(t testing.TB, path string, size int, guess func(c *Chunker, i int) int64) []string {
	t.Helper()
	src := openFile(t, path, Options{MapMin: -1})
	ch := src.(*fileSource).Chunker(size, size)
	if ch == nil {
		// A header error: the stream's warning.
		return framesOf(t, openFile(t, path, Options{MapMin: -1}))
	}
	if guess == nil {
		guess = (*Chunker).Guess
	}
	// Frame every chunk from its guess first, as the decoders do, in an
	// order that has later chunks framed before earlier ones.
	type framed struct {
		frames     []Frame
		start, end int64
		err        error
	}
	got := make([]framed, ch.Len())
	for _, i := range oddsThenEvens(ch.Len()) {
		g := guess(ch, i)
		got[i].start = g
		if g >= 0 {
			got[i].frames, got[i].end, got[i].err = ch.Frame(i, g, nil, nil)
		}
	}
	var out []string
	want := ch.Start()
	n := uint64(1)
	for i := range ch.Len() {
		f := got[i]
		if !ch.Follows(i, f.start, want) {
			f.frames, f.end, f.err = ch.Frame(i, want, nil, nil)
		}
		for _, fr := range f.frames {
			out = append(out, fmt.Sprintf("%d %v %d %d %x", n, fr.Time, fr.WireLen, fr.Link, fr.Data))
			n++
		}
		want = f.end
		if f.err != nil {
			w := ch.Fail(n, f.end, f.err)
			out = append(out, fmt.Sprintf("warning packet %d offset %d: %v", w.Packet, w.Offset, w.Err))
			break
		}
	}
	return out
}

func oddsThenEvens(n int) []int {
	var s []int
	for i := n - 1; i >= 0; i-- {
		if i%2 == 1 {
			s = append(s, i)
		}
	}
	for i := 0; i < n; i += 2 {
		s = append(s, i)
	}
	return s
}

// TestChunkedNgSameAsStream frames generated pcapng files in chunks of
// many sizes, with the guesses of Guess and with wrong ones, whole and
// cut: the frames and warning of reading from the start. The files have
// interfaces described mid-file and a second section, so chunks start in
// tables that the chunks before them change.
func TestChunkedNgSameAsStream(t *testing.T) {
	skipUnlessLinux(t)
	dir := t.TempDir()
	guesses := map[string]func(c *Chunker, i int) int64{
		"guess": nil,
		"none":  func(c *Chunker, i int) int64 { return -1 },
		"chunk start": func(c *Chunker, i int) int64 {
			lo, _ := c.bounds(i)
			return int64(lo)
		},
		"every third": func(c *Chunker, i int) int64 {
			if i%3 == 2 {
				return c.Guess(i) + 4
			}
			return c.Guess(i)
		},
	}
	for _, c := range ngCases(t) {
		for _, cut := range []int{len(c.file), len(c.file) - 3, len(c.file) * 2 / 3} {
			path := ngTemp(t, dir, c.file[:cut])
			want := framesOf(t, openFile(t, path, Options{NoMap: true}))
			for _, size := range []int{1, 16, 60, 100, 333, 1024, 1 << 20} {
				for gname, g := range guesses {
					got := chunkFrames(t, path, size, g)
					if !slices.Equal(got, want) {
						t.Fatalf("%s cut %d size %d %s: %s", c.name, cut, size, gname, diffLines(got, want))
					}
				}
			}
		}
	}
}

// TestChunkedNgStaleTable frames the chunks after a mid-file interface
// before the chunk that describes it: they are framed in the table
// without it, and Follows must refuse them.
func TestChunkedNgStaleTable(t *testing.T) {
	skipUnlessLinux(t)
	recs := session(t, linkCases[0], false, 40, t0)
	w := &ngb{o: binary.LittleEndian}
	w.shb().idb(LinkEthernet, 0, 9, 0)
	for i, r := range recs {
		units := uint64(r.ts.UnixNano())
		if i >= 20 {
			units /= 1000
		}
		if i == 20 {
			// A new section whose interface 0 has the same link type and
			// another resolution: only the times tell.
			w.shb().idb(LinkEthernet, 0, 6, 0)
		}
		w.epb(0, units, r.data, len(r.data), false)
	}
	path := ngTemp(t, t.TempDir(), w.b)
	want := framesOf(t, openFile(t, path, Options{NoMap: true}))
	for _, size := range []int{64, 200, 1000} {
		if got := chunkFrames(t, path, size, nil); !slices.Equal(got, want) {
			t.Fatalf("size %d: %s", size, diffLines(got, want))
		}
	}
}

// FuzzMappedNg reads arbitrary bytes as a pcapng file mapped, as a stream
// and in chunks: the same frames and warnings.
func FuzzMappedNg(f *testing.F) {
	for _, c := range ngCases(f) {
		f.Add(c.file, uint16(64))
	}
	f.Add(realPrefix(f, "corpus/direct/curl-nginx-put-continue-pcapng.pcapng.gz", 4096), uint16(500))
	f.Fuzz(func(t *testing.T, data []byte, size uint16) {
		skipUnlessLinux(t)
		if len(data) < 4 {
			return
		}
		data = bytes.Clone(data)
		copy(data, []byte{0x0a, 0x0d, 0x0d, 0x0a})
		path, done := memFile(t, data)
		defer done()
		want := framesOf(t, openFile(t, path, Options{NoMap: true}))
		if got := framesOf(t, openFile(t, path, Options{MapMin: -1})); !slices.Equal(got, want) {
			t.Fatalf("mapped: %s", diffLines(got, want))
		}
		if got := chunkFrames(t, path, int(size%2048)+1, nil); !slices.Equal(got, want) {
			t.Fatalf("chunked by %d: %s", size%2048+1, diffLines(got, want))
		}
	})
}

// benchFiles writes the same 20000 packets of 1514 bytes as pcap and as
// pcapng (as editcap -F pcapng writes it: one interface, nanosecond
// timestamps, enhanced packet blocks).
func benchFiles(b *testing.B) (pcap, ng string, size int64) {
	data := linkCases[0].wrap(ipPacket(b, tpkt{payload: string(bytes.Repeat([]byte("x"), 1460))}))
	var recs []rec
	for i := range 20000 {
		recs = append(recs, rec{ts: t0.Add(time.Duration(i) * time.Microsecond), data: data})
	}
	w := &ngb{o: binary.LittleEndian}
	w.shb().idb(LinkEthernet, 262144, 9, 0)
	for _, r := range recs {
		w.epb(0, uint64(r.ts.UnixNano()), r.data, len(r.data), false)
	}
	dir := b.TempDir()
	pcap, ng = filepath.Join(dir, "b.pcap"), filepath.Join(dir, "b.pcapng")
	if os.WriteFile(pcap, pcapFile(binary.LittleEndian, true, LinkEthernet, recs), 0o600) != nil || os.WriteFile(ng, w.b, 0o600) != nil {
		b.Fatal("cannot write")
	}
	return pcap, ng, int64(len(w.b))
}

// BenchmarkFrameMapped frames a mapped file, pcap and pcapng, record by
// record (NextFrame) and in chunks (Chunker, all chunks on one goroutine).
func BenchmarkFrameMapped(b *testing.B) {
	skipUnlessLinux(b)
	pcap, ng, size := benchFiles(b)
	for _, f := range []struct{ name, path string }{{"pcap", pcap}, {"pcapng", ng}} {
		b.Run(f.name+"/next", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				src, err := Open([]string{f.path}, Options{MapMin: -1})
				if err != nil {
					b.Fatal(err)
				}
				var fr Frame
				n := 0
				for src.(FrameSource).NextFrame(&fr) == nil {
					n++
				}
				src.Close()
				if n != 20000 {
					b.Fatalf("%d frames", n)
				}
			}
		})
		// Framing alone, and as the pipeline's decoders do: each record
		// decoded as soon as it is framed, while the next headers are
		// fetched.
		for _, decode := range []bool{false, true} {
			name := f.name + "/chunks"
			if decode {
				name += "+decode"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(size)
				var frames []Frame
				dec := NewDecoder()
				var seg Segment
				var each func(int, *Frame)
				n := 0
				if decode {
					each = func(k int, fr *Frame) {
						if ok, _ := dec.DecodeFrame(fr, uint64(k), &seg, false); ok {
							n++
						}
					}
				}
				for b.Loop() {
					src, err := Open([]string{f.path}, Options{MapMin: -1})
					if err != nil {
						b.Fatal(err)
					}
					ch := src.(*fileSource).Chunker(512<<10, 512<<10)
					n = 0
					framed := 0
					for i := range ch.Len() {
						frames, _, _ = ch.Frame(i, ch.Guess(i), frames[:0], each)
						framed += len(frames)
					}
					src.Close()
					if framed < 20000 || decode && n < 20000 {
						b.Fatalf("%d frames, %d segments", framed, n)
					}
				}
			})
		}
	}
}
