package netsim

import (
	"errors"
	"strings"
	"testing"
)

// ipv6Ready decides when link6 may return: it must wait for carrier and for every address to
// leave the tentative state, and give up at once on a failed duplicate detection.
func TestIPv6Ready(t *testing.T) {
	const (
		up     = "3: peabc00p00x@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000\n    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff link-netns n\n"
		noCarr = "3: peabc00p00x@if2: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN group default qlen 1000\n    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff link-netns n\n"
		global = "    inet6 fd00:10:244::2/64 scope global nodad \n       valid_lft forever preferred_lft forever\n"
		ll     = "    inet6 fe80::81b:2cff:fe3d:4e5f/64 scope link \n       valid_lft forever preferred_lft forever\n"
		llTent = "    inet6 fe80::81b:2cff:fe3d:4e5f/64 scope link tentative \n       valid_lft forever preferred_lft forever\n"
		dadBad = "    inet6 fd00:10:244::2/64 scope global tentative dadfailed \n       valid_lft forever preferred_lft forever\n"
	)
	for _, tc := range []struct {
		name, out string
		ready     bool
		permanent bool
	}{
		{"ready", up + global + ll, true, false},
		{"link-local still tentative", up + global + llTent, false, false},
		{"no carrier yet", noCarr + global + ll, false, false},
		{"no address yet", up, false, false},
		{"duplicate detection failed", up + dadBad + ll, false, true},
	} {
		err := ipv6Ready(tc.out)
		var p permanent
		if (err == nil) != tc.ready || errors.As(err, &p) != tc.permanent {
			t.Errorf("%s: ipv6Ready = %v; want ready %v, permanent %v\n%s", tc.name, err, tc.ready, tc.permanent, strings.TrimSpace(tc.out))
		}
	}
}
