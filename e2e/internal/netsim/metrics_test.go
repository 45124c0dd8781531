package netsim

import "testing"

func TestParseMetrics(t *testing.T) {
	text := []byte(`# HELP podns_prefetch_total x
# TYPE podns_prefetch_total counter
podns_prefetch_total{reason="expiry"} 7
podns_prefetch_total{reason="search"} 3

podns_upstream_queries_total{protocol="tcp",upstream="10.96.0.10:53"} 12
podns_upstream_queries_total{protocol="udp",upstream="10.96.0.11:53"} 1
podns_coalesced_total 999
go_gc_duration_seconds{quantile="0.5"} 1.5e-05
weird{l="a b} c"} 2 1700000000
`)
	m, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"podns_prefetch_total", []string{`reason="expiry"`}, 7},
		{"podns_prefetch_total", nil, 10},
		{"podns_upstream_queries_total", nil, 13},
		{"podns_upstream_queries_total", []string{`protocol="tcp"`}, 12},
		{"podns_coalesced_total", nil, 999},
		{"go_gc_duration_seconds", nil, 1.5e-05},
		{"weird", nil, 2},
		{"podns_absent_total", nil, 0},
	} {
		if got := m.Sum(tc.name, tc.labels...); got != tc.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if _, err := ParseMetrics([]byte("podns_x{a=\"b\"}\n")); err == nil {
		t.Error("a sample without a value parsed")
	}
	if _, err := ParseMetrics([]byte("podns_x abc\n")); err == nil {
		t.Error("a non-numeric value parsed")
	}
}
