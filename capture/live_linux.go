//go:build linux && !libpcap

package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// OpenLive opens a live capture on an interface through an AF_PACKET
// socket (pure Go, no libpcap). The kernel filter comes from
// opt.Program or opt.Filter; opt.Expr needs the libpcap build.
func OpenLive(opt LiveOptions) (*LiveSource, error) {
	if opt.Expr != "" {
		return nil, fmt.Errorf("%w: a pcap filter expression needs the libpcap build (go build -tags libpcap); use --port/--host, or --bpf-ddd with the output of tcpdump -ddd EXPR", ErrNotSupported)
	}
	r, link, loop, err := openPacketSocket(opt)
	if err != nil {
		return nil, err
	}
	s, err := newLiveSource(r, link, loop, opt, time.Now)
	if err != nil {
		r.close()
		return nil, err
	}
	return s, nil
}

// Link-layer types of interfaces (ARPHRD_*) read as Ethernet or raw IP.
const (
	arphrdEther    = 1
	arphrdLoopback = 772
	arphrdNone     = 65534 // tun, wireguard: raw IP
)

// packetIgnoreOutgoing is PACKET_IGNORE_OUTGOING (Linux 4.20).
const packetIgnoreOutgoing = 23

type packetSocket struct {
	fd    int
	buf   []byte
	oob   []byte
	iface string
	// On "any" the socket is cooked (SOCK_DGRAM: frames start at the
	// network header, whatever the interface's link layer), each frame is
	// given a LINKTYPE_LINUX_SLL2 header, as tcpdump -i any writes, and
	// only the outgoing copies on loopback interfaces are duplicates.
	any      bool
	loopback map[int]bool // interface indices of loopback interfaces
}

// anyInterface is the pseudo-interface that captures on every interface.
const anyInterface = "any"

// sll2Len is the length of a LINKTYPE_LINUX_SLL2 header.
const sll2Len = 20

// putSLL2 writes the LINKTYPE_LINUX_SLL2 header of a frame received from
// ll into h: protocol, reserved, interface index, ARPHRD type, packet
// type, address length and address.
func putSLL2(h []byte, ll *unix.SockaddrLinklayer) {
	_ = h[sll2Len-1]
	binary.NativeEndian.PutUint16(h[0:2], ll.Protocol) // kept as read: in network byte order
	h[2], h[3] = 0, 0
	binary.BigEndian.PutUint32(h[4:8], uint32(ll.Ifindex))
	binary.BigEndian.PutUint16(h[8:10], ll.Hatype)
	h[10] = ll.Pkttype
	h[11] = min(ll.Halen, 8)
	copy(h[12:20], ll.Addr[:])
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacketSocket(opt LiveOptions) (*packetSocket, LinkType, bool, error) {
	if opt.Interface == anyInterface {
		return openAnySocket(opt)
	}
	ifi, err := net.InterfaceByName(opt.Interface)
	if err != nil {
		return nil, 0, false, interfaceError(opt.Interface)
	}
	hatype, err := readHatype(opt.Interface)
	if err != nil {
		return nil, 0, false, err
	}
	var link LinkType
	switch hatype {
	case arphrdEther, arphrdLoopback:
		link = LinkEthernet
	case arphrdNone:
		link = LinkRaw
	default:
		return nil, 0, false, fmt.Errorf("capture: interface %s has link type ARPHRD %d, which the AF_PACKET source does not read (the libpcap build does)", opt.Interface, hatype)
	}
	loop := ifi.Flags&net.FlagLoopback != 0
	ps, err := newPacketSocket(opt, unix.SOCK_RAW, link, ifi.Index)
	if err != nil {
		return nil, 0, false, err
	}
	if loop {
		// Best effort: the kernel then skips the outgoing copies itself;
		// keepFrame drops them on older kernels.
		_ = unix.SetsockoptInt(ps.fd, unix.SOL_PACKET, packetIgnoreOutgoing, 1)
	}
	return ps, link, loop, nil
}

// openAnySocket opens the cooked socket of -i any. The kernel runs its
// filter on the frame from the network header on, so the filter is built
// for raw IP; a program from tcpdump -i any -ddd is compiled for the SLL2
// header libpcap rewrites it from, which this socket never sees.
func openAnySocket(opt LiveOptions) (*packetSocket, LinkType, bool, error) {
	if opt.Program != nil {
		return nil, 0, false, errors.New("capture: a filter program cannot be used on any: tcpdump -i any -ddd compiles it for the cooked header, which libpcap rewrites and this socket does not see")
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, 0, false, fmt.Errorf("capture: listing interfaces: %w", err)
	}
	loopback := map[int]bool{}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 {
			loopback[ifi.Index] = true
		}
	}
	ps, err := newPacketSocket(opt, unix.SOCK_DGRAM, LinkRaw, 0)
	if err != nil {
		return nil, 0, false, err
	}
	ps.any, ps.loopback = true, loopback
	// The outgoing copies are dropped by keepFrame, and only those of
	// loopback interfaces (read reports no other frame as outgoing):
	// PACKET_IGNORE_OUTGOING would drop every frame this host sends.
	return ps, LinkSLL2, true, nil
}

// newPacketSocket opens an AF_PACKET socket of type typ (SOCK_RAW, or
// SOCK_DGRAM for cooked frames) with the kernel filter for filterLink,
// bound to interface ifindex (0: every interface).
func newPacketSocket(opt LiveOptions, typ int, filterLink LinkType, ifindex int) (*packetSocket, error) {
	// Protocol 0: the socket receives nothing until bind, so no packet
	// slips in before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, ErrPermission
		}
		return nil, fmt.Errorf("capture: AF_PACKET socket: %w", err)
	}
	ps := &packetSocket{fd: fd, buf: make([]byte, sll2Len+snapAccept), oob: make([]byte, 64), iface: opt.Interface}
	fail := func(what string, err error) (*packetSocket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("capture: %s on %s: %w", what, opt.Interface, err)
	}
	prog := opt.Program
	if prog == nil {
		if prog, err = BuildFilter(filterLink, opt.Filter); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := attachFilter(fd, prog); err != nil {
		return fail("attaching the BPF filter", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	size := opt.BufferBytes
	if size <= 0 {
		size = 64 << 20
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if opt.Fanout != 0 {
		if opt.Fanout < 1 || opt.Fanout > 0xffff {
			unix.Close(fd)
			return nil, fmt.Errorf("capture: fanout id %d out of range 1..65535", opt.Fanout)
		}
		// Flow hash (symmetric: both directions of a connection go to
		// the same socket), IPv4 fragments reassembled before hashing.
		// The option is a C int: the flag sets its top bit (kept as a
		// 32-bit pattern so that 32-bit platforms build too).
		v := int(int32(uint32(opt.Fanout&0xffff) | uint32(unix.PACKET_FANOUT_HASH|unix.PACKET_FANOUT_FLAG_DEFRAG)<<16))
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, v); err != nil {
			return fail(fmt.Sprintf("joining fanout group %d (every member must use the same interface and mode)", opt.Fanout), err)
		}
	}
	// Reset the counters: what passed before bind is not ours.
	_, _, _ = ps.kernelStats()
	return ps, nil
}

func readHatype(iface string) (int, error) {
	b, err := os.ReadFile("/sys/class/net/" + iface + "/type")
	if err != nil {
		return 0, fmt.Errorf("capture: link type of %s: %w", iface, err)
	}
	var t int
	if _, err := fmt.Sscan(string(b), &t); err != nil {
		return 0, fmt.Errorf("capture: link type of %s: %q", iface, b)
	}
	return t, nil
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	if len(prog) == 0 {
		return nil
	}
	f := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		f[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fp := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp)
}

func (p *packetSocket) read(timeout time.Duration) ([]byte, time.Time, int, bool, error) {
	for {
		buf := p.buf[sll2Len:]
		n, oobn, _, from, err := unix.Recvmsg(p.fd, buf, p.oob, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if err == nil {
			ts := timestampOf(p.oob[:oobn])
			if ts.IsZero() {
				ts = time.Now()
			}
			frame := buf[:min(n, len(buf))]
			out := false
			ll, ok := from.(*unix.SockaddrLinklayer)
			if ok {
				out = ll.Pkttype == unix.PACKET_OUTGOING
			}
			if p.any {
				if !ok {
					continue // no address to build the cooked header from: never seen
				}
				out = out && p.loopback[ll.Ifindex]
				putSLL2(p.buf[:sll2Len], ll)
				frame = p.buf[:sll2Len+len(frame)]
				n += sll2Len
			}
			return frame, ts, n, out, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			return nil, time.Time{}, 0, false, fmt.Errorf("capture: reading %s: %w", p.iface, err)
		}
		if timeout <= 0 {
			return nil, time.Time{}, 0, false, errTimeout
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		k, err := unix.Poll(fds, int(timeout.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			return nil, time.Time{}, 0, false, fmt.Errorf("capture: poll on %s: %w", p.iface, err)
		}
		if k == 0 {
			return nil, time.Time{}, 0, false, errTimeout
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return nil, time.Time{}, 0, false, fmt.Errorf("capture: %s went away", p.iface)
		}
		timeout = 0 // one more try, then report the timeout
	}
}

// timestampOf finds the SCM_TIMESTAMPNS control message: the kernel's
// receive time of the packet.
func timestampOf(oob []byte) time.Time {
	hl := unix.CmsgLen(0)
	for len(oob) >= hl {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hl || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= hl+int(unsafe.Sizeof(unix.Timespec{})) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[hl]))
			return time.Unix(int64(ts.Sec), int64(ts.Nsec))
		}
		next := unix.CmsgSpace(l - hl)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return time.Time{}
}

func (p *packetSocket) kernelStats() (uint64, uint64, error) {
	st, err := unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, 0, err
	}
	return uint64(st.Packets), uint64(st.Drops), nil
}

func (p *packetSocket) close() error {
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	return err
}
