package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"
)

// LinkType is a LINKTYPE_ value from the pcap and pcapng formats
// (https://www.tcpdump.org/linktypes.html): it says how to read a frame.
type LinkType uint16

// Link types the Decoder understands.
const (
	LinkNull     LinkType = 0   // BSD loopback: 4-byte address family in host byte order
	LinkEthernet LinkType = 1   // Ethernet II, with 802.1Q / 802.1ad tags
	LinkRaw12    LinkType = 12  // raw IP (DLT_RAW as some BSDs number it)
	LinkRaw14    LinkType = 14  // raw IP (DLT_RAW as OpenBSD numbers it)
	LinkRaw      LinkType = 101 // raw IPv4 or IPv6, told apart by the version nibble
	LinkLoop     LinkType = 108 // OpenBSD loopback: address family in network byte order
	LinkSLL      LinkType = 113 // Linux cooked capture v1
	LinkIPv4     LinkType = 228 // raw IPv4
	LinkIPv6     LinkType = 229 // raw IPv6
	LinkSLL2     LinkType = 276 // Linux cooked capture v2
)

// Ethertypes and IP protocol numbers the decoder follows.
const (
	etherIPv4   = 0x0800
	etherIPv6   = 0x86dd
	etherVLAN   = 0x8100 // 802.1Q
	etherQinQ   = 0x88a8 // 802.1ad service tag
	etherQinQv1 = 0x9100 // pre-standard QinQ, still emitted by some switches
	maxVLANTags = 8      // more than any real network stacks; bounds garbage

	protoHopByHop = 0
	protoTCP      = 6
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoNoNext   = 59
	protoDestOpts = 60
	maxIPv6Ext    = 16 // bounds a chain of extension headers in garbage
)

// fragTimeout is how long (in capture time) an incomplete IPv4 datagram is
// kept: Linux's default ipfrag_time. Fragments older than that would be
// dropped by the receiver too.
const fragTimeout = 30 * time.Second

// Decode errors. They are values, not formatted, so that counting a bad
// packet does not allocate; Decode returns them for tests and debugging.
var (
	errShortLink    = errors.New("frame shorter than its link-layer header")
	errUnknownLink  = errors.New("unsupported link type")
	errIPVersion    = errors.New("bad IP version")
	errShortIP      = errors.New("IP header cut short")
	errIPHeaderLen  = errors.New("bad IPv4 header length")
	errIPLength     = errors.New("IP length exceeds the frame and the frame was not cut by snaplen")
	errShortExt     = errors.New("IPv6 extension header cut short")
	errExtChain     = errors.New("too many IPv6 extension headers")
	errShortTCP     = errors.New("TCP header cut short")
	errTCPHeaderLen = errors.New("bad TCP data offset")
	errCutFragment  = errors.New("IPv4 fragment cut by snaplen cannot be reassembled")
)

// Decoder turns captured frames into TCP segments. It keeps no state
// between packets except IPv4 fragments awaiting reassembly and counters,
// and on the TCP path it does not allocate: Segment fields alias the frame.
// A Decoder is not safe for concurrent use.
type Decoder struct {
	stats     Stats
	defrag    *ip4defrag.IPv4Defragmenter // created on the first fragment
	lastSweep time.Time
}

// NewDecoder returns a Decoder with zero counters.
func NewDecoder() *Decoder { return &Decoder{} }

// Stats returns the counters of the packets decoded so far. FileErrors is
// always zero: files are the Source's business.
func (d *Decoder) Stats() Stats { return d.stats }

// Decode decodes one captured frame of the given link type. wireLen is the
// frame's length on the wire (0 or less than len(frame) when unknown); a
// larger value means the capture cut the frame at the snapshot length.
//
// It fills seg and reports true when the frame carried a TCP segment;
// Segment.Packet is the number of frames passed to Decode so far. It
// reports false, with a nil error, for a frame that is not TCP or an IPv4
// fragment that does not complete a datagram, and false with an error for
// a frame that cannot be decoded. Every outcome is counted in Stats.
// seg.Payload and seg.Raw alias frame, except after reassembly.
func (d *Decoder) Decode(link LinkType, frame []byte, ts time.Time, wireLen int, seg *Segment) (bool, error) {
	d.stats.Packets++
	d.stats.Bytes += uint64(len(frame))
	// Field by field: a composite literal is built on the stack and then
	// copied, two passes over the segment's 192 bytes for every packet.
	*seg = Segment{}
	seg.Time = ts
	seg.Packet = d.stats.Packets
	seg.Raw = frame
	seg.RawLen = max(wireLen, len(frame))
	seg.LinkType = link
	ok, err := d.decode(link, frame, ts, wireLen > len(frame), seg)
	switch {
	case err != nil:
		d.stats.DecodeErrs++
		return false, err
	case ok:
		d.stats.TCP++
		if seg.Truncated {
			d.stats.Truncated++
		}
	}
	return ok, nil
}

func (d *Decoder) decode(link LinkType, b []byte, ts time.Time, cut bool, seg *Segment) (bool, error) {
	var et uint16
	switch link {
	case LinkEthernet:
		if len(b) < 14 {
			return false, errShortLink
		}
		et, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
	case LinkSLL:
		// The protocol field holds an ethertype for the ARPHRD types that
		// carry IP; other values (802.2, CAN, netlink) are not IP.
		if len(b) < 16 {
			return false, errShortLink
		}
		et, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	case LinkSLL2:
		if len(b) < 20 {
			return false, errShortLink
		}
		et, b = binary.BigEndian.Uint16(b[0:2]), b[20:]
	case LinkNull, LinkLoop:
		// The family is in the capturing host's byte order for NULL and
		// supposed to be big-endian for LOOP; writers get both wrong, so
		// accept either. AF_INET6 differs by OS: 10 Linux, 24
		// NetBSD/OpenBSD, 28 FreeBSD, 30 Darwin.
		if len(b) < 4 {
			return false, errShortLink
		}
		af := binary.LittleEndian.Uint32(b)
		if af > 0xffff {
			af = binary.BigEndian.Uint32(b)
		}
		b = b[4:]
		switch af {
		case 2:
			et = etherIPv4
		case 10, 24, 28, 30:
			et = etherIPv6
		default:
			d.stats.NonTCP++
			return false, nil
		}
	case LinkRaw, LinkRaw12, LinkRaw14:
		if len(b) < 1 {
			return false, errShortIP
		}
		switch b[0] >> 4 {
		case 4:
			et = etherIPv4
		case 6:
			et = etherIPv6
		default:
			return false, errIPVersion
		}
	case LinkIPv4:
		et = etherIPv4
	case LinkIPv6:
		et = etherIPv6
	default:
		return false, errUnknownLink
	}
	// VLAN tags may follow any ethertype-bearing header (SLL captures on a
	// trunk interface without tag offload keep them).
	for range maxVLANTags {
		if et != etherVLAN && et != etherQinQ && et != etherQinQv1 {
			break
		}
		if len(b) < 4 {
			return false, errShortLink
		}
		et, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
	}
	switch et {
	case etherIPv4:
		return d.ipv4(b, ts, cut, seg)
	case etherIPv6:
		return d.ipv6(b, cut, seg)
	}
	d.stats.NonTCP++
	return false, nil
}

// ipLimit trims b to the length the IP header announces, so that Ethernet
// padding and trailers never become payload, and reports whether b holds
// fewer bytes than announced. That is only legitimate when the frame was
// cut by snaplen (cut).
func ipLimit(b []byte, n int, cut bool) ([]byte, bool, error) {
	if n <= len(b) {
		return b[:n], false, nil
	}
	if !cut {
		return b, false, errIPLength
	}
	return b, true, nil
}

func (d *Decoder) ipv4(b []byte, ts time.Time, cut bool, seg *Segment) (bool, error) {
	if len(b) < 20 {
		return false, errShortIP
	}
	if b[0]>>4 != 4 {
		return false, errIPVersion
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return false, errIPHeaderLen
	}
	if len(b) < ihl {
		return false, errShortIP
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 {
		// Captured on the sending host with TCP segmentation offload: the
		// stack leaves the length for the NIC to fill in.
		total = len(b)
	}
	if total < ihl {
		return false, errIPHeaderLen
	}
	b, short, err := ipLimit(b, total, cut)
	if err != nil {
		return false, err
	}
	if frag := binary.BigEndian.Uint16(b[6:8]); frag&0x3fff != 0 { // MF or offset
		return d.fragment(b, ts, short, seg)
	}
	if b[9] != protoTCP {
		d.stats.NonTCP++
		return false, nil
	}
	seg.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), 0)
	seg.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), 0)
	return tcp(b[ihl:], total-ihl, seg)
}

// fragment is the slow path: it copies the fragment (the defragmenter
// keeps it beyond this frame's lifetime) and returns the TCP segment of a
// datagram it completes.
func (d *Decoder) fragment(b []byte, ts time.Time, short bool, seg *Segment) (bool, error) {
	d.stats.Fragments++
	if short {
		return false, errCutFragment
	}
	if d.defrag == nil {
		d.defrag = ip4defrag.NewIPv4Defragmenter()
		d.lastSweep = ts
	}
	if ts.Sub(d.lastSweep) > fragTimeout/3 {
		d.defrag.DiscardOlderThan(ts.Add(-fragTimeout))
		d.lastSweep = ts
	}
	ip := new(layers.IPv4)
	if err := ip.DecodeFromBytes(append([]byte(nil), b...), gopacket.NilDecodeFeedback); err != nil {
		return false, err
	}
	whole, err := d.defrag.DefragIPv4WithTimestamp(ip, ts)
	if err != nil {
		return false, err
	}
	if whole == nil {
		return false, nil // waiting for more fragments
	}
	d.stats.Reassembled++
	if whole.Protocol != protoTCP {
		d.stats.NonTCP++
		return false, nil
	}
	seg.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), 0)
	seg.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), 0)
	return tcp(whole.Payload, len(whole.Payload), seg)
}

func (d *Decoder) ipv6(b []byte, cut bool, seg *Segment) (bool, error) {
	if len(b) < 40 {
		return false, errShortIP
	}
	if b[0]>>4 != 6 {
		return false, errIPVersion
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	next := b[6]
	src, dst := [16]byte(b[8:24]), [16]byte(b[24:40])
	b = b[40:]
	if n == 0 {
		// A jumbogram (RFC 2675) or a TSO capture on the sending host:
		// the frame is the only length there is.
		n = len(b)
	}
	b, _, err := ipLimit(b, n, cut)
	if err != nil {
		return false, err
	}
	// RFC 8200 section 4: walk the extension headers to the upper layer.
	for range maxIPv6Ext {
		var hlen int
		switch next {
		case protoTCP:
			seg.Src = netip.AddrPortFrom(netip.AddrFrom16(src), 0)
			seg.Dst = netip.AddrPortFrom(netip.AddrFrom16(dst), 0)
			return tcp(b, n, seg)
		case protoHopByHop, protoRouting, protoDestOpts:
			if len(b) < 2 {
				return false, errShortExt
			}
			hlen = (int(b[1]) + 1) * 8
		case protoAH: // RFC 4302: length in 4-octet units, minus 2
			if len(b) < 2 {
				return false, errShortExt
			}
			hlen = (int(b[1]) + 2) * 4
		case protoFragment:
			if len(b) < 8 {
				return false, errShortExt
			}
			if binary.BigEndian.Uint16(b[2:4])&0xfff9 != 0 { // offset or M
				// IPv6 fragments are rare for TCP (path MTU discovery
				// avoids them): counted, not reassembled.
				d.stats.Fragments++
				return false, nil
			}
			hlen = 8 // an atomic fragment (RFC 6946) is a whole datagram
		case protoNoNext:
			d.stats.NonTCP++
			return false, nil
		default:
			d.stats.NonTCP++
			return false, nil
		}
		if len(b) < hlen {
			return false, errShortExt
		}
		next, b, n = b[0], b[hlen:], n-hlen
	}
	return false, errExtChain
}

// tcp decodes the TCP header at the start of b, where n is the segment
// length the IP layer announced (header included) and b may be shorter
// when the frame was cut by snaplen.
func tcp(b []byte, n int, seg *Segment) (bool, error) {
	if len(b) < 20 {
		return false, errShortTCP
	}
	off := int(b[12]>>4) * 4
	if off < 20 || off > n {
		return false, errTCPHeaderLen
	}
	seg.Src = netip.AddrPortFrom(seg.Src.Addr(), binary.BigEndian.Uint16(b[0:2]))
	seg.Dst = netip.AddrPortFrom(seg.Dst.Addr(), binary.BigEndian.Uint16(b[2:4]))
	seg.Seq = binary.BigEndian.Uint32(b[4:8])
	seg.Ack = binary.BigEndian.Uint32(b[8:12])
	seg.Flags = b[13] & (FlagFIN | FlagSYN | FlagRST | FlagPSH | FlagACK) // same bit positions as on the wire
	seg.Window = binary.BigEndian.Uint16(b[14:16])
	seg.WireLen = n - off
	if len(b) >= off {
		seg.Payload = b[off:]
	} else {
		seg.Payload = b[len(b):] // options cut by snaplen: deliver the header fields
	}
	seg.Truncated = len(seg.Payload) < seg.WireLen
	return true, nil
}
