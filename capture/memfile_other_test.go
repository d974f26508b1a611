//go:build !linux

package capture

import (
	"os"
	"testing"
)

func memFile(t testing.TB, data []byte) (path string, done func()) {
	path = ngTemp(t, os.TempDir(), data)
	return path, func() { os.Remove(path) }
}
