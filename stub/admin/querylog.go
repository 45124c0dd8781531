package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	"github.com/podns/podns/stub/querylog"
)

// QueryLogPath switches the query log while the stub runs (README: Query log).
const QueryLogPath = "/debug/querylog"

// maxModeBody bounds the body of a switch request: a mode is a few bytes.
const maxModeBody = 1 << 10

// QueryLogState is the JSON of GET and of a switch's reply.
type QueryLogState struct {
	Mode querylog.Mode `json:"mode"`
	// Previous is the mode before the switch (switch replies only).
	Previous *querylog.Mode `json:"previous,omitempty"`
	// Rate is PODNS_QUERY_LOG_RATE, lines per second.
	Rate int `json:"rate"`
	// Dropped is how many lines the rate limit dropped since the stub started.
	Dropped int64 `json:"dropped"`
}

// queryLogHandler serves QueryLogPath:
//   - GET: the current mode, as QueryLogState;
//   - PUT or POST: switch to the mode in the query parameter mode (?mode=errors) or in the
//     body, plain ("slow:100ms") or JSON ({"mode":"all"}); the reply is QueryLogState with the
//     previous mode; a bad mode is 400 with the allowed values, and so is a mode given twice
//     (?mode= repeated, or both ?mode= and a body): which one was meant is a guess. Only from a loopback address
//     (403 otherwise): the switch is for someone inside the pod (kubectl exec), not for
//     whoever reaches the pod IP; PODNS_HTTP_LISTEN listens on every address by default, for
//     the kubelet's probes and Prometheus.
//
// Each switch is logged by l with the client's address and user agent as "by".
func queryLogHandler(l *querylog.Log) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := QueryLogState{Mode: l.Mode(), Rate: l.Rate(), Dropped: l.Dropped()}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			writeJSON(w, http.StatusOK, st)
			return
		}
		if !fromLoopback(r) {
			http.Error(w, "the query log is switched from inside the pod only (a loopback address); this request came from "+r.RemoteAddr, http.StatusForbidden)
			return
		}
		text, err := requestedMode(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m, err := querylog.ParseMode(text)
		if err != nil {
			http.Error(w, fmt.Sprintf("mode %q: %v (allowed: %s)", text, err, querylog.Allowed), http.StatusBadRequest)
			return
		}
		by := r.Method + " " + QueryLogPath + " from " + r.RemoteAddr
		if ua := r.UserAgent(); ua != "" {
			by += " (" + ua + ")"
		}
		prev := l.Mode()
		l.SetMode(m, by)
		st.Mode, st.Previous = m, &prev
		writeJSON(w, http.StatusOK, st)
	}
}

// requestedMode reads the mode from ?mode= or the body (plain text or {"mode": ...}), exactly
// one of them.
func requestedMode(r *http.Request) (string, error) {
	params := r.URL.Query()["mode"]
	if len(params) > 1 {
		return "", fmt.Errorf("mode given %d times in the query (%q): give one", len(params), params)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxModeBody+1))
	if err != nil {
		return "", fmt.Errorf("reading the body: %v", err)
	}
	if len(b) > maxModeBody {
		return "", fmt.Errorf("body over %d bytes", maxModeBody)
	}
	body := strings.TrimSpace(string(b))
	if len(params) == 1 {
		if body != "" {
			return "", fmt.Errorf("mode given both in the query (?mode=%s) and in the body (%q): give one", params[0], body)
		}
		if params[0] != "" {
			return params[0], nil
		}
	}
	if strings.HasPrefix(body, "{") {
		var req struct {
			Mode string `json:"mode"`
		}
		if err := json.Unmarshal(b, &req); err != nil {
			return "", fmt.Errorf("body: %v", err)
		}
		body = req.Mode
	}
	if body == "" {
		return "", fmt.Errorf("no mode: give ?mode= or the mode as the body (allowed: %s)", querylog.Allowed)
	}
	return body, nil
}

// fromLoopback reports whether the request's peer is a loopback address.
func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
