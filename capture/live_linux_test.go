//go:build linux && !libpcap

package capture

import (
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// TestPutSLL2: the header given to a cooked frame of -i any reads back,
// with gopacket's decoder, as the address the kernel gave it, and our
// Decoder finds the TCP segment behind it (or counts a non-IP frame).
func TestPutSLL2(t *testing.T) {
	mac := [8]byte{0x02, 0, 0, 0, 0, 0x2a}
	for _, c := range []struct {
		name    string
		proto   uint16
		payload []byte
		tcp     bool
	}{
		{"ipv4", 0x0800, ipPacket(t, tpkt{seq: 100, flags: FlagACK, payload: "GET / HTTP/1.1\r\n"}), true},
		{"ipv6", 0x86dd, ipPacket(t, tpkt{v6: true, seq: 100, flags: FlagACK, payload: "x"}), true},
		{"arp", 0x0806, make([]byte, 28), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The kernel's sockaddr_ll, as x/sys/unix reads it: the protocol
			// in network byte order, the rest in the host's.
			ll := &unix.SockaddrLinklayer{Protocol: htons(c.proto), Ifindex: 7, Hatype: 1,
				Pkttype: unix.PACKET_OUTGOING, Halen: 6, Addr: mac}
			frame := make([]byte, sll2Len, sll2Len+len(c.payload))
			putSLL2(frame, ll)
			frame = append(frame, c.payload...)

			p := gopacket.NewPacket(frame, layers.LinkTypeLinuxSLL2, gopacket.Default)
			sll, ok := p.Layer(layers.LayerTypeLinuxSLL2).(*layers.LinuxSLL2)
			if !ok {
				t.Fatalf("gopacket does not read an SLL2 header: %v", p.ErrorLayer())
			}
			if uint16(sll.ProtocolType) != c.proto || sll.InterfaceIndex != 7 || sll.ARPHardwareType != 1 ||
				sll.PacketType != layers.LinuxSLL2PacketType(unix.PACKET_OUTGOING) || sll.AddrLength != 6 ||
				sll.Addr.String() != "02:00:00:00:00:2a" {
				t.Errorf("header read back as %+v", sll)
			}

			d := NewDecoder()
			var seg Segment
			ok, err := d.Decode(LinkSLL2, frame, time.Unix(1, 0), len(frame), &seg)
			if ok != c.tcp {
				t.Fatalf("Decode = %v, %v; want a segment: %v", ok, err, c.tcp)
			}
			if c.tcp {
				src, dst := tpkt{v6: c.proto == 0x86dd}.addrs()
				if seg.Src != src || seg.Dst != dst || seg.Seq != 100 {
					t.Errorf("segment %v > %v seq %d", seg.Src, seg.Dst, seg.Seq)
				}
			} else if d.Stats().NonTCP != 1 {
				t.Errorf("a non-IP frame is not counted as non-TCP: %+v", d.Stats())
			}
		})
	}
}
