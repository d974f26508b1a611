//go:build linux

package capture

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps f read-only, advised for sequential reading.
func mapFile(f *os.File, size int64) ([]byte, error) {
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	_ = unix.Madvise(m, unix.MADV_SEQUENTIAL)
	return m, nil
}

// releaseMapped gives the pages of b (page-aligned, part of a mapping)
// back: the kernel drops them from this process (they stay in the page
// cache), and reading them again faults them in again from the file.
func releaseMapped(b []byte) { _ = unix.Madvise(b, unix.MADV_DONTNEED) }

func unmapFile(m []byte) error { return unix.Munmap(m) }
