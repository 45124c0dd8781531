package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ListenAddr is a listen address "[host]:port" for net.Listen: an empty host listens on every
// address. The port must be given (1 to 65535): a probe or a Service names it.
type ListenAddr string

// UnmarshalText checks the form.
func (a *ListenAddr) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not [ip]:port", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not 1 to 65535", s, port)
	}
	*a = ListenAddr(s)
	return nil
}

// HostPort splits the address as controller-runtime's webhook.Options wants it (Host, Port).
func (a ListenAddr) HostPort() (string, int) {
	host, port, _ := net.SplitHostPort(string(a)) // checked by UnmarshalText
	n, _ := strconv.Atoi(port)
	return host, n
}

// Addr is an optional IP address: empty when unset.
type Addr struct{ netip.Addr }

// UnmarshalText parses an IPv4 or IPv6 address (no zone: a Service IP has none).
func (a *Addr) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("%q is not an IP address", s)
	}
	a.Addr = ip
	return nil
}
