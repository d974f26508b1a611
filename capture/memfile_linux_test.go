package capture

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// memFile holds data in an anonymous memory file and returns a path to
// it, valid until done is called: tests that map thousands of small
// files stay off the disk, whose creating and removing of files is far
// slower than reading them.
func memFile(t testing.TB, data []byte) (path string, done func()) {
	t.Helper()
	fd, err := unix.MemfdCreate("capture", 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { f.Close() }
}
