package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/podns/podns/internal/resolvconf"
)

func TestLoadDefaults(t *testing.T) {
	c, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{StateDir: "/run/podns", ResolvConf: "/etc/resolv.conf", Nameserver: "127.0.0.1", Options: "timeout:1 attempts:3", LogLevel: "info", LogFormat: "json"}
	if *c != want {
		t.Errorf("got %+v\nwant %+v", *c, want)
	}
	if got := c.MergeOptions(); !reflect.DeepEqual(got, []resolvconf.Option{{Name: "timeout", Value: "1"}, {Name: "attempts", Value: "3"}}) {
		t.Errorf("MergeOptions = %v", got)
	}
	if hn, known := c.HostNetwork(); hn || known {
		t.Errorf("HostNetwork = %v, %v; want false, false without the downward API", hn, known)
	}
}

func TestLoadReportsEveryBadVariable(t *testing.T) {
	_, err := Load(map[string]string{
		"PODNS_STATE_DIR":   "run/podns",
		"PODNS_RESOLV_CONF": "resolv.conf",
		"PODNS_NAMESERVER":  "localhost",
		"PODNS_OPTIONS":     "ndots:16 timeout:0 attempts:x rotate:1 Bad timeout:2",
		"PODNS_POD_IP":      "10.0.0.300",
		"PODNS_HOST_IP":     "node-1",
		"PODNS_LOG_LEVEL":   "verbose",
		"PODNS_LOG_FORMAT":  "xml",
	})
	if err == nil {
		t.Fatal("Load succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		`PODNS_LOG_LEVEL="verbose": out of range (allowed: one of trace, debug, info, warn, error)`,
		`PODNS_LOG_FORMAT="xml": out of range (allowed: one of json, console)`,
		`PODNS_STATE_DIR="run/podns": not an absolute path`,
		`PODNS_RESOLV_CONF="resolv.conf": not an absolute path`,
		`PODNS_NAMESERVER="localhost": not an IP address (allowed: IPv4 or IPv6 address, no zone)`,
		`"ndots:16": ndots takes a number from 0 to 15; "timeout:0": timeout takes a number from 1 to 30; "attempts:x": attempts takes a number from 1 to 5; "rotate:1": rotate takes no value; "Bad" is not an option name`,
		`PODNS_POD_IP="10.0.0.300": not an IP address`,
		`PODNS_HOST_IP="node-1": not an IP address`,
	} {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, want)
		}
		if !found {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if len(lines) != 8 {
		t.Errorf("%d lines, want one per bad variable (8):\n%v", len(lines), err)
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []resolvconf.Option
		wantErr string
	}{
		{in: "off", want: nil},
		{in: "ndots:2 edns0 single-request-reopen timeout:01", want: []resolvconf.Option{{Name: "ndots", Value: "2"}, {Name: "edns0"}, {Name: "single-request-reopen"}, {Name: "timeout", Value: "1"}}},
		{in: "  timeout:30\tattempts:5 ", want: []resolvconf.Option{{Name: "timeout", Value: "30"}, {Name: "attempts", Value: "5"}}},
		{in: "ndots:0", want: []resolvconf.Option{{Name: "ndots", Value: "0"}}},
		{in: "timeout:1 timeout:2", wantErr: "timeout given twice"},
		{in: "rotate:", wantErr: "rotate takes no value"},
		{in: "ndots", wantErr: "ndots takes a number from 0 to 15"},
		{in: "#rotate", wantErr: "is not an option name"},
		{in: "attempts:6", wantErr: "attempts takes a number from 1 to 5"},
	} {
		got, err := ParseOptions(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseOptions(%q) err = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseOptions(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestHostNetwork(t *testing.T) {
	for _, tc := range []struct {
		pod, host string
		hn, known bool
	}{
		{"10.244.1.7", "192.168.1.10", false, true},
		{"192.168.1.10", "192.168.1.10", true, true},
		{"2001:db8::10", "2001:db8::10", true, true},
		{"::ffff:192.168.1.10", "192.168.1.10", true, true},
		{"10.244.1.7", "", false, false},
		{"", "192.168.1.10", false, false},
	} {
		env := map[string]string{"PODNS_POD_IP": tc.pod, "PODNS_HOST_IP": tc.host}
		c, err := Load(env)
		if err != nil {
			t.Fatal(err)
		}
		if hn, known := c.HostNetwork(); hn != tc.hn || known != tc.known {
			t.Errorf("pod %q host %q: HostNetwork = %v, %v; want %v, %v", tc.pod, tc.host, hn, known, tc.hn, tc.known)
		}
	}
}
