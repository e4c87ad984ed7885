package policy

import (
	"errors"
	"testing"
)

func TestParseFixedHeader(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		first     byte
		remaining int
		headerLen int
		err       error
		clause    string
	}{
		{"empty", nil, 0x00, 0, 0, ErrIncomplete, ""},
		{"type only", []byte{0x10}, 0x10, 0, 0, ErrIncomplete, ""},
		{"zero", []byte{0x10, 0x00}, 0x10, 0, 2, nil, ""},
		{"1 byte max", []byte{0x10, 0x7f}, 0x10, 127, 2, nil, ""},
		{"2 bytes min", []byte{0x10, 0x80, 0x01}, 0x10, 128, 3, nil, ""},
		{"2 bytes max", []byte{0x10, 0xff, 0x7f}, 0x10, 16383, 3, nil, ""},
		{"3 bytes min", []byte{0x10, 0x80, 0x80, 0x01}, 0x10, 16384, 4, nil, ""},
		{"3 bytes max", []byte{0x10, 0xff, 0xff, 0x7f}, 0x10, 2097151, 4, nil, ""},
		{"4 bytes min", []byte{0x10, 0x80, 0x80, 0x80, 0x01}, 0x10, 2097152, 5, nil, ""},
		{"4 bytes max", []byte{0x10, 0xff, 0xff, 0xff, 0x7f}, 0x10, MaxRemainingLength, 5, nil, ""},
		{"trailing body ignored", []byte{0x30, 0x02, 0xaa, 0xbb, 0xcc}, 0x30, 2, 2, nil, ""},
		{"continuation then end", []byte{0x10, 0x80}, 0x10, 0, 0, ErrIncomplete, ""},
		{"three continuations then end", []byte{0x10, 0xff, 0xff, 0xff}, 0x10, 0, 0, ErrIncomplete, ""},
		// A fourth byte with its continuation bit set calls for a fifth, which §1.5.5 forbids.
		{"fifth byte", []byte{0x10, 0xff, 0xff, 0xff, 0xff}, 0x10, 0, 0, ErrMalformed, "longer than 4 bytes"},
		{"fifth byte present", []byte{0x10, 0x80, 0x80, 0x80, 0x80, 0x01}, 0x10, 0, 0, ErrMalformed, "longer than 4 bytes"},
		// [MQTT-1.5.5-1]: the shortest form only.
		{"zero in 2 bytes", []byte{0x10, 0x80, 0x00}, 0x10, 0, 0, ErrMalformed, "[MQTT-1.5.5-1]"},
		{"127 in 2 bytes", []byte{0x10, 0xff, 0x00}, 0x10, 0, 0, ErrMalformed, "[MQTT-1.5.5-1]"},
		{"zero in 4 bytes", []byte{0x10, 0x80, 0x80, 0x80, 0x00}, 0x10, 0, 0, ErrMalformed, "[MQTT-1.5.5-1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, rem, hl, err := ParseFixedHeader(tt.in)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.clause != "" && !contains(err, tt.clause) {
				t.Errorf("err = %v, want it to mention %s", err, tt.clause)
			}
			if first != tt.first || rem != tt.remaining || hl != tt.headerLen {
				t.Errorf("got (%#x, %d, %d), want (%#x, %d, %d)", first, rem, hl, tt.first, tt.remaining, tt.headerLen)
			}
			if err == nil {
				if got := appendVBI(nil, rem); string(got) != string(tt.in[1:hl]) {
					t.Errorf("appendVBI(%d) = % x, want % x", rem, got, tt.in[1:hl])
				}
				if vbiLen(rem) != hl-1 {
					t.Errorf("vbiLen(%d) = %d, want %d", rem, vbiLen(rem), hl-1)
				}
			}
		})
	}
}

func TestParseFixedHeaderAllocs(t *testing.T) {
	inputs := [][]byte{{0x10, 0xff, 0x7f}, {0x10, 0x80, 0x00}, {0x10, 0xff, 0xff, 0xff, 0xff}, {0x10}}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { ParseFixedHeader(in) }); n != 0 {
			t.Errorf("ParseFixedHeader(% x) allocates %v times", in, n)
		}
	}
}

func TestCheckSize(t *testing.T) {
	if err := CheckSize(2, 98, 100); err != nil {
		t.Errorf("CheckSize(2, 98, 100) = %v, want nil", err)
	}
	err := CheckSize(2, 99, 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("CheckSize(2, 99, 100) = %v, want ErrTooLarge", err)
	}
	if want := "policy: packet too large: 101 bytes, limit 100"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}
