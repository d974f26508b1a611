//go:build !amd64 && !arm64

package capture

func prefetch(p *byte) {}

func prefetchWrite(p *byte) {}

func prefetchStride(p *byte, stride, n int) {}
