package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
)

// LiveOptions configure a live capture.
type LiveOptions struct {
	// Interface is the name of the interface to sniff.
	Interface string
	// Filter selects what the kernel passes up (see BuildFilter). It is
	// ignored when Program is set.
	Filter FilterSpec
	// Program is a ready classic BPF program (from ParseDDD) for the
	// interface's link type; it replaces Filter.
	Program []bpf.RawInstruction
	// Expr is a filter expression in pcap syntax: only the libpcap
	// backend (build tag libpcap) compiles it.
	Expr string
	// Fanout, when not 0, joins the PACKET_FANOUT group with this id
	// (1..65535), spreading flows by hash over the processes in the group.
	Fanout int
	// BufferBytes is the socket receive buffer (0: 64 MiB).
	BufferBytes int
	// TickEvery is how much wall time without a packet passes before the
	// source yields a clock tick (0: 500 ms).
	TickEvery time.Duration
	// DropCheckEvery is how often the kernel's drop counter is read (0: 1 s).
	DropCheckEvery time.Duration
	// Save, when set, receives every captured frame as pcap (-w).
	Save io.Writer
	// Warn receives non-fatal problems, e.g. the kernel dropping packets.
	// It is called from the goroutine that calls Next.
	Warn func(error)
}

// LiveStats are the counters of a live source beyond Stats.
type LiveStats struct {
	// KernelPackets and KernelDrops are the kernel's PACKET_STATISTICS,
	// summed: packets that passed the filter, and those dropped because
	// the socket buffer was full (or, for libpcap, the counters it offers).
	KernelPackets uint64
	KernelDrops   uint64
	// LoopbackDups are the outgoing copies skipped on a loopback
	// interface, where each packet is seen leaving and arriving.
	LoopbackDups uint64
	// Ticks are the clock ticks yielded while the interface was idle.
	Ticks uint64
}

// Errors of OpenLive, for errors.Is.
var (
	// ErrPermission means the process may not open a packet socket.
	ErrPermission = errors.New("permission denied: live capture needs the CAP_NET_RAW capability")
	// ErrNoInterface means the interface does not exist; the error
	// wrapping it names the ones that do.
	ErrNoInterface = errors.New("no such interface")
	// ErrNotSupported means live capture is not available in this build.
	ErrNotSupported = errors.New("live capture is not supported by this build")
)

// LiveSource is a Source that reads a network interface. Next blocks
// until a TCP segment arrives, or yields a clock tick when the interface
// has been idle, or io.EOF once Stop was called.
type LiveSource struct {
	r        frameReader
	link     LinkType
	loopback bool
	dec      *Decoder
	seg      Segment
	opt      LiveOptions
	save     *PcapWriter
	saveBuf  *bufio.Writer
	now      func() time.Time

	stopped   atomic.Bool
	lastEmit  time.Time // wall time of the last segment or tick yielded
	lastCheck time.Time // wall time of the last drop-counter read
	live      LiveStats
	warnedAt  uint64 // drops already warned about
	saveErr   error
}

// frameReader is one way of reading frames from an interface: an
// AF_PACKET socket, libpcap, or a fake in tests.
type frameReader interface {
	// read waits at most timeout for a frame. It returns errTimeout when
	// none came. frame is valid until the next read; wireLen is the
	// frame's length on the wire; outgoing says the host sent it.
	read(timeout time.Duration) (frame []byte, ts time.Time, wireLen int, outgoing bool, err error)
	// kernelStats returns the counts since the previous call.
	kernelStats() (packets, drops uint64, err error)
	close() error
}

var errTimeout = errors.New("timeout")

// readSlice bounds one read so that Stop is noticed quickly.
const readSlice = 100 * time.Millisecond

func newLiveSource(r frameReader, link LinkType, loopback bool, opt LiveOptions, now func() time.Time) (*LiveSource, error) {
	if opt.TickEvery <= 0 {
		opt.TickEvery = 500 * time.Millisecond
	}
	if opt.DropCheckEvery <= 0 {
		opt.DropCheckEvery = time.Second
	}
	s := &LiveSource{r: r, link: link, loopback: loopback, dec: NewDecoder(), opt: opt, now: now}
	if opt.Save != nil {
		s.saveBuf = bufio.NewWriterSize(opt.Save, 1<<16)
		w, err := NewPcapWriter(s.saveBuf, link, snapAccept)
		if err != nil {
			return nil, err
		}
		s.save = w
	}
	t := now()
	s.lastEmit, s.lastCheck = t, t
	return s, nil
}

// keepFrame reports whether a frame is captured: on a loopback interface
// every packet passes twice, once outgoing and once incoming, and only
// the incoming copy is kept.
func keepFrame(loopback, outgoing bool) bool { return !(loopback && outgoing) }

// LinkType is the link type of the frames (and of the -w file).
func (s *LiveSource) LinkType() LinkType { return s.link }

// Stop makes Next return io.EOF within a read slice; it is safe to call
// from another goroutine (a signal handler, a timer).
func (s *LiveSource) Stop() { s.stopped.Store(true) }

// Next implements Source. A segment whose Src is not valid and which has
// no payload is a clock tick: Time is the wall clock, for flushing idle
// connections while no packet comes.
func (s *LiveSource) Next() (*Segment, error) {
	for {
		if s.stopped.Load() {
			s.checkDrops()
			return nil, io.EOF
		}
		now := s.now()
		if now.Sub(s.lastCheck) >= s.opt.DropCheckEvery {
			s.lastCheck = now
			s.checkDrops()
		}
		idle := now.Sub(s.lastEmit)
		if idle >= s.opt.TickEvery {
			s.lastEmit = now
			s.live.Ticks++
			s.flushSave()
			s.seg = Segment{Time: now}
			return &s.seg, nil
		}
		frame, ts, wire, out, err := s.r.read(min(s.opt.TickEvery-idle, readSlice))
		if err == errTimeout {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !keepFrame(s.loopback, out) {
			s.live.LoopbackDups++
			continue
		}
		if s.save != nil && s.saveErr == nil {
			if err := s.save.WritePacket(ts, wire, frame); err != nil {
				s.saveErr = err
				s.warn(fmt.Errorf("saving packets stopped: %w", err))
			}
		}
		ok, _ := s.dec.Decode(s.link, frame, ts, wire, &s.seg)
		if !ok {
			continue
		}
		s.lastEmit = s.now()
		return &s.seg, nil
	}
}

func (s *LiveSource) warn(err error) {
	if s.opt.Warn != nil {
		s.opt.Warn(err)
	}
}

// checkDrops adds up the kernel counters and warns when drops grew.
func (s *LiveSource) checkDrops() {
	p, d, err := s.r.kernelStats()
	if err != nil {
		return
	}
	s.live.KernelPackets += p
	s.live.KernelDrops += d
	if s.live.KernelDrops > s.warnedAt {
		s.warn(fmt.Errorf("%s: the kernel dropped %d packet(s) (%d in all): the reader cannot keep up; narrow --port/--host, raise --buffer, or spread with --fanout",
			s.opt.Interface, s.live.KernelDrops-s.warnedAt, s.live.KernelDrops))
		s.warnedAt = s.live.KernelDrops
	}
}

func (s *LiveSource) flushSave() {
	if s.saveBuf != nil && s.saveErr == nil {
		if err := s.saveBuf.Flush(); err != nil {
			s.saveErr = err
			s.warn(fmt.Errorf("saving packets stopped: %w", err))
		}
	}
}

// Stats implements Source.
func (s *LiveSource) Stats() Stats { return s.dec.Stats() }

// LiveStats returns the kernel's counters and the loopback duplicates.
func (s *LiveSource) LiveStats() LiveStats { return s.live }

// Close implements Source: it releases the socket and flushes -w.
func (s *LiveSource) Close() error {
	s.stopped.Store(true)
	s.flushSave()
	err := s.r.close()
	if s.saveErr != nil && err == nil {
		err = s.saveErr
	}
	return err
}

// interfaceError wraps ErrNoInterface with the names that do exist.
func interfaceError(name string) error {
	ifs, _ := net.Interfaces()
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return fmt.Errorf("%w %q (interfaces: %s)", ErrNoInterface, name, strings.Join(names, ", "))
}
