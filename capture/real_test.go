package capture

import (
	"errors"
	"io"
	"path/filepath"
	"testing"
)

// readAll drains a source, failing the test on any error but io.EOF.
func readAll(t testing.TB, src Source) (segs, bytes int) {
	t.Helper()
	for {
		seg, err := src.Next()
		if errors.Is(err, io.EOF) {
			return segs, bytes
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		segs++
		bytes += len(seg.Payload)
	}
}

// TestRealCaptures checks real captures against tshark. The numbers were
// measured with tshark 4.0 (Debian 12) on the decompressed files:
//
//	tshark -r FILE -o tcp.desegment_tcp_streams:FALSE -Y tcp -T fields -e tcp.len |
//	  awk '{n++; s+=$1} END {print n, s}'
//
// and every packet of these files is TCP, so Packets equals the TCP count.
func TestRealCaptures(t *testing.T) {
	tests := []struct {
		file    string
		link    LinkType
		segs    int
		payload int
	}{
		{"corpus/direct/curl-nginx-put-continue.pcap.gz", LinkEthernet, 32, 524562},
		{"corpus/direct/curl-nginx-put-continue-gz.pcap.gz", LinkEthernet, 32, 524562},
		{"corpus/direct/curl-nginx-put-continue-pcapng.pcapng.gz", LinkEthernet, 23, 262415},
		{"corpus/direct/curl-nginx-put-continue-sll2.pcap.gz", LinkSLL2, 23, 262415},
		{"public/arkime-arkime/http-100-continue.pcap.gz", LinkEthernet, 16, 852},
		{"public/zeek-zeek/variant-07-expect_100_cl0.pcap.gz", LinkIPv4, 8, 125},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			src, err := Open([]string{filepath.Join("..", "testdata", tt.file)}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			var segs, payload int
			for {
				seg, err := src.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if seg.LinkType != tt.link {
					t.Fatalf("packet %d: link type %d, want %d", seg.Packet, seg.LinkType, tt.link)
				}
				segs++
				payload += len(seg.Payload)
			}
			if segs != tt.segs || payload != tt.payload {
				t.Errorf("got %d segments, %d payload bytes; tshark counts %d, %d", segs, payload, tt.segs, tt.payload)
			}
			st := src.Stats()
			if st.Packets != uint64(tt.segs) || st.TCP != uint64(tt.segs) || st.DecodeErrs != 0 || st.FileErrors != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
