package inject

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The webhook's metrics, on controller-runtime's registry (served by the manager's metrics
// endpoint with controller-runtime's own webhook metrics). Every label has a fixed set of values.
var (
	admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podns_webhook_admissions_total",
		Help: "Pod admissions handled, by the mode the pod got (sidecar|restricted) and the result " +
			"(injected|reordered|unchanged|skipped|warning).",
	}, []string{"mode", "result"})
	admissionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "podns_webhook_admission_duration_seconds",
		Help: "Time the handler took per admission, from the decoded request to the response with its " +
			"patch (the injection latency; the API server's round trip is not included).",
		// 50 µs to 0.4 s: an injection takes well under a millisecond, the webhook timeout is 5 s.
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
	})
	warnings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podns_webhook_warnings_total",
		Help: "Warnings returned to the API server, by reason (name-clash|sysctl|port|nameservers|" +
			"search-limits|no-cluster-dns|annotation|decode|unknown-field|mode-label|internal).",
	}, []string{"reason"})
)

var registerOnce sync.Once

func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(admissions, admissionDuration, warnings)
	})
}

func observe(res Result, d time.Duration) {
	admissions.WithLabelValues(string(res.Mode), string(res.Outcome)).Inc()
	admissionDuration.Observe(d.Seconds())
	for _, w := range res.Warnings {
		warnings.WithLabelValues(w.Reason).Inc()
	}
}
