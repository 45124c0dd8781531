package envconfig

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Timeout time.Duration `env:"T_TIMEOUT" envDefault:"2s" min:"100ms" max:"30s" help:"per attempt"`
	Size    int           `env:"T_SIZE" envDefault:"10" min:"1" max:"100" help:"entries"`
	Proto   string        `env:"T_PROTO" envDefault:"tcp" oneof:"tcp udp" help:"protocol"`
	Listen  []string      `env:"T_LISTEN" envDefault:"127.0.0.1:53" envSeparator:"," allowed:"ip:port list" help:"where"`
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    testConfig
		wantErr []string // each line of the error must contain one of these, in order
	}{
		{name: "defaults", env: map[string]string{},
			want: testConfig{Timeout: 2 * time.Second, Size: 10, Proto: "tcp", Listen: []string{"127.0.0.1:53"}}},
		{name: "empty counts as unset", env: map[string]string{"T_SIZE": ""},
			want: testConfig{Timeout: 2 * time.Second, Size: 10, Proto: "tcp", Listen: []string{"127.0.0.1:53"}}},
		{name: "values", env: map[string]string{"T_TIMEOUT": "500ms", "T_SIZE": "100", "T_PROTO": "udp", "T_LISTEN": "a,b"},
			want: testConfig{Timeout: 500 * time.Millisecond, Size: 100, Proto: "udp", Listen: []string{"a", "b"}}},
		{name: "every problem at once",
			env: map[string]string{"T_TIMEOUT": "5x", "T_SIZE": "0", "T_PROTO": "quic"},
			wantErr: []string{
				`T_TIMEOUT="5x": not a duration (allowed: 100ms to 30s)`,
				`T_SIZE="0": out of range (allowed: 1 to 100)`,
				`T_PROTO="quic": out of range (allowed: one of tcp, udp)`,
			}},
		{name: "above max", env: map[string]string{"T_TIMEOUT": "1m"},
			wantErr: []string{`T_TIMEOUT="1m": out of range (allowed: 100ms to 30s)`}},
		{name: "not a number", env: map[string]string{"T_SIZE": "ten"},
			wantErr: []string{`T_SIZE="ten": not a whole number (allowed: 1 to 100)`}},
		// A new-user trial: PODNS_QUERY_LOG_RATE=99999999999999999999 said "not a whole number".
		{name: "too large for the type", env: map[string]string{"T_SIZE": "99999999999999999999"},
			wantErr: []string{`T_SIZE="99999999999999999999": out of range (allowed: 1 to 100)`}},
		// One rule for every kind of value: surrounding white space is ignored, as the stub's
		// query log switch ignores it.
		{name: "surrounding space", env: map[string]string{"T_TIMEOUT": " 500ms\t", "T_SIZE": " 100 ", "T_PROTO": "udp ", "T_LISTEN": " a,b\n"},
			want: testConfig{Timeout: 500 * time.Millisecond, Size: 100, Proto: "udp", Listen: []string{"a", "b"}}},
		{name: "only spaces counts as unset", env: map[string]string{"T_SIZE": "  "},
			want: testConfig{Timeout: 2 * time.Second, Size: 10, Proto: "tcp", Listen: []string{"127.0.0.1:53"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c testConfig
			err := Load(&c, tt.env)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if c.Timeout != tt.want.Timeout || c.Size != tt.want.Size || c.Proto != tt.want.Proto ||
					strings.Join(c.Listen, ",") != strings.Join(tt.want.Listen, ",") {
					t.Fatalf("got %+v, want %+v", c, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.wantErr) {
				t.Fatalf("got %d lines %q, want %d", len(lines), lines, len(tt.wantErr))
			}
			for i, w := range tt.wantErr {
				if lines[i] != w {
					t.Errorf("line %d = %q, want %q", i, lines[i], w)
				}
			}
		})
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var buf bytes.Buffer
	Usage(&buf, &testConfig{})
	out := buf.String()
	for _, want := range []string{"T_TIMEOUT", "2s", "100ms to 30s", "per attempt", "T_PROTO", "one of tcp, udp", "T_LISTEN", "ip:port list"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}
