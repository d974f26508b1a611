// Package reassembly rebuilds the two byte streams of each TCP connection
// from segments, in order, with the capture time of every chunk.
package reassembly

import (
	"net/netip"
	"time"
)

// Side names one direction of a connection. SideA is the side that sent
// the SYN; when the handshake was not captured it is the sender of the
// first segment seen, and the consumer decides roles from the bytes.
type Side uint8

const (
	SideA Side = iota
	SideB
)

// Other returns the opposite side.
func (s Side) Other() Side { return 1 - s }

// ConnInfo describes a connection when it is first seen.
type ConnInfo struct {
	A, B netip.AddrPort // A sent the SYN (or the first segment seen)
	// Handshake is true when A's SYN was captured, so A is the client.
	Handshake bool
	FirstSeen time.Time
	// FirstPacket is the capture packet number of the first segment.
	FirstPacket uint64
}

// EndReason says why one direction or the connection ended.
type EndReason uint8

const (
	EndFIN     EndReason = iota + 1 // orderly close by that side
	EndRST                          // reset by that side
	EndIdle                         // no packet for the idle timeout (capture time)
	EndEvicted                      // dropped to respect the connection or memory limit
	EndCapture                      // end of input
	EndReused                       // a new SYN reused the ports before this connection closed
)

func (r EndReason) String() string {
	switch r {
	case EndFIN:
		return "fin"
	case EndRST:
		return "rst"
	case EndIdle:
		return "idle"
	case EndEvicted:
		return "evicted"
	case EndCapture:
		return "end-of-capture"
	case EndReused:
		return "port-reused"
	}
	return "unknown"
}

// Stream consumes one connection. The assembler calls it from one
// goroutine, in capture order; data slices are only valid during the call.
type Stream interface {
	// Handshake reports the round trip measured from the handshake
	// (SYN to SYN-ACK seen from the capture point plus SYN-ACK to ACK).
	Handshake(rtt time.Duration)
	// Data delivers the next in-order bytes sent by side, captured at at.
	Data(side Side, b []byte, at time.Time)
	// Gap reports n bytes sent by side that the capture does not hold
	// (lost, or cut by snaplen); n<0 when the size is unknown.
	Gap(side Side, n int64, at time.Time)
	// End reports that side closed (FIN) or reset (RST).
	End(side Side, reason EndReason, at time.Time)
	// Close is the last call: the connection is finished or flushed.
	Close(reason EndReason, at time.Time)
}

// StreamFactory makes a Stream for each new connection.
type StreamFactory interface {
	New(info ConnInfo) Stream
}

// Stats counts what the assembler did.
type Stats struct {
	Connections    uint64 // connections opened
	Evicted        uint64 // connections dropped by limits
	IdleFlushed    uint64
	Retransmitted  uint64 // segments whose bytes were already delivered
	OutOfOrder     uint64 // segments buffered ahead of a hole
	Overlaps       uint64 // segments that overlapped delivered bytes
	Conflicts      uint64 // overlaps whose bytes differed from what was delivered (evasion)
	Gaps           uint64
	GapBytes       uint64
	BufferedPeak   uint64 // peak out-of-order bytes held
	DroppedBuffers uint64 // out-of-order bytes discarded undelivered (held beyond a FIN)
}
