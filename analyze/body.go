package analyze

// bodyMode is how a message body is delimited (RFC 9112 6.3).
type bodyMode uint8

const (
	bodyNone bodyMode = iota
	bodyLength
	bodyChunked
	bodyClose // until the sender closes
)

type chunkState uint8

const (
	csSize chunkState = iota
	csData
	csDataEnd
	csTrailer
)

// maxChunkLine bounds a chunk-size line with its extensions, or a trailer line.
const maxChunkLine = 4096

// bodyReader counts a message body as it streams past; it never stores it.
type bodyReader struct {
	mode      bodyMode
	remaining int64 // bodyLength: bytes left; bodyChunked: bytes left in chunk
	cs        chunkState
	line      []byte // partial chunk-size or trailer line
	lineEmpty bool   // current trailer line so far is empty
	wire      int64  // octets on the wire, framing included
	data      int64  // decoded content octets
}

func (br *bodyReader) reset(mode bodyMode, length int64) {
	*br = bodyReader{mode: mode, remaining: length, line: br.line[:0]}
}

// consume eats body bytes from b. It returns how many it used and whether
// the body ended; bytes after n belong to the next message.
func (br *bodyReader) consume(b []byte) (n int, done bool, err error) {
	switch br.mode {
	case bodyNone:
		return 0, true, nil
	case bodyClose:
		br.wire += int64(len(b))
		br.data += int64(len(b))
		return len(b), false, nil
	case bodyLength:
		take := int64(len(b))
		if take > br.remaining {
			take = br.remaining
		}
		br.remaining -= take
		br.wire += take
		br.data += take
		return int(take), br.remaining == 0, nil
	}
	// Chunked (RFC 9112 7.1).
	for n < len(b) {
		switch br.cs {
		case csSize, csTrailer:
			i := n
			for i < len(b) && b[i] != '\n' {
				i++
			}
			seg := b[n:i]
			if len(br.line)+len(seg) > maxChunkLine {
				return n, false, parseErr(ErrBadChunk, append(br.line, seg...))
			}
			br.line = append(br.line, seg...)
			if i == len(b) {
				br.wire += int64(i - n)
				return len(b), false, nil
			}
			br.wire += int64(i + 1 - n)
			n = i + 1
			line := br.line
			if k := len(line); k > 0 && line[k-1] == '\r' {
				line = line[:k-1]
			}
			if br.cs == csTrailer {
				empty := len(line) == 0
				br.line = br.line[:0]
				if empty {
					return n, true, nil
				}
				continue
			}
			size, err := parseChunkSize(line)
			br.line = br.line[:0]
			if err != nil {
				return n, false, err
			}
			if size == 0 {
				br.cs = csTrailer
				continue
			}
			br.remaining = size
			br.cs = csData
		case csData:
			take := int64(len(b) - n)
			if take > br.remaining {
				take = br.remaining
			}
			br.remaining -= take
			br.wire += take
			br.data += take
			n += int(take)
			if br.remaining == 0 {
				br.cs = csDataEnd
			}
		case csDataEnd:
			c := b[n]
			n++
			br.wire++
			if c == '\n' {
				br.cs = csSize
			} else if c != '\r' {
				return n, false, parseErr(ErrBadChunk, []byte{c})
			}
		}
	}
	return n, false, nil
}

// parseChunkSize reads the hex size before any extension. More than 15
// significant hex digits could overflow int64 and is refused; leading
// zeros are skipped, as net/http does up to 16 digits.
func parseChunkSize(line []byte) (int64, error) {
	var size int64
	digits, sig := 0, 0
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			goto end
		}
		digits++
		if size > 0 || v > 0 {
			sig++ // leading zeros are legal and do not count (RFC 9112 7.1)
		}
		if sig > 15 {
			return 0, parseErr(ErrBadChunk, line)
		}
		size = size<<4 | int64(v)
	}
end:
	if digits == 0 {
		return 0, parseErr(ErrBadChunk, line)
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		return 0, parseErr(ErrBadChunk, line)
	}
	return size, nil
}
