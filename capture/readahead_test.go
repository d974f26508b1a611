package capture

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"time"
)

// errReader gives data in reads of random sizes, then err.
type errReader struct {
	data []byte
	err  error
	rng  *rand.Rand
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(100<<10))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// TestReadAhead: the caller gets the reader's bytes and then its error,
// whatever it was (a truncated gzip stream ends in io.ErrUnexpectedEOF, which
// must not read as a clean end), however it reads.
func TestReadAhead(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, aheadSize - 1, aheadSize, 3*aheadSize + 17, 11 << 20} {
		for _, want := range []error{io.EOF, io.ErrUnexpectedEOF, errors.New("gzip: invalid checksum")} {
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			closed := make(chan struct{})
			ra := newReadAhead(&errReader{data: data, err: want, rng: rand.New(rand.NewPCG(uint64(size), 5))}, func() { close(closed) })
			var got bytes.Buffer
			var err error
			for err == nil {
				p := make([]byte, 1+rng.IntN(200<<10))
				var n int
				n, err = ra.Read(p)
				got.Write(p[:n])
			}
			if err != want {
				t.Errorf("size %d: error %v, want %v", size, err, want)
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Errorf("size %d, %v: %d bytes differ from the %d given", size, want, got.Len(), len(data))
			}
			if _, err := ra.Read(make([]byte, 10)); err != want {
				t.Errorf("read after the end: %v, want %v", err, want)
			}
			ra.Close()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("size %d: the reader was never released", size)
			}
		}
	}
	// iotest's reader checks (one byte at a time, half reads, ...).
	data := bytes.Repeat([]byte("0123456789abcdef"), 100000)
	if err := iotest.TestReader(newReadAhead(bytes.NewReader(data), nil), data); err != nil {
		t.Error(err)
	}
}

// TestReadAheadCloseEarly: closing before the end stops the reading
// goroutine, which then releases the reader, once.
func TestReadAheadCloseEarly(t *testing.T) {
	released := make(chan struct{}, 2)
	src := &errReader{data: make([]byte, 64<<20), err: io.EOF, rng: rand.New(rand.NewPCG(3, 4))}
	ra := newReadAhead(src, func() { released <- struct{}{} })
	if _, err := io.ReadFull(ra, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	ra.Close()
	ra.Close()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader was never released")
	}
	select {
	case <-released:
		t.Fatal("released twice")
	case <-time.After(50 * time.Millisecond):
	}
	if len(src.data) == 0 {
		t.Error("read to the end although closed")
	}
}
