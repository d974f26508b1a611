package reassembly

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/expectscope/expectscope/capture"
)

var (
	base = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	cli  = netip.MustParseAddrPort("10.0.0.1:40000")
	srv  = netip.MustParseAddrPort("10.0.0.2:80")
)

// Flag shorthands.
const (
	fS  = capture.FlagSYN
	fSA = capture.FlagSYN | capture.FlagACK
	fA  = capture.FlagACK
	fPA = capture.FlagPSH | capture.FlagACK
	fFA = capture.FlagFIN | capture.FlagACK
	fR  = capture.FlagRST
	fRA = capture.FlagRST | capture.FlagACK
)

// recorder is a StreamFactory whose streams log every call, in order, in
// one shared log.
type recorder struct {
	log   []string
	n     int
	base  time.Time
	multi bool // prefix lines with the connection number
}

type recStream struct {
	r  *recorder
	id int
}

func (r *recorder) New(info ConnInfo) Stream {
	s := &recStream{r: r, id: r.n}
	r.n++
	s.logf("open A=%v B=%v hs=%v pkt=%d", info.A, info.B, info.Handshake, info.FirstPacket)
	return s
}

func (s *recStream) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if s.r.multi {
		line = fmt.Sprintf("#%d ", s.id) + line
	}
	s.r.log = append(s.r.log, line)
}

func (s *recStream) ms(t time.Time) string {
	return fmt.Sprintf("@%v", t.Sub(s.r.base))
}

func sideName(x Side) string { return string("AB"[x]) }

func (s *recStream) Handshake(rtt time.Duration) { s.logf("hs %v", rtt) }
func (s *recStream) Data(x Side, b []byte, at time.Time) {
	s.logf("data %s %q %s", sideName(x), b, s.ms(at))
}
func (s *recStream) Gap(x Side, n int64, at time.Time) {
	s.logf("gap %s %d %s", sideName(x), n, s.ms(at))
}
func (s *recStream) End(x Side, r EndReason, at time.Time) {
	s.logf("end %s %v %s", sideName(x), r, s.ms(at))
}
func (s *recStream) Close(r EndReason, at time.Time) { s.logf("close %v %s", r, s.ms(at)) }

// sg describes one segment: ms of capture time, direction, flags, seq,
// ack, payload.
type sg struct {
	ms       int
	fromSrv  bool
	flags    uint8
	seq, ack uint32
	data     string
	wire     int // >len(data): truncated by snaplen
	src, dst netip.AddrPort
}

// c2s and s2c build segments from the client and from the server.
func c2s(ms int, flags uint8, seq, ack uint32, data string) sg {
	return sg{ms: ms, flags: flags, seq: seq, ack: ack, data: data}
}

func s2c(ms int, flags uint8, seq, ack uint32, data string) sg {
	return sg{ms: ms, fromSrv: true, flags: flags, seq: seq, ack: ack, data: data}
}

func (g sg) segment(pkt uint64) *capture.Segment {
	src, dst := cli, srv
	if g.fromSrv {
		src, dst = srv, cli
	}
	if g.src.IsValid() {
		src, dst = g.src, g.dst
		if g.fromSrv {
			src, dst = dst, src
		}
	}
	seg := &capture.Segment{
		Time:    base.Add(time.Duration(g.ms) * time.Millisecond),
		Src:     src,
		Dst:     dst,
		Seq:     g.seq,
		Ack:     g.ack,
		Flags:   g.flags,
		Payload: []byte(g.data),
		WireLen: len(g.data),
		Packet:  pkt,
	}
	if g.wire > len(g.data) {
		seg.Truncated = true
		seg.WireLen = g.wire
	}
	return seg
}

// run feeds segs to a new assembler and, unless flushAt < 0, ends the
// input at flushAt ms. The payload buffer is scribbled over after each
// Add, as a capture source reusing its buffer would.
func run(t testing.TB, cfg Config, segs []sg, flushAt int, multi bool) (*recorder, *Assembler) {
	t.Helper()
	r := &recorder{base: base, multi: multi}
	a := NewAssembler(r, cfg)
	for i, g := range segs {
		seg := g.segment(uint64(i + 1))
		a.Add(seg)
		for j := range seg.Payload {
			seg.Payload[j] = '!'
		}
	}
	if flushAt >= 0 {
		a.FlushAll(base.Add(time.Duration(flushAt) * time.Millisecond))
	}
	return r, a
}

func diffLog(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return
	}
	t.Errorf("calls differ\n got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
}

// handshake returns the three segments of a handshake with client ISN
// ci and server ISN si at 0, 10 and 20 ms.
func handshake(ci, si uint32) []sg {
	return []sg{
		c2s(0, fS, ci, 0, ""),
		s2c(10, fSA, si, ci+1, ""),
		c2s(20, fA, ci+1, si+1, ""),
	}
}

func cat(parts ...[]sg) []sg {
	var out []sg
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// twice repeats every segment, as a capture that holds each packet twice.
func twice(segs []sg) []sg {
	var out []sg
	for _, g := range segs {
		out = append(out, g, g)
	}
	return out
}
