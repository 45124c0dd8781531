package querylog

import (
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		str     string // String of the result
		wantErr bool
	}{
		{in: "off", want: Off, str: "off"},
		{in: "errors", want: Errors, str: "errors"},
		{in: "all", want: All, str: "all"},
		{in: " all\n", want: All, str: "all"},
		{in: "slow:100ms", want: Slow(100 * time.Millisecond), str: "slow:100ms"},
		{in: "slow:1000ms", want: Slow(time.Second), str: "slow:1s"},
		{in: "slow:1.5s", want: Slow(1500 * time.Millisecond), str: "slow:1.5s"},
		{in: "slow:1ms", want: Slow(time.Millisecond), str: "slow:1ms"},
		{in: "slow:60s", want: Slow(time.Minute), str: "slow:1m0s"},
		{in: "\tslow:50ms ", want: Slow(50 * time.Millisecond), str: "slow:50ms"},
		{in: "slow:1ns", wantErr: true},      // below MinSlow: every miss
		{in: "slow:999us", wantErr: true},    // below MinSlow
		{in: "slow:1m1s", wantErr: true},     // above MaxSlow
		{in: "slow:1000000h", wantErr: true}, // a new-user trial's value, once accepted
		{in: "", wantErr: true},
		{in: "on", wantErr: true},
		{in: "ALL", wantErr: true},
		{in: "error", wantErr: true},
		{in: "slow", wantErr: true},
		{in: "slow:", wantErr: true},
		{in: "slow:0s", wantErr: true},
		{in: "slow:-1s", wantErr: true},
		{in: "slow:100", wantErr: true}, // no unit
		{in: "slow:fast", wantErr: true},
		{in: "100ms", wantErr: true},
	}
	for _, tt := range tests {
		m, err := ParseMode(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseMode(%q) = %v, want an error", tt.in, m)
			}
			continue
		}
		if err != nil || m != tt.want || m.String() != tt.str {
			t.Errorf("ParseMode(%q) = %v (%q), %v; want %v (%q)", tt.in, m, m.String(), err, tt.want, tt.str)
		}
		// String is ParseMode's input form: it reads back as the same mode.
		if back, err := ParseMode(m.String()); err != nil || back != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), back, err, m)
		}
	}
}

func TestModeText(t *testing.T) {
	var m Mode
	if err := m.UnmarshalText([]byte("slow:250ms")); err != nil || m != Slow(250*time.Millisecond) {
		t.Fatalf("UnmarshalText: %v, %v", m, err)
	}
	if b, _ := m.MarshalText(); string(b) != "slow:250ms" {
		t.Errorf("MarshalText = %q", b)
	}
	if d, ok := m.SlowThreshold(); !ok || d != 250*time.Millisecond {
		t.Errorf("SlowThreshold = %v, %v", d, ok)
	}
	if _, ok := All.SlowThreshold(); ok {
		t.Error("All has a slow threshold")
	}
	if err := m.UnmarshalText([]byte("sometimes")); err == nil || m != Slow(250*time.Millisecond) {
		t.Errorf("a bad value: %v, and the mode became %v; want an error and no change", err, m)
	}
	if (Mode{}) != Off {
		t.Error("the zero Mode is not Off")
	}
}

// The range error names the range.
func TestParseModeSlowRange(t *testing.T) {
	if _, err := ParseMode("slow:1000000h"); err == nil || err.Error() != "slow:1000000h out of range: 1ms to 1m" {
		t.Errorf("slow:1000000h: %v", err)
	}
}
