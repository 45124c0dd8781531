package netsim

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// The zone files must parse and hold exactly Records, or every answer check is meaningless.
func TestZoneFilesServeRecords(t *testing.T) {
	got := map[string][]string{}
	for origin, text := range zoneFiles() {
		zp := dns.NewZoneParser(strings.NewReader(text), origin+".", origin+".zone")
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			name := strings.TrimSuffix(rr.Header().Name, ".")
			switch v := rr.(type) {
			case *dns.A:
				got[name] = append(got[name], v.A.String())
			case *dns.AAAA:
				got[name] = append(got[name], v.AAAA.String())
			}
		}
		if err := zp.Err(); err != nil {
			t.Fatalf("zone %s: %v\n%s", origin, err, text)
		}
	}
	for _, r := range Records() {
		if strings.Join(got[r.FQDN], ",") != strings.Join(append(append([]string(nil), r.A...), r.AAAA...), ",") {
			t.Errorf("%s served as %v, want A %v AAAA %v", r.FQDN, got[r.FQDN], r.A, r.AAAA)
		}
	}
}

// Every name the clients look up must expand, through the kubelet's search list, to a served
// record with the expected answer.
func TestLookupsResolveThroughSearchList(t *testing.T) {
	served := map[string][]string{}
	for _, r := range Records() {
		served[r.FQDN] = r.Addrs()
	}
	search := []string{PodNamespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"}
	for _, l := range append(Lookups(), IPv6Lookups()...) {
		var found []string
		for _, s := range search {
			if a, ok := served[l.Name+"."+s]; ok {
				found = a
				break
			}
		}
		if found == nil {
			found = served[l.Name]
		}
		if found == nil || strings.Join(found, ",") != strings.Join(l.Want, ",") {
			t.Errorf("%s resolves to %v, Lookups wants %v", l.Name, found, l.Want)
		}
	}
}

func TestKubeletResolvConf(t *testing.T) {
	got := KubeletResolvConf("alpha", []string{DeadNameserver, VIP})
	want := "nameserver 10.96.0.99\nnameserver 10.96.0.10\nsearch alpha.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCorefileNeverForwards(t *testing.T) {
	c := corefile("/x")
	if strings.Contains(c, "forward") || strings.Contains(c, "resolv.conf") {
		t.Errorf("Corefile must serve test zones only:\n%s", c)
	}
	for _, z := range []string{"cluster.local:53", "example.test:53", "file /x/cluster.local.zone"} {
		if !strings.Contains(c, z) {
			t.Errorf("Corefile lacks %q:\n%s", z, c)
		}
	}
}

func TestIfNameFitsIFNAMSIZ(t *testing.T) {
	r := &Run{short: "abcdef"}
	for _, tag := range []string{"99b2x", "99p99x"} {
		if n := r.ifName(tag); len(n) > 15 {
			t.Errorf("%s is %d bytes, max 15", n, len(n))
		}
	}
}

func TestSnmpField(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 43408 0 12 43420 12\nUdpLite: InDatagrams RcvbufErrors\nUdpLite: 0 7\n"
	tests := []struct {
		proto, field string
		want         int
		wantErr      bool
	}{
		{"Udp", "RcvbufErrors", 12, false},
		{"Udp", "InDatagrams", 43408, false},
		{"UdpLite", "RcvbufErrors", 7, false},
		{"Udp", "Missing", 0, true},
		{"Tcp", "RcvbufErrors", 0, true},
	}
	for _, tt := range tests {
		got, err := snmpField(snmp, tt.proto, tt.field)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("snmpField(%s, %s) = %d, %v; want %d, error %v", tt.proto, tt.field, got, err, tt.want, tt.wantErr)
		}
	}
}
