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
	// WithoutExpect whether that one left Expect out, as 10.1.1 asks (a
	// repeat with Expect is named but the 417 keeps waiting for one
	// without).
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
// was given) is RetryWindow past the 417, until a retry without Expect
// comes, or until more than max are waiting (the oldest goes first, as
// Dropped); then release receives it with its outcome, once.
type RetryLinker[T any] struct {
	window  time.Duration
	max     int
	release func(T, RetryOutcome)
	clock   time.Time
	seed    maphash.Seed
	// byKey holds the waiting 417s by a hash of their identity; a list may
	// mix identities whose hashes collide, so readers compare them.
	byKey map[uint64][]*awaiting[T]
	// fifo holds them in order of their 417, for expiry; a slot is nil
	// once its 417 was released otherwise. base is the sequence number of
	// fifo[0], n the number of non-nil slots.
	fifo    []*awaiting[T]
	base    int
	n       int
	dropped uint64
}

type awaiting[T any] struct {
	id        string
	who       RequestIdentity
	final     time.Time
	seq       int
	retriedBy string
	v         T
}

// NewRetryLinker returns a linker that looks for a retry within window of
// a 417 and holds at most max 417s (zero: DefaultMaxAwait).
func NewRetryLinker[T any](window time.Duration, max int, release func(T, RetryOutcome)) *RetryLinker[T] {
	if max <= 0 {
		max = DefaultMaxAwait
	}
	return &RetryLinker[T]{window: window, max: max, release: release, seed: maphash.MakeSeed(), byKey: map[uint64][]*awaiting[T]{}}
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

// Rejected holds the 417 (at time final) answering request id, with v,
// until its retry comes.
func (l *RetryLinker[T]) Rejected(id string, who RequestIdentity, final time.Time, v T) {
	w := &awaiting[T]{id: id, who: who, final: final, seq: l.base + len(l.fifo), v: v}
	k := l.key(who)
	l.byKey[k] = append(l.byKey[k], w)
	l.fifo = append(l.fifo, w)
	l.n++
	if l.n > l.max {
		l.expire()
	}
}

// Request notes request id (headers ended at at), and returns the id of
// the held 417 it repeats, if any: the first of the same identity whose
// 417 came before at.
func (l *RetryLinker[T]) Request(id string, who RequestIdentity, at time.Time, expect bool) (retryOf string) {
	if l.n == 0 {
		return ""
	}
	k := l.key(who)
	list := l.byKey[k]
	for i, w := range list {
		if w.final.After(at) || w.who != who {
			continue
		}
		w.retriedBy = id
		if expect {
			return w.id // keep waiting for a retry without Expect
		}
		l.byKey[k] = append(list[:i:i], list[i+1:]...)
		if len(l.byKey[k]) == 0 {
			delete(l.byKey, k)
		}
		l.fifo[w.seq-l.base] = nil
		l.n--
		l.release(w.v, RetryOutcome{RetriedBy: id, WithoutExpect: true})
		return w.id
	}
	return ""
}

// Flush releases every held 417, in the order of their 417s.
func (l *RetryLinker[T]) Flush() {
	clear(l.byKey)
	fifo := l.fifo
	l.base += len(fifo)
	l.fifo, l.n = nil, 0
	for i, w := range fifo {
		fifo[i] = nil // let each go as it is released
		if w != nil {
			l.release(w.v, RetryOutcome{RetriedBy: w.retriedBy})
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
		l.release(w.v, RetryOutcome{RetriedBy: w.retriedBy, Dropped: dropped})
	}
	if len(l.fifo) == 0 {
		l.fifo = nil // the backing array of a flood is let go
	}
}

func (l *RetryLinker[T]) unlist(w *awaiting[T]) {
	k := l.key(w.who)
	list := l.byKey[k]
	for i, x := range list {
		if x == w {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(l.byKey, k)
	} else {
		l.byKey[k] = list
	}
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
