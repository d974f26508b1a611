package capture

import (
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// PcapWriter writes frames to a classic pcap file with nanosecond
// timestamps, so that packets picked out of a capture (--write-flagged) can
// be written again without losing their timing.
type PcapWriter struct {
	w    *pcapgo.Writer
	link LinkType
}

// NewPcapWriter writes a pcap file header for frames of the given link type
// cut at snaplen (0 means DefaultMaxPacket) and returns a writer for them.
func NewPcapWriter(w io.Writer, link LinkType, snaplen uint32) (*PcapWriter, error) {
	if snaplen == 0 {
		snaplen = DefaultMaxPacket
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(snaplen, layers.LinkType(link)); err != nil {
		return nil, fmt.Errorf("capture: writing pcap header: %w", err)
	}
	return &PcapWriter{w: pw, link: link}, nil
}

// WritePacket writes one frame captured at ts; wireLen is its length on
// the wire (len(data) when it was not cut).
func (p *PcapWriter) WritePacket(ts time.Time, wireLen int, data []byte) error {
	ci := gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(data), Length: max(wireLen, len(data))}
	if err := p.w.WritePacket(ci, data); err != nil {
		return fmt.Errorf("capture: writing pcap packet: %w", err)
	}
	return nil
}

// WriteSegment writes the frame a segment was decoded from. A pcap file
// holds one link type: a frame of another type is refused.
func (p *PcapWriter) WriteSegment(seg *Segment) error {
	if seg.LinkType != p.link {
		return fmt.Errorf("capture: packet %d has link type %d, the pcap file %d", seg.Packet, seg.LinkType, p.link)
	}
	return p.WritePacket(seg.Time, seg.RawLen, seg.Raw)
}
