// Package capture turns packet sources (capture files, stdin, live
// interfaces) into decoded TCP segments. It knows nothing of HTTP.
package capture

import (
	"net/netip"
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
	File   string
	Packet uint64
	Offset int64
	Err    error
}

func (w *Warning) Error() string {
	return w.File + ": " + w.Err.Error()
}

func (w *Warning) Unwrap() error { return w.Err }
