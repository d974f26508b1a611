package pipeline_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/analyze"
	"github.com/expectscope/expectscope/capture"
	"github.com/expectscope/expectscope/pipeline"
	"github.com/expectscope/expectscope/reassembly"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The bad-input suite: every hostile or broken capture here is generated
// by the test, never a hand-edited file.

var rt0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// capBuilder synthesises an Ethernet pcap with gopacket.
type capBuilder struct {
	t    testing.TB
	now  time.Time
	snap int // 0: whole frames
	buf  bytes.Buffer
	w    *capture.PcapWriter
	n    int
	sbuf gopacket.SerializeBuffer
}

func newCap(t testing.TB, snap int) *capBuilder {
	b := &capBuilder{t: t, now: rt0, snap: snap, sbuf: gopacket.NewSerializeBuffer()}
	w, err := capture.NewPcapWriter(&b.buf, capture.LinkEthernet, uint32(max(snap, 0)))
	if err != nil {
		t.Fatal(err)
	}
	b.w = w
	return b
}

// packet writes one TCP segment from src to dst, dt after the previous one.
func (b *capBuilder) packet(dt time.Duration, src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) {
	b.now = b.now.Add(dt)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{0, 1, 2, 3, 4, 5}, DstMAC: net.HardwareAddr{0, 1, 2, 3, 4, 6}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, Window: 65535,
		FIN: flags&capture.FlagFIN != 0, SYN: flags&capture.FlagSYN != 0, RST: flags&capture.FlagRST != 0,
		PSH: flags&capture.FlagPSH != 0, ACK: flags&capture.FlagACK != 0}
	tcp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(b.sbuf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		b.t.Fatal(err)
	}
	frame := b.sbuf.Bytes()
	wire := len(frame)
	if b.snap > 0 && len(frame) > b.snap {
		frame = frame[:b.snap]
	}
	if err := b.w.WritePacket(b.now, wire, frame); err != nil {
		b.t.Fatal(err)
	}
	b.n++
}

func (b *capBuilder) bytes() []byte { return b.buf.Bytes() }

// flow is one TCP connection in a capBuilder.
type flow struct {
	b          *capBuilder
	c, s       netip.AddrPort
	cseq, sseq uint32
}

// conn opens a connection with a captured handshake; the ISNs are given
// so that wraparound can be placed.
func (b *capBuilder) conn(client, server string, cisn, sisn uint32) *flow {
	f := &flow{b: b, c: netip.MustParseAddrPort(client), s: netip.MustParseAddrPort(server), cseq: cisn, sseq: sisn}
	b.packet(time.Millisecond, f.c, f.s, f.cseq, 0, capture.FlagSYN, nil)
	b.packet(100*time.Microsecond, f.s, f.c, f.sseq, f.cseq+1, capture.FlagSYN|capture.FlagACK, nil)
	f.cseq++
	f.sseq++
	b.packet(100*time.Microsecond, f.c, f.s, f.cseq, f.sseq, capture.FlagACK, nil)
	return f
}

// send writes data from the client (or the server) in segments of mss
// bytes, dt after the previous packet.
func (f *flow) send(fromClient bool, dt time.Duration, data string) {
	const mss = 1460
	for i := 0; i < len(data) || i == 0 && len(data) == 0; i += mss {
		p := data[i:min(i+mss, len(data))]
		if fromClient {
			f.b.packet(dt, f.c, f.s, f.cseq, f.sseq, capture.FlagACK|capture.FlagPSH, []byte(p))
			f.cseq += uint32(len(p))
		} else {
			f.b.packet(dt, f.s, f.c, f.sseq, f.cseq, capture.FlagACK|capture.FlagPSH, []byte(p))
			f.sseq += uint32(len(p))
		}
		dt = 10 * time.Microsecond
		if len(data) == 0 {
			break
		}
	}
}

func (f *flow) c2s(dt time.Duration, data string) { f.send(true, dt, data) }
func (f *flow) s2c(dt time.Duration, data string) { f.send(false, dt, data) }

func (f *flow) fin() {
	f.b.packet(100*time.Microsecond, f.c, f.s, f.cseq, f.sseq, capture.FlagFIN|capture.FlagACK, nil)
	f.b.packet(100*time.Microsecond, f.s, f.c, f.sseq, f.cseq+1, capture.FlagFIN|capture.FlagACK, nil)
	f.cseq++
	f.sseq++
	f.b.packet(100*time.Microsecond, f.c, f.s, f.cseq, f.sseq, capture.FlagACK, nil)
}

const (
	putHead  = "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
	cont     = "HTTP/1.1 100 Continue\r\n\r\n"
	okResp   = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	body10   = "0123456789"
	cliAddr  = "10.0.0.1:40000"
	srvAddr  = "10.0.0.2:80"
	srvAddr2 = "10.0.0.3:80"
)

// continued writes one whole continued negotiation on a new connection.
func continued(b *capBuilder, client string) {
	f := b.conn(client, srvAddr, 1000, 5000)
	f.c2s(time.Millisecond, putHead)
	f.s2c(time.Millisecond, cont)
	f.c2s(time.Millisecond, body10)
	f.s2c(time.Millisecond, okResp)
	f.fin()
}

type outcome struct {
	recs  []*analyze.Record
	res   *pipeline.Result
	err   error
	warns []string
}

// runData runs the pipeline over an in-memory capture, as stdin.
func runData(t testing.TB, data []byte, opt pipeline.Options) outcome {
	t.Helper()
	var o outcome
	src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(data)})
	if err != nil {
		o.err = err
		return o
	}
	defer src.Close()
	opt.Analyze.All = true
	opt.Analyze.Emit = func(r *analyze.Record) { o.recs = append(o.recs, r) }
	opt.Warn = func(e error) { o.warns = append(o.warns, e.Error()) }
	o.res, o.err = pipeline.Run(context.Background(), src, opt)
	return o
}

func (o outcome) negotiations() []*analyze.Record {
	var out []*analyze.Record
	for _, r := range o.recs {
		if r.Type == analyze.TypeNegotiation {
			out = append(out, r)
		}
	}
	return out
}

func (o outcome) counter(name string) uint64 {
	if o.res == nil {
		return 0
	}
	c, ok := o.res.Counters()[name]
	if !ok {
		panic("no counter " + name)
	}
	return c
}

func gunzipFile(t testing.TB, path string) []byte {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pcapRecords returns the offset of every record of a classic pcap file
// and its timestamp, and the file's end.
func pcapRecords(t testing.TB, data []byte) (offs []int, times []time.Time) {
	t.Helper()
	var order binary.ByteOrder = binary.LittleEndian
	nano := false
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4:
	case 0xa1b23c4d:
		nano = true
	default:
		order = binary.BigEndian
		nano = order.Uint32(data) == 0xa1b23c4d
	}
	for off := 24; off+16 <= len(data); {
		sec, frac := order.Uint32(data[off:]), order.Uint32(data[off+4:])
		if !nano {
			frac *= 1000
		}
		offs = append(offs, off)
		times = append(times, time.Unix(int64(sec), int64(frac)).UTC())
		off += 16 + int(order.Uint32(data[off+8:]))
	}
	return offs, times
}

// settled is the capture time after which nothing can change a record:
// its last own timestamp, and that of the retry linked to it.
func settled(r *analyze.Record, byID map[string]*analyze.Record) time.Time {
	last := r.HeadersEndAt
	later := func(t time.Time) {
		if t.After(last) {
			last = t
		}
	}
	for _, i := range r.Interim {
		later(i.At)
	}
	if r.Final != nil {
		later(r.Final.At)
	}
	if r.BodyEndAt != nil {
		later(*r.BodyEndAt)
	}
	if r.RetriedBy != nil {
		if o := byID[*r.RetriedBy]; o != nil {
			later(o.HeadersEndAt)
		}
	}
	// A final before the body leaves the framing of the next bytes open
	// until the server answers the next request on the connection.
	if r.AfterEarlyFinal != "" {
		var pkt, n int
		fmt.Sscanf(r.ID, "%d-%d", &pkt, &n)
		if o := byID[fmt.Sprintf("%d-%d", pkt, n+1)]; o != nil {
			later(o.HeadersEndAt)
			if o.Final != nil {
				later(o.Final.At)
			}
		}
	}
	return last
}

// recDiff lists the top-level fields in which two records differ.
func recDiff(got, want *analyze.Record) string {
	var g, w map[string]json.RawMessage
	bg, _ := json.Marshal(got)
	bw, _ := json.Marshal(want)
	json.Unmarshal(bg, &g)
	json.Unmarshal(bw, &w)
	var out []string
	for k := range w {
		if string(g[k]) != string(w[k]) {
			out = append(out, fmt.Sprintf("%s: got %s want %s", k, g[k], w[k]))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			out = append(out, fmt.Sprintf("%s: got %s want none", k, g[k]))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// TestTruncatedCorpus cuts good captures at every record boundary and in
// the middle of every record (in its header, and in its frame). The rule:
// a record of the full run whose exchange was complete before the cut —
// its final response arrived, and its body (and the retry linked to it)
// ended, at or before the time of the last whole packet kept; after a
// final before the body, the next request on the connection was answered
// too (it decides how the bytes after the final were framed); and, for a
// record retired by its connection's end (conn_end set, or the client's
// close decided what followed a final before the body), the connection's
// last packet was kept — appears identically. Every other record
// of the truncated run is one the full run also has (same id), possibly
// with another verdict: undecided at the cut. A cut inside a record warns
// with the file, the packet number and the record's offset.
func TestTruncatedCorpus(t *testing.T) {
	files, _ := filepath.Glob("../testdata/corpus/*/*.pcap.gz")
	if len(files) == 0 {
		t.Skip("no corpus")
	}
	// A handful keeps CI fast; EXPECTSCOPE_TRUNC_ALL=1 runs them all.
	if os.Getenv("EXPECTSCOPE_TRUNC_ALL") == "" {
		keep := []string{"curl-nginx-put-continue.pcap.gz", "curl-nginx-417-retry-desync.pcap.gz",
			"raw-pipelined-expect.pcap.gz", "curl-chunked-expect-multi.pcap.gz", "curl-rawsrv-417-keepalive-retry.pcap.gz"}
		files = slices.DeleteFunc(files, func(f string) bool { return !slices.Contains(keep, filepath.Base(f)) })
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data := gunzipFile(t, path)
			full := runData(t, data, pipeline.Options{})
			if full.err != nil {
				t.Fatal(full.err)
			}
			byID := map[string]*analyze.Record{}
			for _, r := range full.recs {
				byID[r.ID] = r
			}
			offs, times := pcapRecords(t, data)
			ends := connLast(t, data)
			type cut struct {
				at   int
				kept int // whole records kept
				mid  bool
			}
			var cuts []cut
			for i, off := range offs {
				cuts = append(cuts, cut{off, i, false})
				cuts = append(cuts, cut{off + 7, i, true})
				end := len(data)
				if i+1 < len(offs) {
					end = offs[i+1]
				}
				cuts = append(cuts, cut{(off + 16 + end) / 2, i, true})
			}
			cuts = append(cuts, cut{len(data), len(offs), false})
			for _, c := range cuts {
				o := runData(t, data[:c.at], pipeline.Options{Workers: 1 + c.at%3})
				if c.kept == 0 && !c.mid {
					continue // a bare header: nothing to check but no panic
				}
				if o.err != nil && c.kept > 0 {
					t.Fatalf("cut at %d: %v", c.at, o.err)
				}
				if c.mid {
					want := fmt.Sprintf("-: packet %d at offset %d:", c.kept+1, offs[c.kept])
					if len(o.warns) == 0 || !strings.HasPrefix(o.warns[0], want) {
						t.Errorf("cut at %d: warnings %q, want one starting %q", c.at, o.warns, want)
					}
					if o.counter("file_errors") != 1 {
						t.Errorf("cut at %d: file_errors %d", c.at, o.counter("file_errors"))
					}
				} else if len(o.warns) > 0 {
					t.Errorf("cut at record boundary %d: warnings %q", c.at, o.warns)
				}
				if c.kept == 0 {
					continue
				}
				cutTime := times[c.kept-1]
				got := map[string]*analyze.Record{}
				for _, r := range o.recs {
					if byID[r.ID] == nil {
						t.Errorf("cut at %d: record %s not in the full run", c.at, r.ID)
					}
					if got[r.ID] != nil {
						t.Errorf("cut at %d: record %s twice", c.at, r.ID)
					}
					got[r.ID] = r
				}
				for _, r := range full.recs {
					if settled(r, byID).After(cutTime) || (r.ConnEnd != "" || r.AfterEarlyFinal == "close") && ends[r.Conn.Client+"|"+r.Conn.Server].After(cutTime) {
						continue
					}
					g := got[r.ID]
					if g == nil {
						t.Errorf("cut at %d (%d packets): record %s settled by %v missing", c.at, c.kept, r.ID, settled(r, byID))
						continue
					}
					if d := recDiff(g, r); d != "" {
						t.Errorf("cut at %d (%d packets): record %s differs: %s", c.at, c.kept, r.ID, d)
					}
				}
			}
		})
	}
}

// connLast returns the capture time of the last packet of every
// connection (keyed as client|server in either order).
func connLast(t testing.TB, data []byte) map[string]time.Time {
	t.Helper()
	src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	last := map[string]time.Time{}
	for {
		seg, err := src.Next()
		if err != nil {
			return last
		}
		for _, k := range []string{seg.Src.String() + "|" + seg.Dst.String(), seg.Dst.String() + "|" + seg.Src.String()} {
			if seg.Time.After(last[k]) {
				last[k] = seg.Time
			}
		}
	}
}

// TestCorruptRecordLength: a record whose length field is absurd ends the
// file with a warning naming the packet and offset; what came before is
// kept.
func TestCorruptRecordLength(t *testing.T) {
	b := newCap(t, 0)
	continued(b, cliAddr)
	good := bytes.Clone(b.bytes())
	continued(b, "10.0.0.9:40001")
	data := b.bytes()
	offs, _ := pcapRecords(t, good)
	n := len(offs)
	binary.LittleEndian.PutUint32(data[len(good)+8:], 0xfffffff0) // incl_len of the next record
	o := runData(t, data, pipeline.Options{})
	if o.err != nil {
		t.Fatal(o.err)
	}
	want := fmt.Sprintf("-: packet %d at offset %d:", n+1, len(good))
	if len(o.warns) != 1 || !strings.HasPrefix(o.warns[0], want) {
		t.Fatalf("warnings %q, want %q...", o.warns, want)
	}
	if ng := o.negotiations(); len(ng) != 1 || ng[0].Verdict != analyze.Continued {
		t.Fatalf("negotiations %v", ng)
	}
}

// TestCorruptPcapngBlock: a pcapng block with a broken length in the
// middle of a real capture.
func TestCorruptPcapngBlock(t *testing.T) {
	data := gunzipFile(t, "../testdata/corpus/direct/curl-nginx-put-continue-pcapng.pcapng.gz")
	full := runData(t, data, pipeline.Options{})
	// Walk the blocks; corrupt the length of the 4th enhanced packet block.
	off, epb := 0, 0
	for off+12 <= len(data) {
		typ := binary.LittleEndian.Uint32(data[off:])
		l := int(binary.LittleEndian.Uint32(data[off+4:]))
		if typ == 6 {
			epb++
			if epb == 4 {
				binary.LittleEndian.PutUint32(data[off+4:], 13) // not a multiple of 4, too short
				break
			}
		}
		off += l
	}
	o := runData(t, data, pipeline.Options{})
	if o.err != nil || len(o.warns) == 0 || !strings.Contains(o.warns[0], fmt.Sprintf("offset %d", off)) {
		t.Fatalf("err %v warnings %q (block at %d)", o.err, o.warns, off)
	}
	if o.res.Capture.Packets >= full.res.Capture.Packets {
		t.Fatalf("read %d packets of %d", o.res.Capture.Packets, full.res.Capture.Packets)
	}
}

// TestHostileCaptures runs every generated hostile capture through the
// pipeline: no panic, no error once one packet was read, and the anomaly
// shows in the counters.
func TestHostileCaptures(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	randBytes := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return string(b)
	}
	tests := []struct {
		name  string
		build func(b *capBuilder)
		snap  int
		check func(t *testing.T, o outcome)
	}{
		{"snaplen 96", func(b *capBuilder) {
			continued(b, cliAddr)
		}, 96, func(t *testing.T, o outcome) {
			if o.counter("truncated_packets") == 0 || o.counter("gaps") == 0 {
				t.Errorf("counters %v", o.res.Counters())
			}
		}},
		{"random bytes on port 80", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			for range 50 {
				f.c2s(time.Millisecond, randBytes(1400))
				f.s2c(time.Millisecond, randBytes(900))
			}
			f.fin()
			continued(b, "10.0.0.7:40000")
		}, 0, func(t *testing.T, o outcome) {
			if o.counter("non_http_streams") == 0 {
				t.Errorf("non_http_streams 0: %v", o.res.Counters())
			}
			if ng := o.negotiations(); len(ng) != 1 || ng[0].Verdict != analyze.Continued {
				t.Errorf("the good connection after the garbage: %v", ng)
			}
		}},
		{"1 MiB request line", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, "GET /"+strings.Repeat("A", 1<<20)+" HTTP/1.1\r\nHost: h\r\n\r\n")
			f.s2c(time.Millisecond, "HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n")
			f.c2s(time.Millisecond, putHead)
			f.s2c(time.Millisecond, cont)
			f.c2s(time.Millisecond, body10)
			f.s2c(time.Millisecond, okResp)
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			if o.counter("parse_errors") == 0 {
				t.Errorf("parse_errors 0")
			}
			if ng := o.negotiations(); len(ng) != 1 || ng[0].Verdict != analyze.Continued {
				t.Errorf("negotiation after the long line: %v", ng)
			}
		}},
		{"100k header fields", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, "PUT /up HTTP/1.1\r\nExpect: 100-continue\r\n"+strings.Repeat("X-A: b\r\n", 100000)+"\r\n")
			f.s2c(time.Millisecond, "HTTP/1.1 431 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			if o.counter("parse_errors") == 0 {
				t.Errorf("parse_errors 0")
			}
		}},
		{"chunk size overflowing int64", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
			f.s2c(time.Millisecond, cont)
			f.c2s(time.Millisecond, "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n")
			f.s2c(time.Millisecond, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n")
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			ng := o.negotiations()
			if o.counter("parse_errors") < 2 || len(ng) != 1 || ng[0].BodyBytes < 0 {
				t.Errorf("parse_errors %d, negotiations %v", o.counter("parse_errors"), ng)
			}
		}},
		{"negative and huge Content-Length", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, "PUT /a HTTP/1.1\r\nContent-Length: -5\r\nExpect: 100-continue\r\n\r\n")
			f.c2s(time.Millisecond, "PUT /b HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\nExpect: 100-continue\r\n\r\n")
			f.c2s(time.Millisecond, "PUT /c HTTP/1.1\r\nContent-Length: 999999999999999999\r\nExpect: 100-continue\r\n\r\n")
			f.s2c(time.Millisecond, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\nabc")
			f.c2s(time.Millisecond, body10)
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			if o.counter("parse_errors") < 2 {
				t.Errorf("parse_errors %d", o.counter("parse_errors"))
			}
			for _, r := range o.recs {
				if r.Request.ContentLength != nil && *r.Request.ContentLength < 0 || r.BodyBytes < 0 {
					t.Errorf("negative length in %+v", r.Request)
				}
			}
		}},
		{"10k pipelined requests", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, strings.Repeat("GET /p HTTP/1.1\r\nHost: h\r\n\r\n", 10000))
			f.s2c(time.Millisecond, strings.Repeat("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 10000))
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			if len(o.recs) != 10000 || o.counter("requests") != 10000 || o.counter("responses") != 10000 {
				t.Errorf("%d records, counters %v", len(o.recs), o.res.Counters())
			}
		}},
		{"sequence wraparound mid-body", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 0xffffffff-uint32(len(putHead))-3000, 0xfffffff0)
			f.c2s(time.Millisecond, "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\nExpect: 100-continue\r\n\r\n")
			f.s2c(time.Millisecond, cont)
			f.c2s(time.Millisecond, strings.Repeat("z", 10000))
			f.s2c(time.Millisecond, okResp)
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			ng := o.negotiations()
			if len(ng) != 1 || ng[0].Verdict != analyze.Continued || ng[0].BodyBytes != 10000 || !ng[0].BodyComplete || o.counter("gaps") != 0 {
				t.Errorf("negotiations %+v, counters %v", ng, o.res.Counters())
			}
		}},
		{"100 carrying a body", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, putHead)
			f.s2c(time.Millisecond, "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhello")
			f.c2s(time.Millisecond, body10)
			f.s2c(time.Millisecond, okResp)
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			ng := o.negotiations()
			if len(ng) != 1 || ng[0].Final == nil || ng[0].Final.Status != 200 {
				t.Errorf("negotiations %v", ng)
			}
		}},
		{"response without a status line", func(b *capBuilder) {
			f := b.conn(cliAddr, srvAddr, 1, 2)
			f.c2s(time.Millisecond, putHead)
			f.s2c(time.Millisecond, "Content-Length: 0\r\nServer: odd\r\n\r\n")
			f.c2s(time.Second, body10)
			f.s2c(time.Millisecond, "ok, I guess\n")
			f.fin()
		}, 0, func(t *testing.T, o outcome) {
			ng := o.negotiations()
			if len(ng) != 1 || ng[0].Final != nil {
				t.Errorf("negotiations %v", ng)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newCap(t, tt.snap)
			tt.build(b)
			// One analysis, and the sharded one read uses on several cores.
			for _, workers := range []int{1, 4} {
				o := runData(t, b.bytes(), pipeline.Options{Workers: workers})
				if o.err != nil {
					t.Fatalf("workers %d: error %v", workers, o.err)
				}
				seen := map[string]bool{}
				for _, r := range o.recs {
					if seen[r.ID] {
						t.Errorf("record %s twice", r.ID)
					}
					seen[r.ID] = true
				}
				tt.check(t, o)
			}
		})
	}
}

// TestConflictingOverlap: out-of-order copies of the same bytes that
// differ (an evasion attempt) are counted as conflicting_overlaps, and
// the first copy captured wins.
func TestConflictingOverlap(t *testing.T) {
	b := newCap(t, 0)
	f := b.conn(cliAddr, srvAddr, 1000, 5000)
	c, s := f.c, f.s
	head := "PUT /up HTTP/1.1\r\nHost: h\r\n"
	first := "Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
	second := "Content-Length: 10\r\nExpect: 100-xxxxxxxx\r\n\r\n"
	// The tail arrives first (out of order), then a differing copy of it,
	// then the hole is filled.
	b.packet(time.Millisecond, c, s, f.cseq+uint32(len(head)), f.sseq, capture.FlagACK, []byte(first))
	b.packet(time.Millisecond, c, s, f.cseq+uint32(len(head)), f.sseq, capture.FlagACK, []byte(second))
	b.packet(time.Millisecond, c, s, f.cseq, f.sseq, capture.FlagACK, []byte(head))
	f.cseq += uint32(len(head) + len(first))
	f.s2c(time.Millisecond, cont)
	f.c2s(time.Millisecond, body10)
	f.s2c(time.Millisecond, okResp)
	f.fin()
	o := runData(t, b.bytes(), pipeline.Options{})
	if o.counter("conflicting_overlaps") == 0 {
		t.Errorf("conflicting_overlaps 0: %v", o.res.Counters())
	}
	ng := o.negotiations()
	if len(ng) != 1 || ng[0].Request.Expect != "100-continue" {
		t.Fatalf("first copy should win: %v", ng)
	}
}

// TestConflictingRetransmission: a retransmission of delivered bytes
// that carries other bytes counts as a conflicting overlap; the copy
// captured first (delivered) wins.
func TestConflictingRetransmission(t *testing.T) {
	for _, differ := range []bool{false, true} {
		b := newCap(t, 0)
		f := b.conn(cliAddr, srvAddr, 1000, 5000)
		seq := f.cseq
		f.c2s(time.Millisecond, putHead)
		again := putHead
		if differ {
			again = strings.Replace(putHead, "100-continue", "100-xxxxxxxx", 1)
		}
		b.packet(time.Millisecond, f.c, f.s, seq, f.sseq, capture.FlagACK, []byte(again))
		f.s2c(time.Millisecond, cont)
		f.c2s(time.Millisecond, body10)
		f.s2c(time.Millisecond, okResp)
		f.fin()
		o := runData(t, b.bytes(), pipeline.Options{})
		if got := o.counter("conflicting_overlaps"); (got > 0) != differ {
			t.Errorf("differ=%v: conflicting_overlaps %d", differ, got)
		}
		if ng := o.negotiations(); len(ng) != 1 || ng[0].Request.Expect != "100-continue" || ng[0].Verdict != analyze.Continued {
			t.Errorf("differ=%v: first copy should win: %v", differ, ng)
		}
	}
}

// synFlood writes n SYNs from distinct ports, never answered.
func synFlood(t testing.TB, n int) []byte {
	b := newCap(t, 0)
	dst := netip.MustParseAddrPort(srvAddr)
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
		b.packet(time.Microsecond, src, dst, uint32(i), 0, capture.FlagSYN, nil)
	}
	continued(b, cliAddr)
	return b.bytes()
}

// floodHeap runs a SYN flood and returns the peak live heap (sampled
// after a collection every 16k packets) in MiB, besides the capture itself.
func floodHeap(t testing.TB, n int) (float64, outcome) {
	data := synFlood(t, n)
	runtime.GC()
	var base, ms runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak uint64
	calls := 0
	sample := func() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}
	opt := pipeline.Options{Progress: func(capture.Stats, analyze.Stats) {
		if calls++; calls%4 == 0 {
			sample()
		}
	}}
	o := runData(t, data, opt)
	sample()
	return float64(peak-min(peak, base.HeapAlloc)) / (1 << 20), o
}

// TestSYNFlood: 200k SYNs without a handshake stay within the connection
// limit (evictions counted) and bounded memory; the real negotiation
// after them is still found. EXPECTSCOPE_FLOOD=1000000 runs a million.
func TestSYNFlood(t *testing.T) {
	n := 200000
	if testing.Short() {
		n = 70000
	}
	if v := os.Getenv("EXPECTSCOPE_FLOOD"); v != "" {
		fmt.Sscan(v, &n)
	}
	if out := os.Getenv("EXPECTSCOPE_FLOOD_OUT"); out != "" {
		// Write the capture, to measure a real run's RSS:
		// /usr/bin/time -v expectscope read --format json --summary FILE
		if err := os.WriteFile(out, synFlood(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mib, o := floodHeap(t, n)
	t.Logf("%d SYNs: peak live heap %.1f MiB above the capture; counters %v", n, mib, o.res.Counters())
	if o.err != nil {
		t.Fatal(o.err)
	}
	if n > 1<<16 && o.counter("evicted_conns") == 0 {
		t.Errorf("no connection evicted")
	}
	// About 64k tracked connections (reassembly.DefaultMaxConns) at about
	// 500 bytes each with the map; a SYN-only connection has no parser.
	if mib > 56 {
		t.Errorf("peak live heap %.1f MiB", mib)
	}
	if ng := o.negotiations(); len(ng) != 1 || ng[0].Verdict != analyze.Continued {
		t.Errorf("negotiations after the flood: %v", ng)
	}
}

// BenchmarkSYNFlood1M reports the peak live heap for a million SYNs.
func BenchmarkSYNFlood1M(b *testing.B) {
	for b.Loop() {
		mib, _ := floodHeap(b, 1000000)
		b.ReportMetric(mib, "peak-MiB")
	}
}

// FuzzPipeline sends a client byte string and a server byte string over
// one connection, cut into segments at fuzz-chosen sizes, captured in a
// fuzz-chosen order with some segments lost, duplicated or cut by
// snaplen, through reassembly into the analysis: no panic, no record
// twice, never more records than requests.
func FuzzPipeline(f *testing.F) {
	seeds := [][2]string{
		{putHead + body10, cont + okResp},
		{"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" + putHead + body10, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + cont + okResp},
		{putHead + "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n" + body10, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\nHTTP/1.1 400 Bad\r\nConnection: close\r\n\r\n"},
		{"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n", cont + "HTTP/1.1 204 No Content\r\n\r\n"},
	}
	for i, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), uint64(i*7919+1), uint8(i))
	}
	// Payloads of a shipped capture, client and server concatenated.
	if data, err := os.ReadFile("../testdata/corpus/direct/raw-pipelined-expect.pcap.gz"); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			raw, _ := io.ReadAll(zr)
			if src, err := capture.Open([]string{"-"}, capture.Options{Stdin: bytes.NewReader(raw)}); err == nil {
				var cl, sv []byte
				for {
					seg, err := src.Next()
					if err != nil {
						break
					}
					if seg.Dst.Port() < seg.Src.Port() {
						cl = append(cl, seg.Payload...)
					} else {
						sv = append(sv, seg.Payload...)
					}
				}
				f.Add(cl, sv, uint64(42), uint8(0))
			}
		}
	}
	f.Fuzz(func(t *testing.T, cdata, sdata []byte, seed uint64, mode uint8) {
		if len(cdata)+len(sdata) > 64<<10 {
			return
		}
		rnd := rand.New(rand.NewPCG(seed, uint64(mode)))
		c, s := netip.MustParseAddrPort(cliAddr), netip.MustParseAddrPort(srvAddr)
		type pk struct {
			seg capture.Segment
		}
		var pks []pk
		now := rt0
		add := func(src, dst netip.AddrPort, seq uint32, flags uint8, payload []byte) {
			now = now.Add(time.Duration(rnd.IntN(2000)) * time.Microsecond)
			pks = append(pks, pk{capture.Segment{Time: now, Src: src, Dst: dst, Seq: seq, Flags: flags | capture.FlagACK,
				Payload: payload, WireLen: len(payload), Packet: uint64(len(pks) + 1)}})
		}
		cisn, sisn := rnd.Uint32(), rnd.Uint32()
		if mode&1 != 0 {
			add(c, s, cisn, capture.FlagSYN, nil)
			add(s, c, sisn, capture.FlagSYN, nil)
		}
		cseq, sseq := cisn+1, sisn+1
		// Interleave the two directions in chunks of random sizes.
		for len(cdata) > 0 || len(sdata) > 0 {
			fromClient := len(sdata) == 0 || len(cdata) > 0 && rnd.IntN(2) == 0
			d, seq := &cdata, &cseq
			src, dst := c, s
			if !fromClient {
				d, seq, src, dst = &sdata, &sseq, s, c
			}
			n := min(len(*d), 1+rnd.IntN(300))
			add(src, dst, *seq, 0, (*d)[:n])
			*seq += uint32(n)
			*d = (*d)[n:]
		}
		if mode&2 != 0 {
			add(c, s, cseq, capture.FlagFIN, nil)
			add(s, c, sseq, capture.FlagFIN, nil)
		}
		// Disorder: swaps, losses, duplicates with other bytes, snaplen cuts.
		for i := range pks {
			switch r := rnd.IntN(40); {
			case r < 4 && i+1 < len(pks):
				pks[i], pks[i+1] = pks[i+1], pks[i]
			case r == 4:
				pks[i].seg.Payload = nil // lost: becomes a hole
				pks[i].seg.Flags = capture.FlagACK
			case r == 5 && len(pks[i].seg.Payload) > 1:
				cut := rnd.IntN(len(pks[i].seg.Payload))
				pks[i].seg.Payload = pks[i].seg.Payload[:cut]
				pks[i].seg.Truncated = true
			case r == 6:
				dup := pks[i]
				dup.seg.Payload = bytes.ToUpper(dup.seg.Payload)
				pks = append(pks, dup)
			}
		}
		seen := map[string]bool{}
		an := analyze.New(analyze.Config{All: true, MaxHeaderBytes: 4096, Emit: func(r *analyze.Record) {
			if seen[r.ID] {
				t.Fatalf("record %s twice", r.ID)
			}
			seen[r.ID] = true
		}})
		asm := reassembly.NewAssembler(an, reassembly.Config{MaxBufferedPerConn: 8 << 10, MaxBufferedTotal: 16 << 10})
		var last time.Time
		for i := range pks {
			seg := pks[i].seg
			if seg.Time.After(last) {
				last = seg.Time
			}
			asm.Add(&seg)
		}
		asm.FlushAll(last)
		an.Flush()
		if st := an.Stats(); uint64(len(seen)) != st.Requests {
			t.Fatalf("%d records for %d requests", len(seen), st.Requests)
		}
	})
}

// TestMutatedCorpus flips random bytes of shipped captures (headers,
// lengths, TCP fields, HTTP text alike): the pipeline may warn or find
// nothing, but never trips its last-resort recover. EXPECTSCOPE_MUTATIONS
// sets the number of mutants per capture (default 40).
func TestMutatedCorpus(t *testing.T) {
	n := 40
	if v := os.Getenv("EXPECTSCOPE_MUTATIONS"); v != "" {
		fmt.Sscan(v, &n)
	}
	files, _ := filepath.Glob("../testdata/corpus/*/*.pcap*.gz")
	if len(files) > 8 && os.Getenv("EXPECTSCOPE_MUTATIONS") == "" {
		files = files[:8]
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	for _, path := range files {
		data := gunzipFile(t, path)
		for i := 0; i < n; i++ {
			m := bytes.Clone(data)
			for k := 1 + rnd.IntN(20); k > 0; k-- {
				p := rnd.IntN(len(m))
				switch rnd.IntN(4) {
				case 0:
					m[p] ^= byte(1 << rnd.IntN(8))
				case 1:
					m[p] = 0xff
				case 2:
					m[p] = 0
				case 3:
					m = m[:max(p, 24)] // a cut too
				}
			}
			o := runData(t, m, pipeline.Options{})
			if o.err != nil && strings.Contains(o.err.Error(), "internal error") {
				os.WriteFile(filepath.Join(t.TempDir(), "mutant.pcap"), m, 0o644)
				t.Fatalf("%s mutant %d: %v", filepath.Base(path), i, o.err)
			}
		}
	}
}
