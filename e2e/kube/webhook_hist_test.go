package kube

import (
	"math"
	"testing"
)

// The webhook step's numbers come from these parsers: check them against hand-computed values,
// without a cluster.
func TestHistograms(t *testing.T) {
	text := `# HELP apiserver_admission_webhook_admission_duration_seconds x
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="false",type="admit",le="0.005"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="false",type="admit",le="0.025"} 8
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="false",type="admit",le="+Inf"} 10
apiserver_admission_webhook_admission_duration_seconds_sum{name="sidecar.podns.io",operation="CREATE",rejected="false",type="admit"} 0.2
apiserver_admission_webhook_admission_duration_seconds_count{name="sidecar.podns.io",operation="CREATE",rejected="false",type="admit"} 10
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="true",type="admit",le="0.005"} 0
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="true",type="admit",le="0.025"} 0
apiserver_admission_webhook_admission_duration_seconds_bucket{name="sidecar.podns.io",operation="CREATE",rejected="true",type="admit",le="+Inf"} 2
apiserver_admission_webhook_admission_duration_seconds_sum{name="sidecar.podns.io",operation="CREATE",rejected="true",type="admit"} 0.1
apiserver_admission_webhook_admission_duration_seconds_count{name="sidecar.podns.io",operation="CREATE",rejected="true",type="admit"} 2
apiserver_admission_webhook_admission_duration_seconds_bucket{name="other.example",operation="CREATE",rejected="false",type="admit",le="+Inf"} 99
apiserver_admission_webhook_admission_duration_seconds_count{name="other.example",operation="CREATE",rejected="false",type="admit"} 99
`
	hs := histograms(text, "apiserver_admission_webhook_admission_duration_seconds",
		func(l map[string]string) bool { return l["name"] != "other.example" }, "name")
	if len(hs) != 1 || hs[0].key != "sidecar.podns.io" {
		t.Fatalf("series %+v, want one for sidecar.podns.io", hs)
	}
	h := hs[0]
	if h.count != 12 || math.Abs(h.sum-0.3) > 1e-9 || h.buckets[0.005] != 2 || h.buckets[0.025] != 8 || h.buckets[math.Inf(1)] != 12 {
		t.Fatalf("summed %+v", h)
	}
	// rank 6 of 12 lies in (0.005, 0.025], 4 of its 6 observations in: 0.005 + 0.02*4/6.
	if q := h.quantile(0.5); math.Abs(q-(0.005+0.02*4/6)) > 1e-9 {
		t.Errorf("p50 = %v", q)
	}
	if q := h.quantile(0.99); q != 0.025 {
		t.Errorf("p99 in the +Inf bucket = %v, want the highest finite bound 0.025", q)
	}
	if q := (hist{buckets: map[float64]float64{}}).quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty histogram p50 = %v, want NaN", q)
	}
	// No key label: one series named "all".
	if hs := histograms("x_count 3\nx_sum 1.5\n", "x", func(map[string]string) bool { return true }, "mode"); len(hs) != 1 || hs[0].key != "all" || hs[0].count != 3 {
		t.Errorf("unlabelled: %+v", hs)
	}
}
