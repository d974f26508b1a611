package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// tpkt describes one synthetic TCP packet.
type tpkt struct {
	v6      bool
	src     string // address:port
	dst     string
	seq     uint32
	flags   uint8
	payload string
}

func (p tpkt) addrs() (netip.AddrPort, netip.AddrPort) {
	src, dst := "10.0.0.1:40000", "10.0.0.2:80"
	if p.v6 {
		src, dst = "[2001:db8::1]:40000", "[2001:db8::2]:80"
	}
	if p.src != "" {
		src = p.src
	}
	if p.dst != "" {
		dst = p.dst
	}
	return netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
}

// ipPacket serialises p as an IP packet with gopacket, lengths and
// checksums filled in.
func ipPacket(t testing.TB, p tpkt) []byte {
	t.Helper()
	src, dst := p.addrs()
	tcpl := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: p.seq, Ack: 7, Window: 512,
		FIN: p.flags&FlagFIN != 0, SYN: p.flags&FlagSYN != 0, RST: p.flags&FlagRST != 0,
		PSH: p.flags&FlagPSH != 0, ACK: p.flags&FlagACK != 0,
	}
	var netl gopacket.SerializableLayer
	if p.v6 {
		ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		tcpl.SetNetworkLayerForChecksum(ip)
		netl = ip
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Id: 1,
			SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
		tcpl.SetNetworkLayerForChecksum(ip)
		netl = ip
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		netl, tcpl, gopacket.Payload(p.payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// udpPacket is an IPv4 UDP datagram: something to be dropped.
func udpPacket(t testing.TB) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IP{10, 0, 0, 1}, DstIP: net.IP{10, 0, 0, 2}}
	udp := &layers.UDP{SrcPort: 53, DstPort: 53}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload("dns?")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var macs = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}

func ethertypeOf(ip []byte) uint16 {
	if ip[0]>>4 == 6 {
		return etherIPv6
	}
	return etherIPv4
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// linkCase frames an IP packet in one link-layer header.
type linkCase struct {
	name string
	link LinkType
	wrap func(ip []byte) []byte
}

// linkCases covers every link-layer framing the decoder reads.
var linkCases = []linkCase{
	{"ethernet", LinkEthernet, func(ip []byte) []byte { return cat(macs, be16(ethertypeOf(ip)), ip) }},
	{"ethernet-vlan", LinkEthernet, func(ip []byte) []byte {
		return cat(macs, be16(etherVLAN), be16(42), be16(ethertypeOf(ip)), ip)
	}},
	{"ethernet-qinq", LinkEthernet, func(ip []byte) []byte {
		return cat(macs, be16(etherQinQ), be16(100), be16(etherVLAN), be16(42), be16(ethertypeOf(ip)), ip)
	}},
	{"sll", LinkSLL, func(ip []byte) []byte {
		// packet type, ARPHRD_ETHER, address length, address (8), protocol
		return cat(be16(0), be16(1), be16(6), make([]byte, 8), be16(ethertypeOf(ip)), ip)
	}},
	{"sll2", LinkSLL2, func(ip []byte) []byte {
		// protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address (8)
		return cat(be16(ethertypeOf(ip)), be16(0), []byte{0, 0, 0, 2}, be16(1), []byte{4, 6}, make([]byte, 8), ip)
	}},
	{"null-le", LinkNull, func(ip []byte) []byte {
		af := uint32(2)
		if ip[0]>>4 == 6 {
			af = 30 // Darwin
		}
		return cat(binary.LittleEndian.AppendUint32(nil, af), ip)
	}},
	{"null-be", LinkNull, func(ip []byte) []byte {
		af := uint32(2)
		if ip[0]>>4 == 6 {
			af = 28 // FreeBSD
		}
		return cat(binary.BigEndian.AppendUint32(nil, af), ip)
	}},
	{"loop", LinkLoop, func(ip []byte) []byte {
		af := uint32(2)
		if ip[0]>>4 == 6 {
			af = 24 // OpenBSD
		}
		return cat(binary.BigEndian.AppendUint32(nil, af), ip)
	}},
	{"raw", LinkRaw, func(ip []byte) []byte { return ip }},
	{"raw12", LinkRaw12, func(ip []byte) []byte { return ip }},
	{"raw14", LinkRaw14, func(ip []byte) []byte { return ip }},
}

// rec is one record of a synthetic capture file.
type rec struct {
	ts   time.Time
	data []byte
	wire int // 0: len(data)
}

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// pcapFile writes a classic pcap file by hand, so that either byte order
// and either resolution can be produced.
func pcapFile(order binary.AppendByteOrder, nano bool, link LinkType, recs []rec) []byte {
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	b := order.AppendUint32(nil, magic)
	b = order.AppendUint16(b, 2)
	b = order.AppendUint16(b, 4)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 0)
	b = order.AppendUint32(b, 65535)
	b = order.AppendUint32(b, uint32(link))
	for _, r := range recs {
		frac := uint32(r.ts.Nanosecond())
		if !nano {
			frac /= 1000
		}
		wire := r.wire
		if wire == 0 {
			wire = len(r.data)
		}
		b = order.AppendUint32(b, uint32(r.ts.Unix()))
		b = order.AppendUint32(b, frac)
		b = order.AppendUint32(b, uint32(len(r.data)))
		b = order.AppendUint32(b, uint32(wire))
		b = append(b, r.data...)
	}
	return b
}

// ngIface is one interface of a synthetic pcapng file.
type ngRec struct {
	iface int
	rec
}

// pcapngFile writes a pcapng file with pcapgo, one interface per link
// type given. ends holds the file length after the header and after
// each packet (the places where a cut leaves whole blocks).
func pcapngFile(t testing.TB, links []LinkType, recs []ngRec) (file []byte, ends []int) {
	t.Helper()
	var buf bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{LinkType: layers.LinkType(links[0]), SnapLength: 65535, TimestampResolution: 9},
		pcapgo.NgWriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links[1:] {
		if _, err := w.AddInterface(pcapgo.NgInterface{LinkType: layers.LinkType(l), SnapLength: 65535, TimestampResolution: 9}); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	ends = append(ends, buf.Len())
	for _, r := range recs {
		wire := r.wire
		if wire == 0 {
			wire = len(r.data)
		}
		ci := gopacket.CaptureInfo{Timestamp: r.ts, CaptureLength: len(r.data), Length: wire, InterfaceIndex: r.iface}
		if err := w.WritePacket(ci, r.data); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		ends = append(ends, buf.Len())
	}
	return buf.Bytes(), ends
}

// got is what a test keeps of a segment (the source reuses the Segment).
type got struct {
	Packet  uint64
	Time    time.Time
	Src     netip.AddrPort
	Seq     uint32
	Payload string
	Link    LinkType
}

// drain reads src to the end, collecting segments and warnings.
func drain(t testing.TB, src Source) (segs []got, warns []*Warning) {
	t.Helper()
	for i := 0; ; i++ {
		if i > 1e6 {
			t.Fatal("source does not end")
		}
		seg, err := src.Next()
		if errors.Is(err, io.EOF) {
			return segs, warns
		}
		var w *Warning
		if errors.As(err, &w) {
			warns = append(warns, w)
			continue
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		segs = append(segs, got{seg.Packet, seg.Time, seg.Src, seg.Seq, string(seg.Payload), seg.LinkType})
	}
}

// openBytes opens an in-memory capture as standard input.
func openBytes(data []byte) (Source, error) {
	return Open([]string{"-"}, Options{Stdin: bytes.NewReader(data)})
}
