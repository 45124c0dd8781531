package netsim

import (
	"fmt"
	"sort"
	"strings"
)

// Record is one name the simulated cluster DNS serves, with every address it has.
type Record struct {
	// FQDN without the trailing dot.
	FQDN string
	A    []string
	AAAA []string
}

// Addrs returns all addresses of the record, sorted as the lookup client prints them.
func (r Record) Addrs() []string {
	out := append(append([]string(nil), r.A...), r.AAAA...)
	sort.Strings(out)
	return out
}

// Records returns what the cluster DNS serves: services in two Kubernetes namespaces under
// cluster.local (IPv4 only, as in most clusters; ColdServices of them in the pods' own), the
// headless Service BigName, and an
// "external" zone, example.test, that stands in for the internet (never forwarded anywhere),
// with ColdNames extra names in it.
func Records() []Record {
	recs := []Record{
		// The API server's Service, in every cluster: restricted mode's PODNS_READY_CHECK_NAME.
		{FQDN: KubernetesService, A: []string{"10.96.0.1"}},
		{FQDN: "web.alpha.svc.cluster.local", A: []string{"10.96.1.10"}},
		{FQDN: "db.alpha.svc.cluster.local", A: []string{"10.96.1.11"}},
		{FQDN: "api.beta.svc.cluster.local", A: []string{"10.96.2.10"}},
		{FQDN: "cache.beta.svc.cluster.local", A: []string{"10.96.2.11"}},
		{FQDN: "www.example.test", A: []string{"192.0.2.10"}, AAAA: []string{"2001:db8::10"}},
		{FQDN: "api.example.test", A: []string{"192.0.2.11", "192.0.2.12"}},
	}
	// IPv6 Services (an IPv6-only one and a dual-stack one), for IPv6Lookups.
	recs = append(recs,
		Record{FQDN: "web6.alpha.svc.cluster.local", AAAA: []string{"fd00:10:96::1:10"}},
		Record{FQDN: "dual.alpha.svc.cluster.local", A: []string{"10.96.1.20"}, AAAA: []string{"fd00:10:96::1:20"}},
	)
	for i := range ColdNames {
		recs = append(recs, Record{FQDN: ColdName(i),
			A: []string{fmt.Sprintf("192.0.2.%d", 100+i)}, AAAA: []string{fmt.Sprintf("2001:db8::%d", 100+i)}})
	}
	recs = append(recs, coldServiceRecords()...)
	big := Record{FQDN: BigName}
	for i := range BigRecords {
		big.A = append(big.A, fmt.Sprintf("10.244.1.%d", 10+i))
	}
	return append(recs, big)
}

// KubernetesService is the Service default/kubernetes every cluster has, which the webhook's
// restricted mode makes the stub resolve before it reports ready (PODNS_READY_CHECK_NAME).
const KubernetesService = "kubernetes.default.svc.cluster.local"

// BigName is a headless Service with BigRecords ready endpoints: one A record each, a reply
// of about 680 octets, more than a UDP client without EDNS takes (512). No standard client run
// looks it up (issue 12 item 0).
const BigName = "big.alpha.svc.cluster.local"

// BigRecords is how many A records BigName has.
const BigRecords = 40

// ColdNames is how many extra external names (ColdName(0) … ColdName(ColdNames-1)) the zone
// serves beyond Lookups, each with one A and one AAAA record. No standard client run looks
// them up, so a test can be sure its lookup of one is the first (a cold cache, a miss).
const ColdNames = 40

// ColdName returns the i-th cold external name, "cold<i>.example.test".
func ColdName(i int) string { return fmt.Sprintf("cold%d.example.test", i) }

// Lookup is a name as an application in a pod types it, with the answer it must get.
type Lookup struct {
	// Name as passed to getaddrinfo; short names rely on the search list.
	Name string
	// Want is the sorted address list the lookup must return.
	Want []string
}

// Lookups returns the names the clients resolve from a pod in the Kubernetes namespace
// "alpha": a short service name (first search domain), a name in another namespace (second),
// a "<svc>.<ns>.svc" name (third), a fully qualified service name, and external names, which
// ndots:5 sends through the whole search list first (NXDOMAIN, NXDOMAIN, NXDOMAIN, answer).
func Lookups() []Lookup {
	want := map[string][]string{}
	for _, r := range Records() {
		want[r.FQDN] = r.Addrs()
	}
	return []Lookup{
		{Name: "web", Want: want["web.alpha.svc.cluster.local"]},
		{Name: "db", Want: want["db.alpha.svc.cluster.local"]},
		{Name: "api.beta", Want: want["api.beta.svc.cluster.local"]},
		{Name: "cache.beta.svc", Want: want["cache.beta.svc.cluster.local"]},
		{Name: "web.alpha.svc.cluster.local", Want: want["web.alpha.svc.cluster.local"]},
		{Name: "www.example.test", Want: want["www.example.test"]},
		{Name: "api.example.test", Want: want["api.example.test"]},
	}
}

// IPv6Lookups returns the names the clients resolve in an IPv6 cluster's pods (namespace
// "alpha"): an IPv6-only Service by its short name (an AAAA record, the A question NODATA) and
// fully qualified (four dots, below ndots:5, so three NXDOMAINs first), a dual-stack Service
// (A and AAAA), and an external name with both (three NXDOMAINs, then the answers).
func IPv6Lookups() []Lookup {
	want := map[string][]string{}
	for _, r := range Records() {
		want[r.FQDN] = r.Addrs()
	}
	return []Lookup{
		{Name: "web6", Want: want["web6.alpha.svc.cluster.local"]},
		{Name: "web6.alpha.svc.cluster.local", Want: want["web6.alpha.svc.cluster.local"]},
		{Name: "dual", Want: want["dual.alpha.svc.cluster.local"]},
		{Name: "www.example.test", Want: want["www.example.test"]},
	}
}

// PodNamespace is the Kubernetes namespace of the simulated pods; Lookups depends on it.
const PodNamespace = "alpha"

// KubeletResolvConf is the resolv.conf the kubelet writes for a ClusterFirst pod in
// Kubernetes namespace ns with the given nameservers (normally just the DNS VIP).
func KubeletResolvConf(ns string, nameservers []string) string {
	var b strings.Builder
	for _, n := range nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", n)
	}
	fmt.Fprintf(&b, "search %s.svc.cluster.local svc.cluster.local cluster.local\n", ns)
	b.WriteString("options ndots:5\n")
	return b.String()
}

// zoneFiles renders the records as RFC 1035 zone files, keyed by origin.
func zoneFiles() map[string]string {
	zones := map[string]*strings.Builder{}
	for _, origin := range []string{"cluster.local", "example.test"} {
		b := &strings.Builder{}
		fmt.Fprintf(b, "$ORIGIN %s.\n$TTL 30\n", origin)
		fmt.Fprintf(b, "@ IN SOA ns.dns.%s. hostmaster.%s. 1 7200 1800 86400 30\n", origin, origin)
		fmt.Fprintf(b, "@ IN NS ns.dns.%s.\n", origin)
		fmt.Fprintf(b, "ns.dns IN A %s\n", VIP)
		zones[origin] = b
	}
	for _, r := range Records() {
		for origin, b := range zones {
			if !strings.HasSuffix(r.FQDN, "."+origin) {
				continue
			}
			for _, a := range r.A {
				fmt.Fprintf(b, "%s. IN A %s\n", r.FQDN, a)
			}
			for _, a := range r.AAAA {
				fmt.Fprintf(b, "%s. IN AAAA %s\n", r.FQDN, a)
			}
		}
	}
	out := map[string]string{}
	for k, b := range zones {
		out[k] = b.String()
	}
	return out
}

// corefile serves the zone files authoritatively and nothing else: a name outside them gets
// REFUSED, and nothing is ever forwarded (in particular not to the host's resolv.conf).
func corefile(dir string) string {
	var b strings.Builder
	for _, origin := range []string{"cluster.local", "example.test"} {
		fmt.Fprintf(&b, "%s:53 {\n    errors\n    file %s/%s.zone\n}\n", origin, dir, origin)
	}
	return b.String()
}
