package reassembly

import (
	"hash/maphash"
	"math/bits"
)

// connTable finds a connection by its key: open addressing with linear
// probing over pointers to the connections, which hold their keys. A
// slot is 8 bytes and the load at most 3/4, so a connection costs the
// index 11 to 21 bytes, where a map would also copy the 40-byte key into
// its slot (about 90 bytes a connection in all, TestConnMemory).
//
// The hash is keyed by a random seed, so a capture cannot be crafted to
// make every key collide.
type connTable struct {
	slots []*conn
	n     int
	seed  [3]uint64
}

const minTableSlots = 1 << 10

func newConnTable() connTable {
	var s maphash.Seed = maphash.MakeSeed()
	var t connTable
	for i := range t.seed {
		t.seed[i] = maphash.Comparable(s, i) | 1
	}
	t.slots = make([]*conn, minTableSlots)
	return t
}

func (t *connTable) len() int { return t.n }

// mix is the folded 128-bit product (wyhash's mum).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (t *connTable) hash(k *connKey) uint64 {
	lo0, lo1 := le64(k.lo[:8]), le64(k.lo[8:])
	hi0, hi1 := le64(k.hi[:8]), le64(k.hi[8:])
	h := mix(lo0^t.seed[0], lo1^t.seed[1]) ^ mix(hi0^t.seed[2], hi1^t.seed[0])
	return mix(h^k.ports, t.seed[1]^t.seed[2])
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func (t *connTable) get(k *connKey) *conn {
	mask := uint64(len(t.slots) - 1)
	for i := t.hash(k) & mask; ; i = (i + 1) & mask {
		c := t.slots[i]
		if c == nil || c.key == *k {
			return c
		}
	}
}

// put adds c, whose key is not in the table.
func (t *connTable) put(c *conn) {
	if 4*(t.n+1) > 3*len(t.slots) {
		t.resize(2 * len(t.slots))
	}
	t.insert(c)
	t.n++
}

func (t *connTable) insert(c *conn) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(&c.key) & mask
	for t.slots[i] != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = c
}

func (t *connTable) resize(n int) {
	old := t.slots
	t.slots = make([]*conn, n)
	for _, c := range old {
		if c != nil {
			t.insert(c)
		}
	}
}

// remove takes c out of the table. The connections after it in its run
// are moved back where a probe from their home slot finds them, so no
// marker of a deleted slot is needed.
func (t *connTable) remove(c *conn) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(&c.key) & mask
	for t.slots[i] != c {
		if t.slots[i] == nil {
			return
		}
		i = (i + 1) & mask
	}
	t.n--
	for j := i; ; {
		j = (j + 1) & mask
		x := t.slots[j]
		if x == nil {
			break
		}
		// x may fill the hole at i unless its home lies cyclically in (i, j].
		home := t.hash(&x.key) & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = x
			i = j
		}
	}
	t.slots[i] = nil
}

// reset empties the table and gives back its memory beyond the minimum.
func (t *connTable) reset() {
	t.n = 0
	if len(t.slots) > minTableSlots {
		t.slots = make([]*conn, minTableSlots)
		return
	}
	clear(t.slots)
}
