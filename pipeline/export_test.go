package pipeline

import "github.com/expectscope/expectscope/capture"

// SetChunking sets the chunk size of runChunked and, when bad, makes
// every guess of where a chunk's first record starts wrong but one in
// three (the start of the chunk, or nothing), for the duration of a test.
func SetChunking(size int, bad bool) (restore func()) {
	oldSize, oldMax, oldGuess := chunkSize, maxChunkSize, guess
	chunkSize, maxChunkSize = size, size
	if bad {
		guess = func(c *capture.Chunker, i int) int64 {
			switch {
			case i%3 == 0:
				return oldGuess(c, i)
			case i%3 == 1:
				return -1
			}
			return c.Start() + int64(i*size)
		}
	}
	return func() { chunkSize, maxChunkSize, guess = oldSize, oldMax, oldGuess }
}

// SetFeedPanic makes the given worker panic as it is about to feed the
// given chunk of a chunked run, for the duration of a test.
func SetFeedPanic(worker, chunk int) (restore func()) {
	old := beforeFeed
	beforeFeed = func(w, k int) {
		if w == worker && k == chunk {
			panic("injected")
		}
	}
	return func() { beforeFeed = old }
}

// WatchRelease calls f after each time a worker of a chunked run gave
// back mapped pages: with the offset it asked for, and the one before
// which pages are given back.
func WatchRelease(f func(asked, given int64)) (restore func()) {
	old := afterRelease
	afterRelease = func(ch *capture.Chunker, off int64) { f(off, ch.Given()) }
	return func() { afterRelease = old }
}
