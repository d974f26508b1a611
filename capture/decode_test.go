package capture

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestDecodeLinkTypes(t *testing.T) {
	for _, lc := range linkCases {
		for _, v6 := range []bool{false, true} {
			name := lc.name + "/ipv4"
			if v6 {
				name = lc.name + "/ipv6"
			}
			t.Run(name, func(t *testing.T) {
				p := tpkt{v6: v6, seq: 1000, flags: FlagPSH | FlagACK, payload: "PUT / HTTP/1.1\r\n"}
				frame := lc.wrap(ipPacket(t, p))
				d := NewDecoder()
				var seg Segment
				ok, err := d.Decode(lc.link, frame, t0, len(frame), &seg)
				if !ok || err != nil {
					t.Fatalf("Decode = %v, %v", ok, err)
				}
				src, dst := p.addrs()
				if seg.Src != src || seg.Dst != dst || seg.Seq != 1000 || seg.Ack != 7 || seg.Window != 512 {
					t.Errorf("header: %v > %v seq %d ack %d win %d", seg.Src, seg.Dst, seg.Seq, seg.Ack, seg.Window)
				}
				if seg.Flags != FlagPSH|FlagACK || !seg.Has(FlagACK) || seg.Has(FlagSYN) {
					t.Errorf("flags %#x", seg.Flags)
				}
				if string(seg.Payload) != p.payload || seg.WireLen != len(p.payload) || seg.Truncated {
					t.Errorf("payload %q wirelen %d truncated %v", seg.Payload, seg.WireLen, seg.Truncated)
				}
				if seg.Packet != 1 || !seg.Time.Equal(t0) || seg.LinkType != lc.link || len(seg.Raw) != len(frame) {
					t.Errorf("packet %d time %v link %d raw %d", seg.Packet, seg.Time, seg.LinkType, len(seg.Raw))
				}
				if st := d.Stats(); st.TCP != 1 || st.Packets != 1 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

func TestDecodeOtherRawTypes(t *testing.T) {
	for _, tt := range []struct {
		link LinkType
		v6   bool
	}{{LinkIPv4, false}, {LinkIPv6, true}} {
		frame := ipPacket(t, tpkt{v6: tt.v6, payload: "x"})
		var seg Segment
		if ok, err := NewDecoder().Decode(tt.link, frame, t0, 0, &seg); !ok || err != nil || string(seg.Payload) != "x" {
			t.Errorf("link %d: %v %v %q", tt.link, ok, err, seg.Payload)
		}
		// The wrong version for the link type is garbage.
		if ok, err := NewDecoder().Decode(tt.link^(LinkIPv4^LinkIPv6), frame, t0, 0, &seg); ok || err == nil {
			t.Errorf("link %d with the other IP version: %v %v", tt.link, ok, err)
		}
	}
}

// Ethernet pads short frames to 60 bytes (and may keep the FCS): the
// padding must not become payload.
func TestDecodeEthernetPadding(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		ip := ipPacket(t, tpkt{v6: v6, flags: FlagACK, payload: "ab"})
		frame := cat(macs, be16(ethertypeOf(ip)), ip, []byte("\x00\x00\x00\x00PADDINGFCS!"))
		var seg Segment
		ok, err := NewDecoder().Decode(LinkEthernet, frame, t0, len(frame), &seg)
		if !ok || err != nil || string(seg.Payload) != "ab" || seg.WireLen != 2 {
			t.Errorf("v6=%v: %v %v payload %q wirelen %d", v6, ok, err, seg.Payload, seg.WireLen)
		}
	}
}

func TestDecodeSnaplen(t *testing.T) {
	payload := strings.Repeat("0123456789", 20)
	for _, v6 := range []bool{false, true} {
		frame := linkCases[0].wrap(ipPacket(t, tpkt{v6: v6, payload: payload}))
		hdr := len(frame) - len(payload)
		for _, keep := range []int{hdr, hdr + 1, hdr + 100, len(frame) - 1} {
			d := NewDecoder()
			var seg Segment
			ok, err := d.Decode(LinkEthernet, frame[:keep], t0, len(frame), &seg)
			if !ok || err != nil {
				t.Fatalf("v6=%v keep %d: %v %v", v6, keep, ok, err)
			}
			if !seg.Truncated || seg.WireLen != len(payload) || string(seg.Payload) != payload[:keep-hdr] || seg.RawLen != len(frame) {
				t.Errorf("v6=%v keep %d: truncated %v wirelen %d payload %d bytes", v6, keep, seg.Truncated, seg.WireLen, len(seg.Payload))
			}
			if d.Stats().Truncated != 1 {
				t.Errorf("stats %+v", d.Stats())
			}
		}
		// The same short frame without a larger wire length is garbled.
		if ok, err := NewDecoder().Decode(LinkEthernet, frame[:hdr+5], t0, hdr+5, new(Segment)); ok || err == nil {
			t.Errorf("v6=%v: short frame not cut by snaplen decoded: %v %v", v6, ok, err)
		}
	}
}

// ipv6WithExt inserts extension headers (each given without its first
// two bytes, which are filled in) between the IPv6 header and TCP.
func ipv6WithExt(t *testing.T, types []uint8, bodies [][]byte, payload string) []byte {
	ip := ipPacket(t, tpkt{v6: true, payload: payload})
	var ext []byte
	for i, typ := range types {
		next := uint8(protoTCP)
		if i+1 < len(types) {
			next = types[i+1]
		}
		body := bodies[i]
		var h []byte
		switch typ {
		case protoFragment:
			h = append([]byte{next, 0}, body...)
		case protoAH:
			h = append([]byte{next, uint8((len(body)+2)/4 - 2)}, body...)
		default:
			h = append([]byte{next, uint8((len(body)+2)/8 - 1)}, body...)
		}
		ext = append(ext, h...)
	}
	out := cat(ip[:40], ext, ip[40:])
	out[6] = types[0]
	binary.BigEndian.PutUint16(out[4:6], uint16(len(out)-40))
	return out
}

func TestDecodeIPv6Extensions(t *testing.T) {
	pad6 := make([]byte, 6)
	tests := []struct {
		name     string
		types    []uint8
		bodies   [][]byte
		ok       bool
		fragment bool
	}{
		{"hop-by-hop", []uint8{protoHopByHop}, [][]byte{pad6}, true, false},
		{"hbh+routing+destopts", []uint8{protoHopByHop, protoRouting, protoDestOpts}, [][]byte{pad6, make([]byte, 14), pad6}, true, false},
		{"ah", []uint8{protoAH}, [][]byte{make([]byte, 14)}, true, false},
		{"atomic fragment", []uint8{protoFragment}, [][]byte{make([]byte, 6)}, true, false},
		{"first fragment", []uint8{protoFragment}, [][]byte{{0, 1, 0, 0, 0, 9}}, false, true},
		{"later fragment", []uint8{protoDestOpts, protoFragment}, [][]byte{pad6, {0, 0x10, 0, 0, 0, 9}}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := ipv6WithExt(t, tt.types, tt.bodies, "hello")
			d := NewDecoder()
			var seg Segment
			ok, err := d.Decode(LinkRaw, frame, t0, len(frame), &seg)
			if err != nil || ok != tt.ok {
				t.Fatalf("Decode = %v, %v", ok, err)
			}
			if ok && (string(seg.Payload) != "hello" || seg.WireLen != 5 || seg.Dst.Port() != 80) {
				t.Errorf("payload %q wirelen %d dst %v", seg.Payload, seg.WireLen, seg.Dst)
			}
			if tt.fragment && d.Stats().Fragments != 1 {
				t.Errorf("stats %+v", d.Stats())
			}
		})
	}
}

// fragments splits an IPv4 packet (header without options) at the given
// payload offsets, multiples of 8.
func fragments(ip []byte, cuts ...int) [][]byte {
	hdr, body := ip[:20], ip[20:]
	var out [][]byte
	bounds := append(append([]int{0}, cuts...), len(body))
	for i := 0; i+1 < len(bounds); i++ {
		f := cat(hdr, body[bounds[i]:bounds[i+1]])
		binary.BigEndian.PutUint16(f[2:4], uint16(len(f)))
		fo := uint16(bounds[i] / 8)
		if i+2 < len(bounds) {
			fo |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(f[6:8], fo)
		out = append(out, f)
	}
	return out
}

func TestDecodeIPv4Fragments(t *testing.T) {
	payload := strings.Repeat("fragmented body ", 10)
	ip := ipPacket(t, tpkt{payload: payload, seq: 5})
	for _, order := range [][]int{{0, 1, 2}, {2, 0, 1}, {1, 2, 0}} {
		frags := fragments(ip, 48, 96)
		d := NewDecoder()
		var seg Segment
		var delivered int
		for i, idx := range order {
			frame := linkCases[0].wrap(frags[idx])
			ok, err := d.Decode(LinkEthernet, frame, t0, len(frame), &seg)
			if err != nil {
				t.Fatalf("order %v: fragment %d: %v", order, idx, err)
			}
			if ok {
				delivered++
				if i != len(order)-1 || string(seg.Payload) != payload || seg.Seq != 5 || seg.Src.Port() != 40000 {
					t.Errorf("order %v: at %d got seq %d payload %q", order, i, seg.Seq, seg.Payload)
				}
			}
		}
		st := d.Stats()
		if delivered != 1 || st.Fragments != 3 || st.Reassembled != 1 || st.TCP != 1 || st.DecodeErrs != 0 {
			t.Errorf("order %v: delivered %d, stats %+v", order, delivered, st)
		}
	}
	// A fragment cut by snaplen cannot be reassembled: counted, not fatal.
	frags := fragments(ip, 48)
	d := NewDecoder()
	if ok, err := d.Decode(LinkRaw, frags[0][:40], t0, len(frags[0]), new(Segment)); ok || err == nil {
		t.Errorf("cut fragment: %v %v", ok, err)
	}
}

func TestDecodeDropped(t *testing.T) {
	tcp := ipPacket(t, tpkt{payload: "x"})
	tests := []struct {
		name    string
		link    LinkType
		frame   []byte
		garbled bool
	}{
		{"udp", LinkRaw, udpPacket(t), false},
		{"arp", LinkEthernet, cat(macs, be16(0x0806), make([]byte, 28)), false},
		{"802.3 llc", LinkEthernet, cat(macs, be16(46), make([]byte, 46)), false},
		{"null af unknown", LinkNull, cat([]byte{7, 0, 0, 0}, tcp), false},
		{"ipv6 no next header", LinkRaw, func() []byte { b := ipPacket(t, tpkt{v6: true}); b[6] = protoNoNext; return b }(), false},
		{"empty", LinkEthernet, nil, true},
		{"short ethernet", LinkEthernet, macs, true},
		{"short sll2", LinkSLL2, make([]byte, 19), true},
		{"vlan cut", LinkEthernet, cat(macs, be16(etherVLAN), be16(1)), true},
		{"unknown link", LinkType(9999), tcp, true},
		{"raw version 5", LinkRaw, append([]byte{0x50}, tcp[1:]...), true},
		{"ihl 4", LinkRaw, append([]byte{0x44}, tcp[1:]...), true},
		{"ip length beyond frame", LinkRaw, tcp[:len(tcp)-1], true},
		{"tcp offset 4", LinkRaw, func() []byte { b := cat(tcp); b[20+12] = 0x40; return b }(), true},
		{"tcp offset past ip", LinkRaw, func() []byte { b := cat(tcp); b[20+12] = 0xf0; return b }(), true},
		{"ipv6 ext cut", LinkRaw, func() []byte { b := ipPacket(t, tpkt{v6: true})[:40]; b[6] = protoHopByHop; b[5] = 0; return b }(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder()
			ok, err := d.Decode(tt.link, tt.frame, t0, len(tt.frame), new(Segment))
			if ok || (err != nil) != tt.garbled {
				t.Fatalf("Decode = %v, %v", ok, err)
			}
			st := d.Stats()
			if tt.garbled && st.DecodeErrs != 1 || !tt.garbled && st.NonTCP != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestDecodeNoAlloc guards the fast path: a TCP segment costs no allocation.
func TestDecodeNoAlloc(t *testing.T) {
	for _, lc := range linkCases {
		frame := lc.wrap(ipPacket(t, tpkt{v6: lc.name == "sll2", payload: "data"}))
		d := NewDecoder()
		var seg Segment
		n := testing.AllocsPerRun(100, func() { d.Decode(lc.link, frame, t0, len(frame), &seg) })
		if n != 0 {
			t.Errorf("%s: %v allocations per packet", lc.name, n)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		b.Run(name, func(b *testing.B) {
			frame := linkCases[1].wrap(ipPacket(b, tpkt{v6: v6, payload: strings.Repeat("x", 1400)}))
			d := NewDecoder()
			var seg Segment
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if ok, _ := d.Decode(LinkEthernet, frame, t0, len(frame), &seg); !ok {
					b.Fatal("not decoded")
				}
			}
		})
	}
}
