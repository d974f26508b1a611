package pipeline

import (
	"testing"

	"github.com/expectscope/expectscope/analyze"
)

// TestShareAwait: the 417s held for a retry are bounded for the process,
// divided among the workers, with a floor per worker.
func TestShareAwait(t *testing.T) {
	tests := []struct{ n, nw, want int }{
		{0, 1, analyze.DefaultMaxAwait},
		{0, 2, analyze.DefaultMaxAwait / 2},
		{0, 64, 1024},
		{6000, 2, 3000},
	}
	for _, tt := range tests {
		if got := shareAwait(tt.n, tt.nw); got != tt.want {
			t.Errorf("shareAwait(%d, %d) = %d, want %d", tt.n, tt.nw, got, tt.want)
		}
	}
}
