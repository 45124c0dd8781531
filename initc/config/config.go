// Package config is initc's configuration: one struct filled from PODNS_* environment variables
// and validated as a whole, so one run reports every bad variable.
package config

import (
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/resolvconf"
)

// Config is every knob of initc. The tags carry each variable, its default, the allowed values
// and its meaning; `initc -help` and docs/configuration.md (`make docs`) are generated from
// them.
type Config struct {
	// StateDir is the emptyDir shared with the stub: upstream.conf and the disabled marker.
	StateDir string `env:"PODNS_STATE_DIR" envDefault:"/run/podns" allowed:"absolute path (created if missing)" help:"the emptyDir shared with the stub: upstream.conf (the kubelet's original), the disabled marker"`
	// ResolvConf is the file the kubelet bind-mounted into the pod; tests point it elsewhere.
	ResolvConf string `env:"PODNS_RESOLV_CONF" envDefault:"/etc/resolv.conf" allowed:"absolute path" help:"the resolv.conf to rewrite in place (the stub reads the same variable)"`
	// Nameserver is the stub's address: the only nameserver of the rewritten file.
	Nameserver string `env:"PODNS_NAMESERVER" envDefault:"127.0.0.1" allowed:"IPv4 or IPv6 address, no zone" help:"the only nameserver of the rewritten resolv.conf"`
	// Options are merged over the kubelet's options. timeout:1 because the stub is local and
	// answers at once or not at all; attempts:3 rides out a stub restart.
	Options string `env:"PODNS_OPTIONS" envDefault:"timeout:1 attempts:3" allowed:"space-separated resolv.conf options (ndots:0-15 timeout:1-30 attempts:1-5, flags without value), or off" help:"options merged over the kubelet's: a key given here wins, ndots kept unless given"`
	// PodIP and HostIP come from the downward API (status.podIP, status.hostIP). Equal means a
	// hostNetwork pod, where podns must not take the node's port 53.
	PodIP  string `env:"PODNS_POD_IP" allowed:"IP address (downward API status.podIP), or unset" help:"with PODNS_HOST_IP: equal means a hostNetwork pod; podns then disables itself; not both set: no check, the log line warns"`
	HostIP string `env:"PODNS_HOST_IP" allowed:"IP address (downward API status.hostIP), or unset" help:"see PODNS_POD_IP"`

	LogLevel  string `env:"PODNS_LOG_LEVEL" envDefault:"info" oneof:"trace debug info warn error" help:"log level (zerolog)"`
	LogFormat string `env:"PODNS_LOG_FORMAT" envDefault:"json" oneof:"json console" help:"log format; one line per run, to stderr"`
}

// Load reads the environment (nil: the process's) and validates it. The error lists every bad
// variable, one per line, each with its value and the allowed values.
func Load(environ map[string]string) (*Config, error) {
	var c Config
	if err := envconfig.Load(&c, environ); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks what the tags cannot, reporting every problem. envconfig.Load calls it.
func (c *Config) Validate() error {
	var errs *multierror.Error
	bad := func(name, value, problem, allowed string) {
		errs = multierror.Append(errs, fmt.Errorf("%s=%q: %s (allowed: %s)", name, value, problem, allowed))
	}
	for _, p := range []struct{ name, value string }{{"PODNS_STATE_DIR", c.StateDir}, {"PODNS_RESOLV_CONF", c.ResolvConf}} {
		if !filepath.IsAbs(p.value) {
			bad(p.name, p.value, "not an absolute path", "absolute path")
		}
	}
	if a, err := netip.ParseAddr(c.Nameserver); err != nil || a.Zone() != "" {
		bad("PODNS_NAMESERVER", c.Nameserver, "not an IP address", "IPv4 or IPv6 address, no zone")
	}
	if _, err := ParseOptions(c.Options); err != nil {
		bad("PODNS_OPTIONS", c.Options, err.Error(), "space-separated resolv.conf options, or off")
	}
	for _, p := range []struct{ name, value string }{{"PODNS_POD_IP", c.PodIP}, {"PODNS_HOST_IP", c.HostIP}} {
		if p.value == "" {
			continue
		}
		if _, err := netip.ParseAddr(p.value); err != nil {
			bad(p.name, p.value, "not an IP address", "IP address from the downward API, or unset")
		}
	}
	return errs.ErrorOrNil()
}

// NameserverAddr is the parsed PODNS_NAMESERVER (valid after Load).
func (c *Config) NameserverAddr() netip.Addr { return netip.MustParseAddr(c.Nameserver) }

// MergeOptions is the parsed PODNS_OPTIONS (valid after Load); nil for "off".
func (c *Config) MergeOptions() []resolvconf.Option {
	o, _ := ParseOptions(c.Options)
	return o
}

// Logger builds the logger PODNS_LOG_LEVEL and PODNS_LOG_FORMAT ask for, writing to w.
func (c *Config) Logger(w io.Writer) zerolog.Logger {
	return envconfig.Logger(w, c.LogLevel, c.LogFormat, "initc")
}

// HostNetwork reports whether the downward API says this pod shares the node's network
// namespace (pod IP equals host IP), and whether it could tell at all (both variables set).
func (c *Config) HostNetwork() (hostNetwork, known bool) {
	if c.PodIP == "" || c.HostIP == "" {
		return false, false
	}
	p, err1 := netip.ParseAddr(c.PodIP)
	h, err2 := netip.ParseAddr(c.HostIP)
	if err1 != nil || err2 != nil {
		return false, false
	}
	return p.Unmap() == h.Unmap(), true
}

// optionRanges bounds the options whose value is a number; the bounds are glibc's
// (RES_MAXNDOTS, RES_MAXRETRANS, RES_MAXRETRY). musl reads the same three.
var optionRanges = map[string][2]int{"ndots": {0, 15}, "timeout": {1, 30}, "attempts": {1, 5}}

// optionName is what glibc and musl option names look like; newer glibc releases add options,
// so names outside the numeric three are accepted when they look like one.
var optionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// ParseOptions parses PODNS_OPTIONS: space-separated options, "off" for none. A name given
// twice is an error: the intent would be ambiguous.
func ParseOptions(s string) ([]resolvconf.Option, error) {
	if strings.TrimSpace(s) == "off" {
		return nil, nil
	}
	var out []resolvconf.Option
	seen := map[string]bool{}
	var problems *multierror.Error
	for _, w := range strings.Fields(s) {
		o := resolvconf.ParseOption(w)
		switch r, numeric := optionRanges[o.Name]; {
		case !optionName.MatchString(o.Name):
			problems = multierror.Append(problems, fmt.Errorf("%q is not an option name", w))
			continue
		case numeric:
			n, err := strconv.Atoi(o.Value)
			if err != nil || n < r[0] || n > r[1] {
				problems = multierror.Append(problems, fmt.Errorf("%q: %s takes a number from %d to %d", w, o.Name, r[0], r[1]))
				continue
			}
			o.Value = strconv.Itoa(n) // "timeout:01" -> "timeout:1"
		case o.Value != "" || strings.HasSuffix(w, ":"):
			problems = multierror.Append(problems, fmt.Errorf("%q: %s takes no value", w, o.Name))
			continue
		}
		if seen[o.Name] {
			problems = multierror.Append(problems, fmt.Errorf("%s given twice", o.Name))
			continue
		}
		seen[o.Name] = true
		out = append(out, o)
	}
	if problems != nil {
		// One line: the problems become a single PODNS_OPTIONS line of Load's error.
		problems.ErrorFormat = func(es []error) string {
			parts := make([]string, len(es))
			for i, e := range es {
				parts[i] = e.Error()
			}
			return strings.Join(parts, "; ")
		}
		return nil, problems
	}
	return out, nil
}
