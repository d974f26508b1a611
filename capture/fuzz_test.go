package capture

import (
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// realPrefix returns the first n decompressed bytes of a test capture.
func realPrefix(f *testing.F, name string, n int64) []byte {
	return gunzipFile(f, filepath.Join("..", "testdata", name), n)
}

// gunzipFile returns the first n (all if n < 0) decompressed bytes of a
// gzipped file.
func gunzipFile(tb testing.TB, path string, n int64) []byte {
	tb.Helper()
	fh, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		tb.Fatal(err)
	}
	var r io.Reader = zr
	if n >= 0 {
		r = io.LimitReader(zr, n)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzOpen reads arbitrary bytes as a capture file: no panic, no endless
// loop, and only io.EOF or a *Warning from Next.
func FuzzOpen(f *testing.F) {
	recs := session(f, linkCases[2], false, 3, t0)
	f.Add(pcapFile(binary.LittleEndian, false, LinkEthernet, recs))
	f.Add(pcapFile(binary.BigEndian, true, LinkEthernet, recs))
	var ngRecs []ngRec
	for _, r := range recs {
		ngRecs = append(ngRecs, ngRec{0, r})
	}
	ng, _ := pcapngFile(f, []LinkType{LinkEthernet, LinkSLL2}, ngRecs)
	f.Add(ng)
	f.Add(realPrefix(f, "corpus/direct/curl-nginx-put-continue-pcapng.pcapng.gz", 2048))
	f.Add(realPrefix(f, "corpus/direct/curl-nginx-put-continue-sll2.pcap.gz", 2048))
	f.Add(realPrefix(f, "public/arkime-arkime/http-100-continue.pcap.gz", 2048))
	f.Add(realPrefix(f, "public/zeek-zeek/variant-07-expect_100_cl0.pcap.gz", 2048))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := openBytes(data)
		if err != nil {
			return
		}
		defer src.Close()
		for i := 0; ; i++ {
			if i > len(data)+10 {
				t.Fatal("more results than bytes")
			}
			seg, err := src.Next()
			if err == io.EOF {
				break
			}
			var w *Warning
			if errors.As(err, &w) {
				continue
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if len(seg.Payload) > len(seg.Raw) || seg.WireLen < len(seg.Payload) {
				t.Fatalf("payload %d bytes, raw %d, wire %d", len(seg.Payload), len(seg.Raw), seg.WireLen)
			}
		}
	})
}

// FuzzDecode decodes arbitrary bytes as a frame of every link type, whole
// and as if cut by snaplen.
func FuzzDecode(f *testing.F) {
	for _, lc := range linkCases {
		f.Add(lc.wrap(ipPacket(f, tpkt{payload: "GET"})))
		f.Add(lc.wrap(ipPacket(f, tpkt{v6: true, payload: "GET"})))
	}
	ip := ipPacket(f, tpkt{payload: "fragment me, fragment me"})
	for _, fr := range fragments(ip, 24) {
		f.Add(fr)
	}
	links := []LinkType{LinkNull, LinkEthernet, LinkRaw12, LinkRaw14, LinkRaw, LinkLoop, LinkSLL, LinkIPv4, LinkIPv6, LinkSLL2}
	d := NewDecoder() // shared, so fragments meet across inputs
	f.Fuzz(func(t *testing.T, frame []byte) {
		var seg Segment
		for _, link := range links {
			for _, wire := range []int{len(frame), len(frame) + 1000} {
				ok, err := d.Decode(link, frame, t0, wire, &seg)
				if ok && err != nil {
					t.Fatal("ok with an error")
				}
				if ok && (seg.WireLen < len(seg.Payload) || seg.Truncated != (len(seg.Payload) < seg.WireLen)) {
					t.Fatalf("payload %d wire %d truncated %v", len(seg.Payload), seg.WireLen, seg.Truncated)
				}
			}
		}
	})
}
