// Package capture turns packet sources (capture files, stdin, live
// interfaces) into decoded TCP segments. It knows nothing of HTTP.
package capture

import (
	"net/netip"
	"strconv"
	"time"
)

// TCP flag bits carried in Segment.Flags.
const (
	FlagFIN uint8 = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
)

// Segment is one decoded TCP segment. Payload aliases the source's buffer
// and is valid only until the next call to Source.Next: consumers copy what
// they keep.
type Segment struct {
	Time    time.Time // capture timestamp: the only clock the analysis has
	Src     netip.AddrPort
	Dst     netip.AddrPort
	Seq     uint32
	Ack     uint32
	Flags   uint8
	Window  uint16
	Payload []byte
	// Truncated is set when the packet was cut by the snapshot length, so
	// Payload holds fewer bytes than the segment carried on the wire.
	// WireLen is the TCP payload length on the wire (len(Payload) when not truncated).
	Truncated bool
	WireLen   int
	// Packet is the 1-based number of the packet in the capture (across
	// merged files, in merged order), for messages that point at evidence.
	Packet uint64
	// Raw is the whole captured frame the segment came from (link header
	// included), and LinkType says how to read it, so that a caller can
	// write the packet out again (see PcapWriter). Raw aliases the source's
	// buffer like Payload. For a datagram rebuilt from IPv4 fragments it is
	// the frame of the fragment that completed it.
	Raw      []byte
	RawLen   int // the frame's length on the wire (len(Raw) unless cut by snaplen)
	LinkType LinkType
}

// Has reports whether all flag bits in f are set.
func (s *Segment) Has(f uint8) bool { return s.Flags&f == f }

// Stats counts what a source read and what it dropped.
type Stats struct {
	Packets     uint64 // packets read from the source
	Bytes       uint64 // captured bytes read
	TCP         uint64 // TCP segments delivered
	NonTCP      uint64 // packets that were not TCP (counted and dropped)
	Truncated   uint64 // TCP segments cut by snaplen
	Fragments   uint64 // IPv4 fragments seen
	Reassembled uint64 // IPv4 datagrams rebuilt from fragments
	DecodeErrs  uint64 // packets that failed to decode
	FileErrors  uint64 // files that ended early or were corrupt
}

// Source yields TCP segments in capture order.
type Source interface {
	// Next returns the next TCP segment, io.EOF at the end of input, or
	// an error that says which file, packet and offset failed. After an
	// error that is not io.EOF, segments read earlier remain valid
	// results; Next may be called again only if the error is a *Warning.
	Next() (*Segment, error)
	Stats() Stats
	Close() error
}

// Warning is a non-fatal problem (a truncated file, a corrupt block that
// could be skipped). Next returns it once; the caller reports it and keeps reading.
type Warning struct {
	File string // the file as named to Open ("-" for stdin)
	// Packet is the 1-based number, within File, of the record that could
	// not be read: tools that open the file alone number it the same way.
	Packet uint64
	// Offset is the byte offset of that record in File after
	// decompression (gzip and zstd files count uncompressed bytes).
	Offset int64
	Err    error
}

func (w *Warning) Error() string {
	s := w.File + ": "
	if w.Packet > 0 {
		s += "packet " + strconv.FormatUint(w.Packet, 10) + " at "
	}
	s += "offset " + strconv.FormatInt(w.Offset, 10) + ": "
	return s + w.Err.Error()
}

func (w *Warning) Unwrap() error { return w.Err }
