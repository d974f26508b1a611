package reassembly

import (
	"net/netip"
	"testing"
	"time"
)

const (
	ci = 1000 // client ISN
	si = 5000 // server ISN
)

var openHS = "open A=10.0.0.1:40000 B=10.0.0.2:80 hs=true pkt=1"

func trunc(g sg, wire int) sg { g.wire = wire; return g }

func port(p uint16) netip.AddrPort { return netip.AddrPortFrom(cli.Addr(), p) }

// onPort moves a segment to client port p.
func onPort(p uint16, g sg) sg { g.src, g.dst = port(p), srv; return g }

type tcase struct {
	name    string
	cfg     Config
	segs    []sg
	flushAt int // ms; -1: no FlushAll
	multi   bool
	want    []string
	check   func(t *testing.T, st Stats, a *Assembler)
}

var cases = []tcase{
	{
		name: "InOrder",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "GET /"),
			s2c(40, fPA, si+1, ci+6, "200 OK"),
			c2s(50, fA, ci+6, si+7, ""),
		}),
		flushAt: 100,
		want: []string{
			openHS,
			"hs 20ms",
			`data A "GET /" @30ms`,
			`data B "200 OK" @40ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Connections != 1 || st.Gaps != 0 || st.Retransmitted != 0 || st.OutOfOrder != 0 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "HandshakeRolesAndRTT",
		segs: []sg{
			s2c(0, fA, si+1, ci+1, ""), // stray ACK before: opens nothing
			c2s(5, fS, ci, 0, ""),
			c2s(1005, fS, ci, 0, ""), // retransmitted SYN: RTT from here
			s2c(1012, fSA, si, ci+1, ""),
			c2s(1020, fA, ci+1, si+1, ""),
			c2s(1030, fPA, ci+1, si+1, "x"),
		},
		flushAt: 2000,
		want: []string{
			"open A=10.0.0.1:40000 B=10.0.0.2:80 hs=true pkt=2",
			"hs 15ms",
			`data A "x" @1.03s`,
			"close end-of-capture @2s",
		},
	},
	{
		name: "HandshakeMissingFinalACK",
		segs: []sg{
			c2s(0, fS, ci, 0, ""),
			s2c(10, fSA, si, ci+1, ""),
			s2c(30, fPA, si+1, ci+1, "220 hello"),
		},
		flushAt: 100,
		want: []string{
			openHS,
			"hs 10ms",
			`data B "220 hello" @30ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "HandshakeMissingFinalACKAtClose",
		segs: []sg{
			c2s(0, fS, ci, 0, ""),
			s2c(10, fSA, si, ci+1, ""),
		},
		flushAt: 100,
		want: []string{
			openHS,
			"hs 10ms",
			"close end-of-capture @100ms",
		},
	},
	{
		name: "MissingHandshake",
		segs: []sg{
			s2c(0, fA, si+1, ci+1, ""), // bare ACK: no connection yet
			s2c(5, fPA, si+1, ci+1, "HTTP/1.1 200 OK"),
			c2s(10, fPA, ci+1, si+16, "GET"),
		},
		flushAt: 100,
		want: []string{
			"open A=10.0.0.2:80 B=10.0.0.1:40000 hs=false pkt=2",
			`data A "HTTP/1.1 200 OK" @5ms`,
			`data B "GET" @10ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "SYNACKOnly",
		segs: []sg{
			s2c(10, fSA, si, ci+1, ""),
			c2s(20, fA, ci+1, si+1, ""),
			c2s(30, fPA, ci+1, si+1, "GET"),
			s2c(40, fPA, si+1, ci+4, "OK"),
		},
		flushAt: 100,
		want: []string{
			"open A=10.0.0.1:40000 B=10.0.0.2:80 hs=false pkt=1",
			`data A "GET" @30ms`,
			`data B "OK" @40ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "OutOfOrderFillKeepsChunkTimes",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
			c2s(40, fPA, ci+7, si+1, "GHI"),
			c2s(50, fPA, ci+1, si+1, "ABC"),
			c2s(60, fPA, ci+10, si+1, "J"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @50ms`,
			`data A "DEF" @30ms`,
			`data A "GHI" @40ms`,
			`data A "J" @60ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.OutOfOrder != 2 || st.Gaps != 0 || st.BufferedPeak == 0 {
				t.Errorf("stats %+v", st)
			}
			if a.buffered != 0 {
				t.Errorf("buffered %d after delivery", a.buffered)
			}
		},
	},
	{
		name: "Retransmission",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "ABC"),
			c2s(40, fPA, ci+1, si+1, "ABC"),
			c2s(50, fPA, ci+4, si+1, "DEF"),
			c2s(60, fPA, ci+1, si+1, "ZZZ"), // differs, but first copy wins
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @30ms`,
			`data A "DEF" @50ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Retransmitted != 2 {
				t.Errorf("Retransmitted = %d, want 2", st.Retransmitted)
			}
		},
	},
	{
		name: "ExactDuplicateStream",
		segs: twice(cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "GET /"),
			s2c(40, fPA, si+1, ci+6, "200 OK"),
			c2s(50, fFA, ci+6, si+7, ""),
			s2c(60, fFA, si+7, ci+7, ""),
			c2s(70, fA, ci+7, si+8, ""),
		})),
		flushAt: 100,
		want: []string{
			openHS,
			"hs 20ms",
			`data A "GET /" @30ms`,
			`data B "200 OK" @40ms`,
			"end A fin @50ms",
			"end B fin @60ms",
			"close fin @60ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Connections != 1 || st.Retransmitted != 2 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "PartialOverlap",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "ABC"),
			c2s(40, fPA, ci+2, si+1, "BCDE"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @30ms`,
			`data A "DE" @40ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Overlaps != 1 || st.Conflicts != 0 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "ConflictingOverlapFirstCopyWins",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
			c2s(40, fPA, ci+4, si+1, "XYZ"),   // conflicts with the held chunk
			c2s(50, fPA, ci+1, si+1, "ABCDQ"), // fills the hole, conflicts at Q
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @50ms`,
			`data A "DEF" @30ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Conflicts != 2 || st.Retransmitted != 1 || st.Overlaps != 1 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "GapByPeerACK",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
			s2c(40, fA, si+1, ci+7, ""),
			c2s(50, fPA, ci+1, si+1, "ABC"), // too late
			c2s(60, fPA, ci+7, si+1, "G"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @40ms",
			`data A "DEF" @30ms`,
			`data A "G" @60ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Gaps != 1 || st.GapBytes != 3 || st.Retransmitted != 1 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "GapByPeerACKWithoutBufferedData",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "ABC"),
			s2c(40, fPA, si+1, ci+9, "OK"), // acks 5 bytes never seen
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @30ms`,
			"gap A 5 @40ms",
			`data B "OK" @40ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "GapByBufferLimit",
		cfg:  Config{MaxBufferedPerConn: 300}, // two small chunks (2*128)
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
			c2s(40, fPA, ci+10, si+1, "JKL"),
			c2s(50, fPA, ci+16, si+1, "PQR"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @50ms",
			`data A "DEF" @30ms`,
			"gap A 3 @100ms",
			`data A "JKL" @40ms`,
			"gap A 3 @100ms",
			`data A "PQR" @50ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "GapByBufferLimitBeforeFirstChunk",
		cfg:  Config{MaxBufferedPerConn: 300},
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+10, si+1, "JKL"),
			c2s(40, fPA, ci+16, si+1, "PQR"),
			c2s(50, fPA, ci+4, si+1, "DEF"), // over the limit, before the held data
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @50ms",
			`data A "DEF" @50ms`,
			"gap A 3 @100ms",
			`data A "JKL" @30ms`,
			"gap A 3 @100ms",
			`data A "PQR" @40ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "FINAheadReleasedByPeerACK",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fFA, ci+4, si+1, ""),
			s2c(40, fA, si+1, ci+5, ""),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @40ms",
			"end A fin @30ms",
			"close end-of-capture @100ms",
		},
	},
	{
		name:  "GapByTotalBufferLimit",
		cfg:   Config{MaxBufferedTotal: 300},
		multi: true,
		segs: []sg{
			onPort(1, c2s(0, fPA, 100, 1, "a")),
			onPort(1, c2s(1, fPA, 110, 1, "b")), // held
			onPort(2, c2s(2, fPA, 200, 1, "c")),
			onPort(2, c2s(3, fPA, 210, 1, "d")), // held
			onPort(2, c2s(4, fPA, 220, 1, "e")), // over: port 1 flushed
		},
		flushAt: 100,
		want: []string{
			"#0 open A=10.0.0.1:1 B=10.0.0.2:80 hs=false pkt=1",
			`#0 data A "a" @0s`,
			"#1 open A=10.0.0.1:2 B=10.0.0.2:80 hs=false pkt=3",
			`#1 data A "c" @2ms`,
			"#0 gap A 9 @4ms",
			`#0 data A "b" @1ms`,
			"#0 close end-of-capture @100ms",
			"#1 gap A 9 @100ms",
			`#1 data A "d" @3ms`,
			"#1 gap A 9 @100ms",
			`#1 data A "e" @4ms`,
			"#1 close end-of-capture @100ms",
		},
	},
	{
		name: "GapAtFlushAll",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @100ms",
			`data A "DEF" @30ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "SnaplenTruncation",
		segs: cat(handshake(ci, si), []sg{
			trunc(c2s(30, fPA, ci+1, si+1, "AB"), 5),
			c2s(40, fPA, ci+6, si+1, "FG"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "AB" @30ms`,
			"gap A 3 @30ms",
			`data A "FG" @40ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.GapBytes != 3 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "SnaplenTruncationOutOfOrder",
		segs: cat(handshake(ci, si), []sg{
			trunc(c2s(30, fPA, ci+4, si+1, "DE"), 4),
			c2s(40, fPA, ci+8, si+1, "HI"),
			c2s(50, fPA, ci+1, si+1, "ABC"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @50ms`,
			`data A "DE" @30ms`,
			"gap A 2 @30ms",
			`data A "HI" @40ms`,
			"close end-of-capture @100ms",
		},
	},
	{
		name: "FINBothSidesClose",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "GET"),
			s2c(40, fPA, si+1, ci+4, "OK"),
			c2s(50, fFA, ci+4, si+3, ""),
			s2c(60, fFA|fPA, si+3, ci+5, "!"),
			c2s(70, fA, ci+5, si+5, ""),  // last ACK: ignored
			s2c(80, fFA, si+4, ci+5, ""), // retransmitted FIN: ignored
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "GET" @30ms`,
			`data B "OK" @40ms`,
			"end A fin @50ms",
			`data B "!" @60ms`,
			"end B fin @60ms",
			"close fin @60ms",
		},
	},
	{
		name: "FINWithHoleAndBufferedData",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+4, si+1, "DEF"),
			c2s(40, fFA, ci+7, si+1, ""),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			"gap A 3 @40ms",
			`data A "DEF" @30ms`,
			"end A fin @40ms",
			"close end-of-capture @100ms",
		},
	},
	{
		name: "FINAheadWaitsForHole",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fFA, ci+4, si+1, ""),
			c2s(40, fPA, ci+1, si+1, "ABC"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABC" @40ms`,
			"end A fin @30ms",
			"close end-of-capture @100ms",
		},
	},
	{
		name: "RST",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "GET"),
			c2s(35, fPA, ci+7, si+1, "XYZ"), // held after a hole
			s2c(40, fRA, si+1, ci+4, ""),
			c2s(50, fPA, ci+4, si+1, "DEF"), // after close: ignored
			s2c(60, fRA, si+1, ci+4, ""),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "GET" @30ms`,
			"gap A 3 @40ms",
			`data A "XYZ" @35ms`,
			"end B rst @40ms",
			"close rst @40ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Connections != 1 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name: "SeqWraparound",
		segs: cat(handshake(0xfffffffd, 0xffffff00), []sg{
			c2s(30, fPA, 2, 0xffffff01, "EF"), // ahead, past the wrap
			c2s(40, fPA, 0xfffffffe, 0xffffff01, "ABCDE"),
			c2s(50, fPA, 0xfffffffe, 0xffffff01, "ABC"), // retransmission across the wrap
			s2c(60, fPA, 0xffffff01, 4, "OK"),
			c2s(70, fPA, 4, 0xffffff03, "G"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "ABCD" @40ms`,
			`data A "EF" @30ms`,
			`data B "OK" @60ms`,
			`data A "G" @70ms`,
			"close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Retransmitted != 1 || st.Overlaps != 1 || st.Gaps != 0 {
				t.Errorf("stats %+v", st)
			}
		},
	},
	{
		name:  "PortReuseAfterClose",
		multi: true,
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fFA, ci+1, si+1, ""),
			s2c(40, fFA, si+1, ci+2, ""),
			c2s(50, fA, ci+2, si+2, ""),
			c2s(60, fS, ci, 0, ""), // old SYN again: ignored
			c2s(200, fS, 9000, 0, ""),
			s2c(210, fSA, 7000, 9001, ""),
			c2s(220, fPA, 9001, 7001, "new"),
		}),
		flushAt: 300,
		want: []string{
			"#0 " + openHS, "#0 hs 20ms",
			"#0 end A fin @30ms",
			"#0 end B fin @40ms",
			"#0 close fin @40ms",
			"#1 open A=10.0.0.1:40000 B=10.0.0.2:80 hs=true pkt=8",
			"#1 hs 20ms",
			`#1 data A "new" @220ms`,
			"#1 close end-of-capture @300ms",
		},
	},
	{
		name:  "PortReuseWhileOpen",
		multi: true,
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fPA, ci+1, si+1, "old"),
			c2s(200, fS, 9000, 0, ""),
			c2s(210, fPA, 9001, 0, "new"),
		}),
		flushAt: 300,
		want: []string{
			"#0 " + openHS, "#0 hs 20ms",
			`#0 data A "old" @30ms`,
			"#0 close port-reused @200ms",
			"#1 open A=10.0.0.1:40000 B=10.0.0.2:80 hs=true pkt=5",
			`#1 data A "new" @210ms`,
			"#1 close end-of-capture @300ms",
		},
	},
	{
		name:  "IdleFlushByCaptureTime",
		cfg:   Config{IdleTimeout: time.Second},
		multi: true,
		segs: []sg{
			onPort(1, c2s(0, fPA, 100, 1, "a")),
			onPort(1, c2s(1, fPA, 105, 1, "b")), // held after a hole
			onPort(2, c2s(500, fPA, 200, 1, "c")),
			onPort(2, c2s(1400, fPA, 201, 1, "d")), // scan: port 1 idle since 1ms
			onPort(1, c2s(1700, fPA, 106, 1, "e")), // new connection, no tombstone
			onPort(2, c2s(5000, fPA, 202, 1, "f")), // own deadline passed
		},
		flushAt: 6000,
		want: []string{
			"#0 open A=10.0.0.1:1 B=10.0.0.2:80 hs=false pkt=1",
			`#0 data A "a" @0s`,
			"#1 open A=10.0.0.1:2 B=10.0.0.2:80 hs=false pkt=3",
			`#1 data A "c" @500ms`,
			"#0 gap A 4 @1.001s",
			`#0 data A "b" @1ms`,
			"#0 close idle @1.001s",
			`#1 data A "d" @1.4s`,
			"#2 open A=10.0.0.1:1 B=10.0.0.2:80 hs=false pkt=5",
			`#2 data A "e" @1.7s`,
			"#1 close idle @2.4s",
			"#2 close idle @2.7s",
			"#3 open A=10.0.0.1:2 B=10.0.0.2:80 hs=false pkt=6",
			`#3 data A "f" @5s`,
			"#3 close end-of-capture @6s",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.IdleFlushed != 3 {
				t.Errorf("IdleFlushed = %d, want 3", st.IdleFlushed)
			}
		},
	},
	{
		name:  "EvictionAtMaxConns",
		cfg:   Config{MaxConns: 2},
		multi: true,
		segs: []sg{
			onPort(1, c2s(0, fS, 100, 0, "")),
			onPort(2, c2s(1, fS, 200, 0, "")),
			onPort(1, c2s(2, fPA, 101, 1, "x")), // port 1 now most recent
			onPort(3, c2s(3, fS, 300, 0, "")),   // evicts port 2
		},
		flushAt: 100,
		want: []string{
			"#0 open A=10.0.0.1:1 B=10.0.0.2:80 hs=true pkt=1",
			"#1 open A=10.0.0.1:2 B=10.0.0.2:80 hs=true pkt=2",
			`#0 data A "x" @2ms`,
			"#1 close evicted @3ms",
			"#2 open A=10.0.0.1:3 B=10.0.0.2:80 hs=true pkt=4",
			"#0 close end-of-capture @100ms",
			"#2 close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Evicted != 1 {
				t.Errorf("Evicted = %d", st.Evicted)
			}
		},
	},
	{
		// Port 1 waits (as a client does for 100 Continue) while port 2
		// opens and is reset: room for port 3 is taken from port 2's
		// tombstone, though port 1 was active less recently.
		name:  "TombstoneGivesWayBeforeOpen",
		cfg:   Config{MaxConns: 2},
		multi: true,
		segs: []sg{
			onPort(1, c2s(0, fS, 100, 0, "")),
			onPort(2, c2s(1, fS, 200, 0, "")),
			onPort(2, c2s(2, fRA, 201, 1, "")),
			onPort(3, c2s(3, fS, 300, 0, "")),
			onPort(1, c2s(4, fPA, 101, 1, "x")),
		},
		flushAt: 100,
		want: []string{
			"#0 open A=10.0.0.1:1 B=10.0.0.2:80 hs=true pkt=1",
			"#1 open A=10.0.0.1:2 B=10.0.0.2:80 hs=true pkt=2",
			"#1 end A rst @2ms",
			"#1 close rst @2ms",
			"#2 open A=10.0.0.1:3 B=10.0.0.2:80 hs=true pkt=4",
			`#0 data A "x" @4ms`,
			"#0 close end-of-capture @100ms",
			"#2 close end-of-capture @100ms",
		},
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Evicted != 0 {
				t.Errorf("Evicted = %d", st.Evicted)
			}
		},
	},
	{
		name: "NoPhantomFromTrailingACKs",
		segs: []sg{
			c2s(0, fA, ci, si, ""),
			s2c(1, fA, si, ci, ""),
			c2s(2, fRA, ci, si, ""),
			s2c(3, fR, si, 0, ""),
			c2s(4, fFA, ci, si, ""), // FIN without data
		},
		flushAt: 100,
		want:    nil,
		check: func(t *testing.T, st Stats, a *Assembler) {
			if st.Connections != 0 {
				t.Errorf("Connections = %d", st.Connections)
			}
		},
	},
	{
		name: "DataAfterFINIgnored",
		segs: cat(handshake(ci, si), []sg{
			c2s(30, fFA|fPA, ci+1, si+1, "bye"),
			c2s(40, fPA, ci+5, si+1, "more"),
		}),
		flushAt: 100,
		want: []string{
			openHS, "hs 20ms",
			`data A "bye" @30ms`,
			"end A fin @30ms",
			"close end-of-capture @100ms",
		},
	},
}

func TestAssembler(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, a := run(t, tc.cfg, tc.segs, tc.flushAt, tc.multi)
			diffLog(t, r.log, tc.want)
			if tc.check != nil {
				tc.check(t, a.Stats(), a)
			}
			if a.open != 0 || a.conns.len() != 0 || a.buffered != 0 {
				t.Errorf("after FlushAll: open %d, conns %d, buffered %d", a.open, a.conns.len(), a.buffered)
			}
			// Same input, same calls.
			r2, _ := run(t, tc.cfg, tc.segs, tc.flushAt, tc.multi)
			diffLog(t, r2.log, r.log)
		})
	}
}
