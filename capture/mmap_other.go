//go:build !linux

package capture

import (
	"errors"
	"os"
)

func mapFile(*os.File, int64) ([]byte, error) { return nil, errors.ErrUnsupported }
func releaseMapped([]byte)                    {}
func unmapFile([]byte) error                  { return nil }
