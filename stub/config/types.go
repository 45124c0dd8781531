package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

// ListenList is PODNS_LISTEN: comma-separated ip:port, spaces around each ignored. Every bad
// entry is its own problem.
type ListenList []netip.AddrPort

// UnmarshalText parses the list.
func (l *ListenList) UnmarshalText(b []byte) error {
	var errs *multierror.Error
	*l = nil
	for _, s := range strings.Split(string(b), ",") {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			errs = multierror.Append(errs, fmt.Errorf("%q is not ip:port", s))
			continue
		}
		*l = append(*l, ap)
	}
	return errs.ErrorOrNil()
}

// Strings gives the addresses as text, for logs.
func (l ListenList) Strings() []string { return addrStrings(l) }

// UpstreamList is PODNS_UPSTREAMS: comma-separated ip[:port] (ParseUpstream). Every bad entry is
// its own problem.
type UpstreamList []netip.AddrPort

// UnmarshalText parses the list.
func (l *UpstreamList) UnmarshalText(b []byte) error {
	var errs *multierror.Error
	*l = nil
	for _, s := range strings.Split(string(b), ",") {
		ap, err := ParseUpstream(s)
		if err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		*l = append(*l, ap)
	}
	return errs.ErrorOrNil()
}

// ParseUpstream accepts "ip", "ip:port", "[ipv6]:port" and "[ipv6]"; the port defaults to 53.
// An IPv6 address may carry a zone (fe80::1%eth0, [fe80::1%eth0]:53). A bare IPv6 address is
// the whole string: "fd00::a:5353" is the address fd00::a:5353 on port 53, as it must be, since
// both readings are valid; a port after an IPv6 address needs the brackets (RFC 3986 §3.2.2).
// Brackets around an IPv4 address are refused. Names are refused: the stub is the pod's
// resolver and has nothing to resolve them with.
func ParseUpstream(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	// "[v6]" without a port: the bracketed form people copy from "[v6]:port" and URLs.
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			if a, err := netip.ParseAddr(inner); err == nil && a.Is6() {
				return netip.AddrPortFrom(a, 53), nil
			}
		}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address with an optional port", s)
	}
	return ap, nil
}

// HTTPAddr is PODNS_HTTP_LISTEN: "[ip]:port" for net.Listen, or "off".
type HTTPAddr string

// UnmarshalText checks the address.
func (a *HTTPAddr) UnmarshalText(b []byte) error {
	s := string(b)
	if s != "off" {
		host, port, err := splitHostPort(s)
		if err != nil || (host != "" && !isIP(host)) || !validPort(port) {
			return fmt.Errorf("not [ip]:port")
		}
	}
	*a = HTTPAddr(s)
	return nil
}

// Off reports whether the HTTP endpoints are switched off.
func (a HTTPAddr) Off() bool { return a == "off" }

// StaleWindow is PODNS_SERVE_STALE: "off" (0) or a duration from 1s to 168h. It keeps the text
// it was given, for the log line.
type StaleWindow struct {
	d    time.Duration
	text string
}

// The bounds of PODNS_SERVE_STALE; its `allowed` tag says the same.
const (
	minStaleWindow = time.Second
	maxStaleWindow = 168 * time.Hour
)

// UnmarshalText parses "off" or a duration within the bounds.
func (w *StaleWindow) UnmarshalText(b []byte) error {
	s := string(b)
	if s == "off" {
		*w = StaleWindow{text: s}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minStaleWindow || d > maxStaleWindow {
		return fmt.Errorf("not off or a duration")
	}
	*w = StaleWindow{d: d, text: s}
	return nil
}

// String is the text the window was set with ("off", "1h", ...).
func (w StaleWindow) String() string { return w.text }

func addrStrings(aps []netip.AddrPort) []string {
	out := make([]string, len(aps))
	for i, ap := range aps {
		out[i] = ap.String()
	}
	return out
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	host, port = s[:i], s[i+1:]
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host, port, nil
}

func isIP(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}
