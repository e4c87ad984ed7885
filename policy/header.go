package policy

import "fmt"

// MaxRemainingLength is the largest remaining length a four-byte variable byte integer can
// carry: 268,435,455 bytes (MQTT 5.0 §1.5.5, 3.1.1 §2.2.3).
const MaxRemainingLength = 1<<28 - 1

// Packet type of CONNECT, the high nibble of the first byte.
const typeConnect = 1

// Prebuilt so that ParseFixedHeader allocates nothing, not even on failure.
var (
	errVBITooLong    = fmt.Errorf("%w: variable byte integer longer than 4 bytes (§1.5.5)", ErrMalformed)
	errVBINotMinimal = fmt.Errorf("%w: variable byte integer not in its shortest form [MQTT-1.5.5-1]", ErrMalformed)
)

// ParseFixedHeader reads an MQTT fixed header from the start of b: the packet type byte and
// the variable byte integer remaining length (1 to 4 bytes, minimally encoded
// [MQTT-1.5.5-1]). The packet is b[:headerLen+remaining].
//
// It returns ErrIncomplete while b is too short to tell, and ErrMalformed for a fourth length
// byte that still has its continuation bit set or a length not in its shortest form. first is
// set whenever b is not empty, even with an error, so a caller can refuse a packet that is
// not a CONNECT after a single byte. It allocates nothing.
func ParseFixedHeader(b []byte) (first byte, remaining int, headerLen int, err error) {
	if len(b) == 0 {
		return 0, 0, 0, ErrIncomplete
	}
	v, n, err := readVBI(b[1:])
	if err != nil {
		return b[0], 0, 0, err
	}
	return b[0], v, 1 + n, nil
}

// CheckSize returns an error wrapping ErrTooLarge when a packet whose fixed header is
// headerLen bytes and announces remaining more would be over limit bytes in total. Call it
// right after ParseFixedHeader, before reading (or allocating for) the rest of the packet.
func CheckSize(headerLen, remaining, limit int) error {
	if headerLen+remaining > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, headerLen+remaining, limit)
	}
	return nil
}

// readVBI decodes a variable byte integer (MQTT 5.0 §1.5.5, 3.1.1 §2.2.3) from the start of
// b and returns its value and encoded length.
func readVBI(b []byte) (v, n int, err error) {
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, ErrIncomplete
		}
		c := b[i]
		v |= int(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			// A final group of zero after others adds nothing: a shorter form exists.
			if i > 0 && c == 0 {
				return 0, 0, errVBINotMinimal
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, errVBITooLong
}

// readVBIIn is readVBI for the length of what, inside a packet whose bytes are all there: running out
// means the packet is malformed, not that more will come.
func readVBIIn(b []byte, what string) (v, n int, err error) {
	v, n, err = readVBI(b)
	switch err {
	case nil:
		return v, n, nil
	case errVBINotMinimal:
		return 0, 0, malformed("%s length not in its shortest form [MQTT-1.5.5-1]", what)
	case errVBITooLong:
		return 0, 0, malformed("%s length longer than 4 bytes (§1.5.5)", what)
	default:
		return 0, 0, malformed("%s length runs past the end of the packet", what)
	}
}

// vbiLen is how many bytes appendVBI uses for v.
func vbiLen(v int) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// appendVBI appends v in its shortest variable byte integer form. v must be at most
// MaxRemainingLength.
func appendVBI(dst []byte, v int) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}
