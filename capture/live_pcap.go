//go:build libpcap

package capture

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gopacket/gopacket/pcap"
)

// OpenLive opens a live capture through libpcap (build tag libpcap): any
// interface libpcap knows ("any" included), and opt.Expr in the full pcap
// filter language. libpcap itself captures loopback packets once.
func OpenLive(opt LiveOptions) (*LiveSource, error) {
	in, err := pcap.NewInactiveHandle(opt.Interface)
	if err != nil {
		return nil, pcapOpenError(opt.Interface, err)
	}
	defer in.CleanUp()
	for _, set := range []func() error{
		func() error { return in.SetSnapLen(snapAccept) },
		func() error { return in.SetPromisc(false) },
		func() error { return in.SetTimeout(readSlice) },
		func() error { return in.SetImmediateMode(true) },
		func() error {
			size := opt.BufferBytes
			if size <= 0 {
				size = 64 << 20
			}
			return in.SetBufferSize(size)
		},
	} {
		if err := set(); err != nil {
			return nil, fmt.Errorf("capture: %s: %w", opt.Interface, err)
		}
	}
	h, err := in.Activate()
	if err != nil {
		return nil, pcapOpenError(opt.Interface, err)
	}
	fail := func(err error) (*LiveSource, error) {
		h.Close()
		return nil, err
	}
	if opt.Fanout != 0 {
		return fail(fmt.Errorf("%w: --fanout needs the AF_PACKET source (a build without -tags libpcap)", ErrNotSupported))
	}
	switch {
	case opt.Program != nil:
		ins := make([]pcap.BPFInstruction, len(opt.Program))
		for i, r := range opt.Program {
			ins[i] = pcap.BPFInstruction{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		if err := h.SetBPFInstructionFilter(ins); err != nil {
			return fail(fmt.Errorf("capture: attaching the BPF program on %s: %w", opt.Interface, err))
		}
	default:
		expr := opt.Expr
		if expr == "" {
			expr = FilterExpr(opt.Filter)
		}
		if err := h.SetBPFFilter(expr); err != nil {
			return fail(fmt.Errorf("capture: filter %q: %w", expr, err))
		}
	}
	r := &libpcapReader{h: h}
	s, err := newLiveSource(r, LinkType(h.LinkType()), false, opt, time.Now)
	if err != nil {
		return fail(err)
	}
	return s, nil
}

// FilterExpr writes spec in the pcap filter language.
func FilterExpr(spec FilterSpec) string {
	s := "tcp"
	if spec.Port != 0 {
		s += fmt.Sprintf(" and port %d", spec.Port)
	}
	if len(spec.Hosts) > 0 {
		var hs []string
		for _, h := range spec.Hosts {
			hs = append(hs, "host "+h.Unmap().String())
		}
		s += " and (" + strings.Join(hs, " or ") + ")"
	}
	return s
}

func pcapOpenError(iface string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "ermission") || strings.Contains(msg, "not permitted"):
		return ErrPermission
	case strings.Contains(msg, "No such device") || strings.Contains(msg, "doesn't exist"):
		devs, _ := pcap.FindAllDevs()
		var names []string
		for _, d := range devs {
			names = append(names, d.Name)
		}
		return fmt.Errorf("%w %q (interfaces: %s)", ErrNoInterface, iface, strings.Join(names, ", "))
	}
	return fmt.Errorf("capture: %s: %w", iface, err)
}

type libpcapReader struct {
	h                  *pcap.Handle
	lastRecv, lastDrop uint64
}

func (p *libpcapReader) read(timeout time.Duration) ([]byte, time.Time, int, bool, error) {
	data, ci, err := p.h.ZeroCopyReadPacketData()
	switch {
	case err == nil:
		return data, ci.Timestamp, ci.Length, false, nil
	case errors.Is(err, pcap.NextErrorTimeoutExpired):
		return nil, time.Time{}, 0, false, errTimeout
	}
	return nil, time.Time{}, 0, false, fmt.Errorf("capture: reading: %w", err)
}

func (p *libpcapReader) kernelStats() (uint64, uint64, error) {
	st, err := p.h.Stats()
	if err != nil {
		return 0, 0, err
	}
	recv, drop := uint64(st.PacketsReceived), uint64(st.PacketsDropped+st.PacketsIfDropped)
	dr, dd := recv-p.lastRecv, drop-p.lastDrop
	p.lastRecv, p.lastDrop = recv, drop
	return dr, dd, nil
}

func (p *libpcapReader) close() error {
	p.h.Close()
	return nil
}
