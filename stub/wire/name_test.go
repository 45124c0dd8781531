package wire

import (
	"bytes"
	"testing"
)

func TestSkipName(t *testing.T) {
	label63 := "\x3f" + string(bytes.Repeat([]byte("a"), 63))
	name255 := label63 + label63 + label63 + "\x3d" + string(bytes.Repeat([]byte("b"), 61)) + "\x00"
	name256 := label63 + label63 + label63 + "\x3e" + string(bytes.Repeat([]byte("b"), 62)) + "\x00"
	tests := []struct {
		name string
		msg  string
		off  int
		end  int
		ok   bool
	}{
		{"root", "\x00", 0, 1, true},
		{"two labels", "\x03www\x07example\x00rest", 0, 13, true},
		{"at an offset", "xx\x01a\x00", 2, 5, true},
		{"pointer only", "\xc0\x0c", 0, 2, true},
		{"labels then pointer", "\x03www\xc0\x0c\x00\x01", 0, 6, true},
		{"pointer to itself is not followed", "\xc0\x00", 0, 2, true},
		{"pointer cut", "\x03www\xc0", 0, 0, false},
		{"label past the end", "\x07exam", 0, 0, false},
		{"root missing", "\x03www", 0, 0, false},
		{"empty", "", 0, 0, false},
		{"offset past the end", "\x00", 1, 0, false},
		{"reserved 0x40 label type", "\x41abc\x00", 0, 0, false},
		{"reserved 0x80 label type", "\x81abc\x00", 0, 0, false},
		{"255 octets", name255, 0, 255, true},
		{"256 octets", name256, 0, 0, false},
		{"254 octets then a pointer", label63 + label63 + label63 + "\x3c" + string(bytes.Repeat([]byte("b"), 60)) + "\xc0\x0c", 0, 255, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, ok := SkipName([]byte(tt.msg), tt.off)
			if end != tt.end || ok != tt.ok {
				t.Errorf("SkipName = %d, %v; want %d, %v", end, ok, tt.end, tt.ok)
			}
		})
	}
}

func TestEqualFoldName(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"\x07example\x03com\x00", "\x07ExAmPlE\x03COM\x00", true},
		{"example.com.", "EXAMPLE.com.", true},
		{"example.com.", "example.org.", false},
		{"example.com.", "example.com", false},
		{"a", "b", false},
		// Only A-Z fold (RFC 4343 §3): neighbours of the letter ranges and
		// Latin-1/UTF-8 octets that differ by 0x20 compare exactly.
		{"@", "`", false},
		{"[", "{", false},
		{"Z", "z", true},
		{"\xc3", "\xe3", false},
		{"\xc3\x89", "\xc3\xa9", false}, // É vs é in UTF-8
	}
	for _, tt := range tests {
		if got := EqualFoldName(tt.a, tt.b); got != tt.want {
			t.Errorf("EqualFoldName(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := EqualFoldName([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("EqualFoldName([]byte(%q), []byte(%q)) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := EqualFoldName(tt.b, tt.a); got != tt.want {
			t.Errorf("EqualFoldName(%q, %q) = %v, want %v (not symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestLower(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"\x03WwW\x07ExAmPlE\x00", "\x03www\x07example\x00"},
		{"AZaz@[`{", "azaz@[`{"},
		{"\xc3\x89\x3f", "\xc3\x89\x3f"},
	}
	for _, tt := range tests {
		b := []byte(tt.in)
		Lower(b)
		if string(b) != tt.want {
			t.Errorf("Lower(%q) = %q, want %q", tt.in, b, tt.want)
		}
		if !EqualFoldName(tt.in, string(b)) {
			t.Errorf("EqualFoldName(%q, Lower of it) = false", tt.in)
		}
	}
}
