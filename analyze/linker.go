package analyze

import (
	"hash/maphash"
	"net/netip"
	"time"
)

// RequestIdentity is what makes two requests "the same request" when a
// retry is linked to its 417 (RFC 9110 10.1.1: the client repeats the
// request without Expect): client address, method, Host and target.
type RequestIdentity struct {
	Client               netip.Addr
	Method, Host, Target string
}

// RetryOutcome is what became of a 417 a RetryLinker held.
type RetryOutcome struct {
	// RetriedBy is the id of the request that repeated it ("" if none);
	// WithoutExpect whether that one left Expect out, as 10.1.1 asks.
	RetriedBy     string
	WithoutExpect bool
	// Dropped: released before its retry window ended because more than
	// the linker's bound were waiting.
	Dropped bool
}

// RetryLinker links requests to the 417s they repeat, from events given
// in capture order: Rejected for each 417 answering an Expect, Request for
// each request once its headers end, Advance as capture time passes.
// What it decides depends only on that sequence of calls, so an Analyzer
// (one per capture) and the pipeline's merger (one for the records of
// several Analyzers, fed their events in capture order) decide the same.
//
// A 417 waits for its retry until the linker's clock (the latest time it
// was given) is RetryWindow past the 417, until the request comes again,
// or until more than max are waiting (the oldest goes first, as Dropped);
// then release receives it with its outcome, once.
//
// Each 417 is repeated by at most one request and each request repeats at
// most one 417. A repeat that asks for 100-continue again takes its 417 (a
// client that keeps sending the same upload would otherwise have every
// later request linked to its first 417); refused again, its own 417 waits
// for the next repeat, so a chain of refusals reads one link at a time.
// A repeat on the refusing connection is taken first (curl with an
// explicit Expect header asks again there). A request that asks for
// 100-continue again on another connection is not taken as a repeat: no
// client seen repeats so (curl gives up after a 417 with close, Go and
// Node leave it to the application), and clients behind one address that
// send the same request at about the same time (load tests, loops of
// curl, a pool's queued requests, a proxy's clients) would each be linked
// to another's 417. A repeat without Expect may come on any connection:
// a client's pool sends it on whichever is idle (Go's net/http, while the
// refusing one still carries the body it sent after the 417; Node's
// agent, once the server closes the stuck ones).
type RetryLinker[T any] struct {
	window  time.Duration
	max     int
	release func(T, RetryOutcome)
	clock   time.Time
	seed    maphash.Seed
	// byKey holds the waiting 417s by a hash of their identity; a list may
	// mix identities whose hashes collide, so readers compare them.
	byKey map[uint64][]*awaiting[T]
	// byConn holds the waiting 417s by connection.
	byConn map[uint64][]*awaiting[T]
	// fifo holds them in order of their 417, for expiry; a slot is nil
	// once its 417 was released otherwise. base is the sequence number of
	// fifo[0], n the number of non-nil slots.
	fifo    []*awaiting[T]
	base    int
	n       int
	dropped uint64
}

type awaiting[T any] struct {
	id   string
	conn uint64
	// clientEnd is the packet at which the client closed the connection
	// (0: not yet).
	clientEnd uint64
	who       RequestIdentity
	final     time.Time
	seq       int
	v         T
}

// NewRetryLinker returns a linker that looks for a retry within window of
// a 417 and holds at most max 417s (zero: DefaultMaxAwait).
func NewRetryLinker[T any](window time.Duration, max int, release func(T, RetryOutcome)) *RetryLinker[T] {
	if max <= 0 {
		max = DefaultMaxAwait
	}
	return &RetryLinker[T]{window: window, max: max, release: release, seed: maphash.MakeSeed(),
		byKey: map[uint64][]*awaiting[T]{}, byConn: map[uint64][]*awaiting[T]{}}
}

// Waiting is the number of 417s held.
func (l *RetryLinker[T]) Waiting() int { return l.n }

// Dropped counts the 417s released early because too many were waiting.
func (l *RetryLinker[T]) Dropped() uint64 { return l.dropped }

// Advance moves the clock to now (never back) and releases the 417s whose
// window has passed.
func (l *RetryLinker[T]) Advance(now time.Time) {
	if now.After(l.clock) {
		l.clock = now
	}
	l.expire()
}

// Rejected holds the 417 (at time final) answering request id on
// connection conn (any number that tells connections apart), with v, until
// its retry comes.
func (l *RetryLinker[T]) Rejected(id string, conn uint64, who RequestIdentity, final time.Time, v T) {
	w := &awaiting[T]{id: id, conn: conn, who: who, final: final, seq: l.base + len(l.fifo), v: v}
	k := l.key(who)
	l.byKey[k] = append(l.byKey[k], w)
	l.byConn[conn] = append(l.byConn[conn], w)
	l.fifo = append(l.fifo, w)
	l.n++
	if l.n > l.max {
		l.expire()
	}
}

// ClientClosed notes that the client of connection conn closed it (FIN
// or RST) at the packet numbered packet.
func (l *RetryLinker[T]) ClientClosed(conn uint64, packet uint64) {
	for _, w := range l.byConn[conn] {
		if w.clientEnd == 0 {
			w.clientEnd = packet
		}
	}
}

// sameMoment is how close two 417s must be for the order of the clients'
// reconnections, rather than the order of the 417s, to pair them with
// repeats: refused at the same moment (Squid's 417s to curls 8 us apart),
// clients reconnect in the order they closed; refused further apart,
// they repeat in the order they were refused, even when a pool reconnects
// in another order (Node's agent, its repeats queued behind sockets the
// server closes together).
const sameMoment = 250 * time.Microsecond

// Request notes request id on connection conn (headers ended at at;
// first: the connection's first request, conn then the number of the
// connection's first packet), and returns the id of the held 417 it
// repeats, if any, releasing that 417: one of the same identity whose
// 417 came before at, on the same connection if there is one, else, for
// a request without Expect, the first held (clients retry in the order
// they were refused), but for a connection's first request, among 417s
// of the same moment as that one, the one whose client closed last
// before the connection opened (curl closes the refused connection and
// opens the next at once).
func (l *RetryLinker[T]) Request(id string, conn uint64, who RequestIdentity, at time.Time, expect, first bool) (retryOf string) {
	if l.n == 0 {
		return ""
	}
	k := l.key(who)
	list := l.byKey[k]
	var w, reopened, oldest *awaiting[T]
	for _, x := range list {
		if x.final.After(at) || x.who != who {
			continue
		}
		if x.conn == conn {
			w = x
			break
		}
		if expect {
			continue
		}
		if oldest == nil {
			oldest = x
		}
		if first && x.clientEnd != 0 && x.clientEnd < conn && (reopened == nil || x.clientEnd > reopened.clientEnd) {
			reopened = x
		}
	}
	if w == nil {
		w = oldest
		if reopened != nil && oldest != nil && reopened.final.Sub(oldest.final) < sameMoment {
			w = reopened
		}
	}
	if w == nil {
		return ""
	}
	l.fifo[w.seq-l.base] = nil
	l.n--
	l.unlist(w)
	l.release(w.v, RetryOutcome{RetriedBy: id, WithoutExpect: !expect})
	return w.id
}

// Flush releases every held 417, in the order of their 417s.
func (l *RetryLinker[T]) Flush() {
	clear(l.byKey)
	clear(l.byConn)
	fifo := l.fifo
	l.base += len(fifo)
	l.fifo, l.n = nil, 0
	for i, w := range fifo {
		fifo[i] = nil // let each go as it is released
		if w != nil {
			l.release(w.v, RetryOutcome{})
		}
	}
}

// expire releases, oldest first, the 417s whose window has passed and
// those beyond max.
func (l *RetryLinker[T]) expire() {
	for len(l.fifo) > 0 {
		w := l.fifo[0]
		if w != nil && l.n <= l.max && l.clock.Sub(w.final) < l.window {
			break
		}
		l.fifo[0] = nil
		l.fifo = l.fifo[1:]
		l.base++
		if w == nil {
			continue
		}
		dropped := l.n > l.max
		if dropped {
			l.dropped++
		}
		l.n--
		l.unlist(w)
		l.release(w.v, RetryOutcome{Dropped: dropped})
	}
	if len(l.fifo) == 0 {
		l.fifo = nil // the backing array of a flood is let go
	}
}

// unlist takes w out of the indexes (not the fifo).
func (l *RetryLinker[T]) unlist(w *awaiting[T]) {
	k := l.key(w.who)
	if list := without(l.byKey[k], w); len(list) == 0 {
		delete(l.byKey, k)
	} else {
		l.byKey[k] = list
	}
	if list := without(l.byConn[w.conn], w); len(list) == 0 {
		delete(l.byConn, w.conn)
	} else {
		l.byConn[w.conn] = list
	}
}

// without returns list without w, in a new array when w was in it: the
// old one may still be ranged over by a caller.
func without[T any](list []*awaiting[T], w *awaiting[T]) []*awaiting[T] {
	for i, x := range list {
		if x == w {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// key hashes an identity: an 8-byte map key that costs no allocation, in
// a map that churns through as many identities as there are clients.
func (l *RetryLinker[T]) key(who RequestIdentity) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	ip := who.Client.As16()
	h.Write(ip[:])
	h.WriteString(who.Method)
	h.WriteByte(0)
	h.WriteString(who.Host)
	h.WriteByte(0)
	h.WriteString(who.Target)
	return h.Sum64()
}
