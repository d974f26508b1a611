//go:build amd64 || arm64

package capture

// prefetch hints the two cache lines at p into the cache (prefetch_*.s).
// A hint never faults, even on an unmapped page.
//
//go:noescape
func prefetch(p *byte)

// prefetchWrite hints the three cache lines at p into the cache for
// writing (prefetch_*.s).
//
//go:noescape
func prefetchWrite(p *byte)

// prefetchStride hints the two cache lines at p, at p+stride, ... n
// times (n > 0; every address within the mapping) (prefetch_*.s).
//
//go:noescape
func prefetchStride(p *byte, stride, n int)
