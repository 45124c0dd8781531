package wire

// labelMask selects the two high bits of a length octet, which say what kind
// of label follows (RFC 1035 §4.1.4, RFC 6891 §5).
const (
	labelMask    = 0xC0
	labelNormal  = 0x00 // the low 6 bits are the label's length
	labelPointer = 0xC0 // this and the next octet are a compression pointer
)

// SkipName returns the offset just past the name that starts at msg[off]:
// after its root label, or after the compression pointer that ends it (RFC
// 1035 §4.1.4). Pointers are not followed, so a pointer loop costs nothing.
// ok is false when the name runs past msg, uses a reserved label type (the
// 0x40 and 0x80 prefixes, RFC 6891 §5), or has more than 255 octets before
// its end (RFC 1035 §3.1).
func SkipName(msg []byte, off int) (end int, ok bool) {
	start := off
	for off < len(msg) && off-start < maxNameLen {
		c := msg[off]
		switch c & labelMask {
		case labelNormal:
			if c == 0 {
				return off + 1, true
			}
			off += 1 + int(c)
		case labelPointer:
			if off+2 > len(msg) {
				return 0, false
			}
			return off + 2, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// EqualFoldName reports whether two names are equal when ASCII letters are
// compared without case, the only case folding DNS has (RFC 4343 §3): octets
// outside A-Z and a-z, UTF-8 included, must match exactly. Both names must be
// in the same form: wire form without compression pointers, or the same
// presentation form (escapes are compared as written, not decoded).
func EqualFoldName[T string | []byte](a, b T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if lowerByte(a[i]) != lowerByte(b[i]) {
			return false
		}
	}
	return true
}

// Lower lowercases the ASCII letters of name in place (RFC 4343 §3), the
// canonical form under which EqualFoldName names are byte-equal. name is in
// wire form without compression pointers (a length octet is at most 63, so
// it is never a letter) or in presentation form.
func Lower(name []byte) {
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			name[i] = c + ('a' - 'A')
		}
	}
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
