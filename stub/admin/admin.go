// Package admin serves the stub's HTTP endpoints for the kubelet and Prometheus: /healthz (the
// process is alive), /readyz (it is serving DNS) and /metrics; and, on loopback connections only,
// /debug/ for someone inside the pod: status and cache (debug.go), the query log's switch
// (querylog.go).
package admin

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports whether the stub is serving, and why not (or a note when it is).
type ReadyFunc func() (ready bool, why string)

// Handler returns the mux: /metrics from g, /healthz always 200 while the process runs, /readyz
// 200 or 503 from ready, and the /debug/ paths of d (none when d is nil), refused with 403 on a
// connection to an address other than loopback.
func Handler(g prometheus.Gatherer, ready ReadyFunc, d *Debug) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	if d != nil && d.QueryLog != nil {
		h := queryLogHandler(d.QueryLog)
		for _, method := range []string{"GET", "PUT", "POST"} {
			mux.Handle(method+" "+QueryLogPath, h)
		}
	}
	debugRoutes(mux, d)
	return loopbackOnly(mux)
}
