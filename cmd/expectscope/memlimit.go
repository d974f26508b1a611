package main

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// byteSize is a --memory-limit value: a number of bytes with an optional
// unit as GOMEMLIMIT writes them (B, KiB, MiB, GiB, TiB) or a decimal one
// (KB, MB, GB, TB).
type byteSize int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func parseByteSize(s string) (byteSize, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || v*float64(mult) > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size (80MiB, 1GiB, 0 for none)", s)
	}
	return byteSize(v * float64(mult)), nil
}

func (b *byteSize) String() string {
	switch {
	case *b == 0:
		return "0"
	case *b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", *b>>20)
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b *byteSize) Type() string { return "size" }

// applyMemoryLimit sets the runtime's soft memory limit from
// --memory-limit: 0 removes it.
func applyMemoryLimit(b byteSize) {
	if b == 0 {
		debug.SetMemoryLimit(math.MaxInt64)
	} else {
		debug.SetMemoryLimit(int64(b))
	}
	paceCollector()
}
