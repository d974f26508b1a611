package reassembly

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/expectscope/expectscope/capture"
)

// The fuzz segments carry byte(seq) in every payload byte (with the top
// bit flipped for the server's direction), so whatever the order, overlap
// or loss, delivered bytes must follow that pattern across Data and Gap
// calls unless the input asked for corrupted copies.

type fuzzFactory struct {
	t       *testing.T
	streams []*fuzzStream
	strict  *bool
}

type fuzzStream struct {
	f      *fuzzFactory
	info   ConnInfo
	mask   [2]byte
	next   [2]int // expected next byte value, -1 unknown
	ended  [2]bool
	hs     int
	closes int
}

func (f *fuzzFactory) New(info ConnInfo) Stream {
	s := &fuzzStream{f: f, info: info, next: [2]int{-1, -1}}
	if info.A.Port() == srv.Port() {
		s.mask[SideA] = 0x80
	} else {
		s.mask[SideB] = 0x80
	}
	f.streams = append(f.streams, s)
	return s
}

func (s *fuzzStream) live(what string) {
	if s.closes > 0 {
		s.f.t.Fatalf("%s after Close on %v", what, s.info)
	}
}

func (s *fuzzStream) Handshake(rtt time.Duration) {
	s.live("Handshake")
	if s.hs++; s.hs > 1 {
		s.f.t.Fatalf("Handshake twice")
	}
}

func (s *fuzzStream) Data(x Side, b []byte, at time.Time) {
	s.live("Data")
	if len(b) == 0 {
		s.f.t.Fatalf("empty Data")
	}
	if s.ended[x] {
		s.f.t.Fatalf("Data on side %d after its End", x)
	}
	if !*s.f.strict {
		return
	}
	v := int(b[0] ^ s.mask[x])
	if s.next[x] >= 0 && v != s.next[x] {
		s.f.t.Fatalf("side %d: Data starts with byte %d, want %d", x, v, s.next[x])
	}
	for i, c := range b {
		if int(c^s.mask[x]) != (v+i)&0xff {
			s.f.t.Fatalf("side %d: byte %d of Data is %d, want %d", x, i, c^s.mask[x], (v+i)&0xff)
		}
	}
	s.next[x] = (v + len(b)) & 0xff
}

func (s *fuzzStream) Gap(x Side, n int64, at time.Time) {
	s.live("Gap")
	if n <= 0 {
		s.f.t.Fatalf("Gap of %d", n)
	}
	if s.ended[x] {
		s.f.t.Fatalf("Gap on side %d after its End", x)
	}
	if s.next[x] >= 0 {
		s.next[x] = int((int64(s.next[x]) + n) & 0xff)
	}
}

func (s *fuzzStream) End(x Side, r EndReason, at time.Time) {
	s.live("End")
	if s.ended[x] {
		s.f.t.Fatalf("End twice on side %d", x)
	}
	s.ended[x] = true
}

func (s *fuzzStream) Close(r EndReason, at time.Time) {
	s.live("Close")
	s.closes++
}

func FuzzAssembler(f *testing.F) {
	isns := []byte{0xe8, 0x03, 0, 0, 0x88, 0x13, 0, 0}
	wrap := []byte{0xf0, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff}
	// op, x, y, z, w (see the decoder below).
	hs := []byte{7, 0, 0, 0, 0, 8, 1, 0, 0, 0, 10, 0, 0, 0, 0}
	f.Add(append(append([]byte{}, isns...), hs...))
	f.Add(append(append(append([]byte{}, wrap...), hs...),
		0, 8, 0, 0x10, 20, 12, 8, 0, 0x20, 20, 0, 8, 0, 0x30, 20, 13, 0, 0, 0, 0, 6, 8, 0, 0x40, 5, 6, 9, 0, 0x10, 3))
	f.Add(append(append([]byte{}, isns...),
		0, 0, 1, 0, 30, 0, 0, 0, 0, 40, 11, 0, 4, 0x3f, 10, 15, 0, 0, 0x10, 8, 9, 1, 0, 0, 0, 14, 0, 200, 0, 0, 0, 2, 0, 0, 9))
	f.Add(append(append([]byte{}, isns...),
		0, 2, 0, 0, 9, 0, 4, 0, 0, 9, 0, 6, 0, 0, 9, 0, 8, 0, 0, 9, 7, 2, 0, 1, 0, 0, 2, 0, 0x10, 63, 0, 2, 0, 0x30, 63, 0, 2, 0, 0x50, 63))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		// base[0]: client data starts here; base[1]: server.
		base := [2]uint32{binary.LittleEndian.Uint32(in), binary.LittleEndian.Uint32(in[4:])}
		in = in[8:]
		strict := true
		ff := &fuzzFactory{t: t, strict: &strict}
		cfg := Config{MaxConns: 3, MaxBufferedPerConn: 700, MaxBufferedTotal: 1500, IdleTimeout: time.Minute}
		a := NewAssembler(ff, cfg)
		now := base0
		var held []*capture.Segment
		var pkt uint64
		buf := make([]byte, 0, 128)
		send := func(seg *capture.Segment) {
			a.Add(seg)
			if a.open > cfg.MaxConns || a.conns.len() > cfg.MaxConns {
				t.Fatalf("%d open, %d tracked", a.open, a.conns.len())
			}
			if a.buffered > cfg.MaxBufferedTotal+16<<10 || a.buffered < 0 {
				t.Fatalf("buffered %d", a.buffered)
			}
		}
		for len(in) >= 5 {
			op, x, y, z, w := in[0]%16, in[1], in[2], in[3], in[4]
			in = in[5:]
			now = now.Add(time.Duration(1+z&7) * time.Millisecond)
			pkt++
			d := int(x & 1) // 1: from the server
			cport := netip.AddrPortFrom(cli.Addr(), uint16(1+(x>>1)&3))
			src, dst := cport, srv
			if d == 1 {
				src, dst = srv, cport
			}
			off := uint32(y)<<4 | uint32(z>>4)
			seg := &capture.Segment{Time: now, Src: src, Dst: dst, Packet: pkt,
				Seq: base[d] + off, Ack: base[1-d] + uint32(z)*8}
			if x&8 != 0 {
				seg.Flags |= capture.FlagACK
			}
			n := int(w & 63)
			payload := func() {
				buf = buf[:n]
				for i := range buf {
					buf[i] = byte(seg.Seq+uint32(i)) ^ byte(0x80*d)
				}
				seg.Payload = buf
				seg.WireLen = n
				seg.Flags |= capture.FlagPSH
			}
			switch op {
			case 0, 1, 2, 3, 4, 5:
				payload()
			case 6:
				payload()
				seg.Flags |= capture.FlagFIN
			case 7:
				seg.Flags = capture.FlagSYN
				seg.Seq = base[d] - 1 - uint32(z&1)*0x10000
			case 8:
				seg.Flags = capture.FlagSYN | capture.FlagACK
				seg.Seq = base[d] - 1 - uint32(z&1)*0x10000
			case 9:
				seg.Flags = capture.FlagRST | seg.Flags&capture.FlagACK
			case 10:
				seg.Flags = capture.FlagACK
				seg.Ack = base[1-d] + off
			case 11:
				payload()
				seg.Truncated = true
				seg.WireLen = n + int(z&31)
			case 12:
				payload()
				cp := *seg
				cp.Payload = append([]byte(nil), buf...)
				held = append(held, &cp)
				continue
			case 13:
				for i := len(held) - 1; i >= 0; i-- {
					held[i].Time = now
					send(held[i])
				}
				held = held[:0]
				continue
			case 14:
				now = now.Add(time.Duration(y) * time.Second)
				continue
			case 15:
				payload()
				if n > 0 {
					buf[n/2] ^= 0x55
					strict = false
				}
			}
			send(seg)
			// The source reuses its buffer.
			for i := range buf {
				buf[i] = 0xee
			}
		}
		a.FlushAll(now.Add(time.Second))
		for _, s := range ff.streams {
			if s.closes != 1 {
				t.Fatalf("stream %v closed %d times", s.info, s.closes)
			}
		}
		if a.open != 0 || a.conns.len() != 0 || a.buffered != 0 || a.bufHead != nil || a.lruHead != nil {
			t.Fatalf("after FlushAll: open %d, conns %d, buffered %d", a.open, a.conns.len(), a.buffered)
		}
		if st := a.Stats(); st.Connections != uint64(len(ff.streams)) {
			t.Fatalf("Connections %d, streams %d", st.Connections, len(ff.streams))
		}
	})
}

var base0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
