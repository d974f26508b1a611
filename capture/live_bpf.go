package capture

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"
)

// FilterSpec is what the kernel filter of a live capture keeps: TCP
// segments, to or from Port when it is not 0, with one of Hosts as source
// or destination when Hosts is not empty ("tcp and port N and host H").
type FilterSpec struct {
	Port  uint16
	Hosts []netip.Addr
}

// snapAccept is what an accepting filter returns: the bytes of the packet
// to keep. It is larger than any frame (loopback GSO frames reach 64 KiB),
// so nothing is cut.
const snapAccept = 0x40000

// Offsets in an IPv4 and an IPv6 header.
const (
	ip4Proto  = 9
	ip4Frag   = 6
	ip4Src    = 12
	ip4Dst    = 16
	ip6Next   = 6
	ip6Src    = 8
	ip6Dst    = 24
	ip6HdrLen = 40
)

// BuildFilter assembles a classic BPF program for spec, for frames of the
// given link type (Ethernet, or raw IP with no link header). Like
// tcpdump's "tcp and port N", it looks at IPv4 and at IPv6 without
// extension headers; unlike it, it keeps the later fragments of a
// fragmented IPv4 TCP datagram (they carry no port, and the decoder
// reassembles them with the first, which the port selects).
func BuildFilter(link LinkType, spec FilterSpec) ([]bpf.RawInstruction, error) {
	var off uint32 // where the IP header starts
	a := &asm{labels: map[string]int{}}
	switch link {
	case LinkEthernet:
		off = 14
		a.emit(bpf.LoadAbsolute{Off: 12, Size: 2})
		a.jeq(etherIPv4, "v4", "")
		a.jeq(etherIPv6, "v6", "drop")
	case LinkRaw:
		a.emit(bpf.LoadAbsolute{Off: 0, Size: 1})
		a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
		a.jeq(4, "v4", "")
		a.jeq(6, "v6", "drop")
	default:
		return nil, fmt.Errorf("capture: no filter for link type %d", link)
	}
	var v4, v6 []netip.Addr
	for _, h := range spec.Hosts {
		h = h.Unmap()
		if h.Is4() {
			v4 = append(v4, h)
		} else {
			v6 = append(v6, h)
		}
	}

	// IPv4: protocol TCP, addresses, then the ports of the first fragment.
	a.label("v4")
	a.emit(bpf.LoadAbsolute{Off: off + ip4Proto, Size: 1})
	a.jeq(protoTCP, "", "drop")
	if len(spec.Hosts) > 0 {
		if len(v4) == 0 {
			a.jump("drop")
		}
		for i, h := range v4 {
			b := h.As4()
			k := be32(b[:])
			next := fmt.Sprintf("v4h%d", i+1)
			if i == len(v4)-1 {
				next = "drop"
			}
			a.emit(bpf.LoadAbsolute{Off: off + ip4Src, Size: 4})
			a.jeq(k, "v4host", "")
			a.emit(bpf.LoadAbsolute{Off: off + ip4Dst, Size: 4})
			a.jeq(k, "v4host", next)
			if next != "drop" {
				a.label(next)
			}
		}
		a.label("v4host")
	}
	if spec.Port != 0 {
		a.emit(bpf.LoadAbsolute{Off: off + ip4Frag, Size: 2})
		a.jset(0x1fff, "accept", "") // a later fragment: no ports in it
		a.emit(bpf.LoadMemShift{Off: off})
		a.emit(bpf.LoadIndirect{Off: off, Size: 2})
		a.jeq(uint32(spec.Port), "accept", "")
		a.emit(bpf.LoadIndirect{Off: off + 2, Size: 2})
		a.jeq(uint32(spec.Port), "accept", "drop")
	} else {
		a.jump("accept")
	}

	// IPv6: next header TCP (no extension headers), addresses, ports.
	a.label("v6")
	a.emit(bpf.LoadAbsolute{Off: off + ip6Next, Size: 1})
	a.jeq(protoTCP, "", "drop")
	if len(spec.Hosts) > 0 {
		if len(v6) == 0 {
			a.jump("drop")
		}
		for i, h := range v6 {
			b := h.As16()
			next := fmt.Sprintf("v6h%d", i+1)
			if i == len(v6)-1 {
				next = "drop"
			}
			for j, at := range []uint32{ip6Src, ip6Dst} {
				miss := fmt.Sprintf("v6h%d.%d", i, j)
				if j == 1 {
					miss = next
				}
				for w := 0; w < 4; w++ {
					a.emit(bpf.LoadAbsolute{Off: off + at + uint32(4*w), Size: 4})
					if w < 3 {
						a.jeq(be32(b[4*w:]), "", miss)
					} else {
						a.jeq(be32(b[4*w:]), "v6host", miss)
					}
				}
				if miss != "drop" {
					a.label(miss)
				}
			}
		}
		a.label("v6host")
	}
	if spec.Port != 0 {
		a.emit(bpf.LoadAbsolute{Off: off + ip6HdrLen, Size: 2})
		a.jeq(uint32(spec.Port), "accept", "")
		a.emit(bpf.LoadAbsolute{Off: off + ip6HdrLen + 2, Size: 2})
		a.jeq(uint32(spec.Port), "accept", "drop")
	}

	a.label("accept")
	a.emit(bpf.RetConstant{Val: snapAccept})
	a.label("drop")
	a.emit(bpf.RetConstant{Val: 0})
	return a.assemble()
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// asm is a tiny classic-BPF assembler with forward labels. An empty
// label means the next instruction.
type asm struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string // instruction index -> true, false label
	labels map[string]int
}

func (a *asm) emit(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) { a.labels[name] = len(a.ins) }

func (a *asm) cond(c bpf.JumpTest, v uint32, t, f string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{t, f}
	a.emit(bpf.JumpIf{Cond: c, Val: v})
}

func (a *asm) jeq(v uint32, t, f string)  { a.cond(bpf.JumpEqual, v, t, f) }
func (a *asm) jset(v uint32, t, f string) { a.cond(bpf.JumpBitsSet, v, t, f) }

func (a *asm) jump(to string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{to, ""}
	a.emit(bpf.Jump{})
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	skip := func(at int, l string) (uint32, error) {
		if l == "" {
			return 0, nil
		}
		to, ok := a.labels[l]
		if !ok {
			return 0, fmt.Errorf("capture: bpf: undefined label %q", l)
		}
		d := to - at - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("capture: bpf: jump to %q out of range (%d)", l, d)
		}
		return uint32(d), nil
	}
	for at, ls := range a.jumps {
		t, err := skip(at, ls[0])
		if err != nil {
			return nil, err
		}
		switch i := a.ins[at].(type) {
		case bpf.Jump:
			i.Skip = t
			a.ins[at] = i
		case bpf.JumpIf:
			f, err := skip(at, ls[1])
			if err != nil {
				return nil, err
			}
			i.SkipTrue, i.SkipFalse = uint8(t), uint8(f)
			a.ins[at] = i
		}
	}
	return bpf.Assemble(a.ins)
}

// ParseDDD reads a classic BPF program as printed by `tcpdump -ddd EXPR`
// (a count line, then "code jt jf k" per instruction, decimal), or by
// `tcpdump -dd` ("{ 0x28, 0, 0, 0x0000000c },").
func ParseDDD(r io.Reader) ([]bpf.RawInstruction, error) {
	sc := bufio.NewScanner(r)
	var prog []bpf.RawInstruction
	count := -1
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		dd := strings.HasPrefix(s, "{")
		if dd {
			s = strings.TrimSuffix(strings.TrimSuffix(s, ","), "}")
			s = strings.ReplaceAll(strings.TrimPrefix(s, "{"), ",", " ")
		}
		f := strings.Fields(s)
		if len(f) == 1 && count < 0 && len(prog) == 0 && !dd {
			n, err := strconv.ParseUint(f[0], 10, 16)
			if err != nil {
				return nil, fmt.Errorf("bpf line %d: bad instruction count %q", line, f[0])
			}
			count = int(n)
			continue
		}
		if len(f) != 4 {
			return nil, fmt.Errorf("bpf line %d: want \"code jt jf k\", got %q", line, sc.Text())
		}
		var v [4]uint64
		for i, x := range f {
			n, err := strconv.ParseUint(x, 0, 32)
			if err != nil {
				return nil, fmt.Errorf("bpf line %d: bad number %q", line, x)
			}
			v[i] = n
		}
		if v[0] > 0xffff || v[1] > 0xff || v[2] > 0xff {
			return nil, fmt.Errorf("bpf line %d: field out of range in %q", line, sc.Text())
		}
		prog = append(prog, bpf.RawInstruction{Op: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(prog) == 0 {
		return nil, fmt.Errorf("bpf: no instructions")
	}
	if count >= 0 && count != len(prog) {
		return nil, fmt.Errorf("bpf: the count line says %d instructions, %d follow", count, len(prog))
	}
	if len(prog) > 4096 {
		return nil, fmt.Errorf("bpf: %d instructions, the kernel takes at most 4096", len(prog))
	}
	// Jumps must land inside the program (the kernel checks too, with a
	// less helpful EINVAL).
	for i, ins := range prog {
		if ins.Op&0x07 == 0x05 { // BPF_JMP
			far := int(ins.Jt)
			if ins.Op&0xf0 == 0x00 { // BPF_JA
				far = int(ins.K)
			} else {
				far = max(far, int(ins.Jf))
			}
			if i+1+far >= len(prog) {
				return nil, fmt.Errorf("bpf: instruction %d jumps past the end", i)
			}
		}
	}
	if last := prog[len(prog)-1]; last.Op&0x07 != 0x06 { // BPF_RET
		return nil, fmt.Errorf("bpf: the program does not end with a return")
	}
	return prog, nil
}
