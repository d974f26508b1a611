package report

// appendIndented appends src, compact JSON as AppendRecordJSON writes it,
// indented as encoding/json's Indent would indent it with prefix and
// indent: on the json format, indenting by encoding/json's scanner (one
// state transition per byte) was most of the time spent writing records.
// Only the punctuation outside strings matters in compact JSON, and a
// string ends at the first quote not escaped by a backslash.
func appendIndented(dst, src []byte, prefix, indent string) []byte {
	depth := 0
	needIndent := false // after { or [: an empty object or array stays {} or []
	newline := func(dst []byte) []byte {
		dst = append(dst, '\n')
		dst = append(dst, prefix...)
		for range depth {
			dst = append(dst, indent...)
		}
		return dst
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		if needIndent && c != '}' && c != ']' {
			needIndent = false
			depth++
			dst = newline(dst)
		}
		switch c {
		case '"':
			j := i + 1
			for j < len(src) && src[j] != '"' {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(src)-1)
			dst = append(dst, src[i:j+1]...)
			i = j
		case '{', '[':
			needIndent = true
			dst = append(dst, c)
		case ',':
			dst = append(dst, c)
			dst = newline(dst)
		case ':':
			dst = append(dst, c, ' ')
		case '}', ']':
			if needIndent {
				needIndent = false
			} else {
				depth--
				dst = newline(dst)
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
