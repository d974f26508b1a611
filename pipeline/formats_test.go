package pipeline_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
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
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"
)

// frameFunc wraps an IP packet (from serializeIP) in a link-layer header.
type frameFunc func(ip []byte, v6 bool) []byte

// rewrite reads a shipped capture and writes the same TCP conversation with
// another link type, IP version, container or compression, so the test can
// require that every form of one scenario gives the same records.
func rewrite(t *testing.T, src, dst string, link capture.LinkType, v6 bool, frame frameFunc, ng, zst bool) {
	t.Helper()
	in, err := capture.Open([]string{src}, capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	var write func(ts time.Time, data []byte) error
	flush := func() error { return nil }
	if ng {
		w, err := pcapgo.NewNgWriter(&out, layers.LinkType(link))
		if err != nil {
			t.Fatal(err)
		}
		flush = w.Flush
		write = func(ts time.Time, data []byte) error {
			return w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: len(data)}, data)
		}
	} else {
		w, err := capture.NewPcapWriter(&out, link, 0)
		if err != nil {
			t.Fatal(err)
		}
		write = func(ts time.Time, data []byte) error { return w.WritePacket(ts, len(data), data) }
	}
	for {
		seg, err := in.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := write(seg.Time, frame(serializeIP(t, seg, v6), v6)); err != nil {
			t.Fatal(err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	if zst {
		var z bytes.Buffer
		zw, _ := zstd.NewWriter(&z)
		zw.Write(b)
		zw.Close()
		b = z.Bytes()
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// v6 maps an IPv4 address into a documentation IPv6 prefix, keeping it unique.
func v6(a netip.Addr) net.IP {
	b := a.As4()
	return net.IP{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, b[0], b[1], b[2], b[3]}
}

func serializeIP(t *testing.T, seg *capture.Segment, ipv6 bool) []byte {
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(seg.Src.Port()), DstPort: layers.TCPPort(seg.Dst.Port()),
		Seq: seg.Seq, Ack: seg.Ack, Window: seg.Window,
		FIN: seg.Has(capture.FlagFIN), SYN: seg.Has(capture.FlagSYN), RST: seg.Has(capture.FlagRST),
		PSH: seg.Has(capture.FlagPSH), ACK: seg.Has(capture.FlagACK),
	}
	var ip gopacket.SerializableLayer
	if ipv6 {
		l := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64, SrcIP: v6(seg.Src.Addr()), DstIP: v6(seg.Dst.Addr())}
		tcp.SetNetworkLayerForChecksum(l)
		ip = l
	} else {
		l := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: seg.Src.Addr().AsSlice(), DstIP: seg.Dst.Addr().AsSlice()}
		tcp.SetNetworkLayerForChecksum(l)
		ip = l
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(seg.Payload)); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ethernet(ip []byte, ipv6 bool) []byte {
	et := []byte{0x08, 0x00}
	if ipv6 {
		et = []byte{0x86, 0xdd}
	}
	h := append([]byte{0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1}, et...)
	return append(h, ip...)
}

func vlanQinQ(ip []byte, ipv6 bool) []byte {
	et := []byte{0x08, 0x00}
	if ipv6 {
		et = []byte{0x86, 0xdd}
	}
	h := []byte{0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20}
	h = append(h, et...)
	return append(h, ip...)
}

func sll2(ip []byte, ipv6 bool) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], 0x0800)
	if ipv6 {
		binary.BigEndian.PutUint16(h[0:], 0x86dd)
	}
	binary.BigEndian.PutUint32(h[4:], 1) // interface index
	binary.BigEndian.PutUint16(h[8:], 772)
	h[10] = 0 // to us
	h[11] = 6
	return append(h, ip...)
}

func null(ip []byte, ipv6 bool) []byte {
	h := []byte{2, 0, 0, 0}
	if ipv6 {
		h = []byte{30, 0, 0, 0}
	}
	return append(h, ip...)
}

func raw(ip []byte, _ bool) []byte { return ip }

// normalized renders records without what legitimately differs between
// forms: addresses (IPv6 mapping) and ids (packet numbers are the same here).
// Records are sorted by id first: with several workers the order of
// Emit calls depends on scheduling.
func normalized(recs []*analyze.Record) string {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b *analyze.Record) int { return strings.Compare(a.ID, b.ID) })
	var b strings.Builder
	for _, r := range recs {
		c := *r
		c.Conn = analyze.Conn{}
		c.RTTMs = nil // options are not rewritten, the handshake timing is kept
		b.WriteString(strings.Join([]string{c.ID, string(c.Verdict), c.Request.Method, c.Request.Target, c.HeadersEndAt.String(), c.Diagnosis}, "|"))
		for _, f := range c.Flags {
			b.WriteString("|" + string(f))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// readMapped reads a capture file mapped, whatever its size, on workers
// workers, with --all.
func readMapped(t *testing.T, path string, workers int) []*analyze.Record {
	t.Helper()
	src, err := capture.Open([]string{path}, capture.Options{MapMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if fs, ok := src.(capture.FrameSource); runtime.GOOS == "linux" && (!ok || !fs.Mapped()) {
		t.Fatal("file not mapped")
	}
	var recs []*analyze.Record
	if _, err := pipeline.Run(context.Background(), src, pipeline.Options{Workers: workers,
		Analyze: analyze.Config{All: true, Emit: func(r *analyze.Record) { recs = append(recs, r) }}}); err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestSameScenarioEveryForm: one capture rewritten as IPv6, pcapng, SLL2,
// NULL, raw IP, QinQ and zstd gives exactly the records of the original;
// the pcapng also when it is mapped and framed in chunks.
func TestSameScenarioEveryForm(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"curl-nginx-417-retry-desync", "curl-rawsrv-double-100", "go-client-nginx-417"} {
		src := filepath.Join("../testdata/corpus/direct", name+".pcap.gz")
		base, _ := readAll(t, src, true)
		want := normalized(base)
		if len(base) == 0 {
			t.Fatalf("%s: no records", name)
		}
		forms := []struct {
			name    string
			link    capture.LinkType
			v6      bool
			frame   frameFunc
			ng, zst bool
		}{
			{"ethernet-ipv4", capture.LinkEthernet, false, ethernet, false, false},
			{"ethernet-ipv6", capture.LinkEthernet, true, ethernet, false, false},
			{"qinq-ipv4", capture.LinkEthernet, false, vlanQinQ, false, false},
			{"sll2-ipv6", capture.LinkSLL2, true, sll2, false, false},
			{"null-ipv4", capture.LinkNull, false, null, false, false},
			{"raw-ipv6", capture.LinkRaw, true, raw, false, false},
			{"pcapng-ipv4", capture.LinkEthernet, false, ethernet, true, false},
			{"zstd-sll2-ipv4", capture.LinkSLL2, false, sll2, false, true},
		}
		for _, f := range forms {
			t.Run(name+"/"+f.name, func(t *testing.T) {
				dst := filepath.Join(dir, name+"-"+f.name)
				rewrite(t, src, dst, f.link, f.v6, f.frame, f.ng, f.zst)
				got, _ := readAll(t, dst, true)
				if g := normalized(got); g != want {
					t.Errorf("records differ from the original:\n got %s\nwant %s", g, want)
				}
				if f.ng {
					// Mapped, framed in chunks on two workers.
					for _, bad := range []bool{false, true} {
						restore := pipeline.SetChunking(300, bad)
						got := readMapped(t, dst, 2)
						restore()
						if g := normalized(got); g != want {
							t.Errorf("mapped in chunks (bad guesses %v): records differ from the original:\n got %s\nwant %s", bad, g, want)
						}
					}
				}
				if f.v6 && len(got) > 0 && !strings.HasPrefix(got[0].Conn.Client, "[2001:db8::") {
					t.Errorf("client %s is not the rewritten IPv6 address", got[0].Conn.Client)
				}
			})
		}
	}
}

// TestRotatedFiles: a capture split into files mid-connection (as
// tcpdump -C/-G rotates them), given in any order, reads as the original.
func TestRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"curl-nginx-keepalive-mixed", "raw-pipelined-expect"} {
		src := filepath.Join("../testdata/corpus/direct", name+".pcap.gz")
		base, _ := readAll(t, src, true)
		var total int
		c, _ := capture.Open([]string{src}, capture.Options{})
		for {
			if _, err := c.Next(); err != nil {
				break
			}
			total++
		}
		c.Close()
		in, err := capture.Open([]string{src}, capture.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var parts [3]bytes.Buffer
		var ws [3]*capture.PcapWriter
		for i := range ws {
			ws[i], _ = capture.NewPcapWriter(&parts[i], capture.LinkEthernet, 0)
		}
		var segs int
		for {
			seg, err := in.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			segs++
			// Consecutive thirds of the packets, like size-based rotation.
			ws[min(2, (segs-1)*3/total)].WriteSegment(seg)
		}
		in.Close()
		for i := range parts {
			if parts[i].Len() < 1000 {
				t.Fatalf("%s: part %d is empty: the split is wrong", name, i)
			}
		}
		var paths []string
		for i := 2; i >= 0; i-- { // reversed on purpose: merging is by time
			p := filepath.Join(dir, name+"-"+string(rune('a'+i))+".pcap")
			os.WriteFile(p, parts[i].Bytes(), 0o644)
			paths = append(paths, p)
		}
		rin, err := capture.Open(paths, capture.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var got []*analyze.Record
		_, err = pipelineRun(rin, &got)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := normalized(got), normalized(base); g != w {
			t.Errorf("%s: rotated files give\n%s\nwant\n%s", name, g, w)
		}
	}
}
