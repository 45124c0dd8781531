package envconfig

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
)

// addrList is a config type of its own: a comma-separated ip:port list, one problem per bad entry.
type addrList []netip.AddrPort

func (l *addrList) UnmarshalText(b []byte) error {
	var errs *multierror.Error
	*l = nil
	for _, s := range strings.Split(string(b), ",") {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%q is not ip:port", s))
			continue
		}
		*l = append(*l, ap)
	}
	return errs.ErrorOrNil()
}

type typedConfig struct {
	Addrs    addrList `env:"T_ADDRS" envDefault:"127.0.0.1:53" allowed:"comma-separated ip:port" help:"where"`
	Size     int      `env:"T_SIZE" envDefault:"10" min:"1" max:"100" help:"entries"`
	Coalesce Switch   `env:"T_COALESCE" envDefault:"on" oneof:"on off" help:"share misses"`
	Prefetch Switch   `env:"T_PREFETCH" envDefault:"off" oneof:"on off" help:"refresh early"`
	Low      int      `env:"T_LOW" envDefault:"1" help:"at most T_SIZE"`
}

func (c *typedConfig) Validate() error {
	if c.Low > c.Size {
		return fmt.Errorf("T_LOW=%d is above T_SIZE=%d (allowed: low <= size)", c.Low, c.Size)
	}
	return nil
}

func TestSwitch(t *testing.T) {
	for _, tt := range []struct {
		env                map[string]string
		coalesce, prefetch Switch
	}{
		{map[string]string{}, true, false},
		{map[string]string{"T_COALESCE": "off", "T_PREFETCH": "on"}, false, true},
		{map[string]string{"T_COALESCE": "", "T_PREFETCH": ""}, true, false}, // empty is unset: the default
	} {
		var c typedConfig
		if err := Load(&c, tt.env); err != nil {
			t.Fatalf("%v: %v", tt.env, err)
		}
		if c.Coalesce != tt.coalesce || c.Prefetch != tt.prefetch {
			t.Errorf("%v: coalesce %v prefetch %v", tt.env, c.Coalesce, c.Prefetch)
		}
	}
	if Switch(true).String() != "on" || Switch(false).String() != "off" {
		t.Error("String is not on/off")
	}
}

func TestSwitchBadValueNamesVariableAndWords(t *testing.T) {
	for _, bad := range []string{"true", "ON", "1", "yes"} {
		var c typedConfig
		err := Load(&c, map[string]string{"T_COALESCE": bad})
		want := fmt.Sprintf(`T_COALESCE=%q: not on or off (allowed: one of on, off)`, bad)
		if err == nil || err.Error() != want {
			t.Errorf("T_COALESCE=%q: err %v, want %q", bad, err, want)
		}
	}
}

func TestLoadOrderTagsThenTypesThenValidate(t *testing.T) {
	var c typedConfig
	err := Load(&c, map[string]string{"T_ADDRS": "127.0.0.1:53,localhost:53,x", "T_SIZE": "0", "T_PREFETCH": "maybe", "T_LOW": "5"})
	want := []string{
		`T_SIZE="0": out of range (allowed: 1 to 100)`,
		`T_ADDRS="127.0.0.1:53,localhost:53,x": "localhost:53" is not ip:port (allowed: comma-separated ip:port)`,
		`T_ADDRS="127.0.0.1:53,localhost:53,x": "x" is not ip:port (allowed: comma-separated ip:port)`,
		`T_PREFETCH="maybe": not on or off (allowed: one of on, off)`,
		`T_LOW=5 is above T_SIZE=0 (allowed: low <= size)`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	var me *multierror.Error
	if !errors.As(err, &me) {
		t.Fatalf("error %T, want a *multierror.Error", err)
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
}

func TestLoadTypedDefault(t *testing.T) {
	var c typedConfig
	if err := Load(&c, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if len(c.Addrs) != 1 || c.Addrs[0] != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Errorf("addrs %v", c.Addrs)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := Logger(&buf, "warn", "json", "initc")
	log.Info().Msg("dropped")
	log.Warn().Msg("kept")
	out := buf.String()
	if strings.Contains(out, "dropped") || !strings.Contains(out, `"component":"initc"`) ||
		!strings.Contains(out, `"message":"kept"`) || !strings.Contains(out, `"time":`) {
		t.Errorf("json log: %s", out)
	}
	buf.Reset()
	log = Logger(&buf, "info", "console", "stub")
	log.Info().Msg("hello")
	if out := buf.String(); strings.HasPrefix(out, "{") || !strings.Contains(out, "hello") || !strings.Contains(out, "component=") || !strings.Contains(out, "stub") {
		t.Errorf("console log: %q", out)
	}
}
