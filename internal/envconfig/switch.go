package envconfig

import "fmt"

// Switch is an on/off variable: "on" is true, "off" false, nothing else. The words, not
// true/false or an empty value, because caarlos0/env gives an empty variable its default, so
// only a word can switch a feature off (see the project's contract). Declare the field with
// `oneof:"on off"` so that -help and docs/configuration.md list the two words.
type Switch bool

// UnmarshalText accepts exactly "on" and "off".
func (s *Switch) UnmarshalText(b []byte) error {
	switch string(b) {
	case "on":
		*s = true
	case "off":
		*s = false
	default:
		return fmt.Errorf("not on or off")
	}
	return nil
}

// MarshalText gives the word back, for logs.
func (s Switch) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String is "on" or "off".
func (s Switch) String() string {
	if s {
		return "on"
	}
	return "off"
}
