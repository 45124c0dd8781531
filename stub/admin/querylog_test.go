package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/querylog"
)

type syncBuf struct{ dnstest.LogBuffer }

func (s *syncBuf) changes(t *testing.T) []map[string]any {
	t.Helper()
	return s.Records(t, dnstest.Message("query log mode changed"))
}

func newQueryLog(t *testing.T) (*querylog.Log, *syncBuf, http.Handler) {
	t.Helper()
	out := &syncBuf{}
	l := querylog.New(querylog.Config{Rate: 7, Logger: zerolog.New(out)})
	t.Cleanup(l.Close)
	return l, out, Handler(prometheus.NewRegistry(), func() (bool, string) { return true, "ok" }, &Debug{QueryLog: l})
}

// do serves one request from remote (ip:port) and returns the status and body.
func do(h http.Handler, method, target, body, remote string) (int, string) {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = remote
	// Connections to a loopback address, as /debug/ requires (debug.go); the switch also
	// checks the client's address.
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, tcpAddr("127.0.0.1:9253")))
	r.Header.Set("User-Agent", "podns-test")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestQueryLogSwitch(t *testing.T) {
	l, out, h := newQueryLog(t)
	const local = "127.0.0.1:40000"
	steps := []struct {
		method, target, body string
		want                 querylog.Mode
		prev                 string
	}{
		{"PUT", "/debug/querylog?mode=all", "", querylog.All, "off"},
		{"POST", "/debug/querylog", "errors\n", querylog.Errors, "all"},
		{"PUT", "/debug/querylog", `{"mode":"slow:250ms"}`, querylog.Slow(250e6), "errors"},
		{"PUT", "/debug/querylog?mode=off", "", querylog.Off, "slow:250ms"},
	}
	for i, st := range steps {
		code, body := do(h, st.method, st.target, st.body, local)
		if code != http.StatusOK {
			t.Fatalf("%s %s %q: %d %s", st.method, st.target, st.body, code, body)
		}
		var got struct{ Mode, Previous string }
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("reply %q: %v", body, err)
		}
		if l.Mode() != st.want || got.Mode != st.want.String() || got.Previous != st.prev {
			t.Errorf("step %d: mode %v, reply %+v; want %v after %s", i, l.Mode(), got, st.want, st.prev)
		}
		changes := out.changes(t)
		if len(changes) != i+1 {
			t.Fatalf("step %d: %d change lines, want %d", i, len(changes), i+1)
		}
		c := changes[i]
		if c["old"] != st.prev || c["new"] != st.want.String() || c["by"] != st.method+" /debug/querylog from "+local+" (podns-test)" {
			t.Errorf("step %d: change line %v", i, c)
		}
	}
	code, body := do(h, "GET", "/debug/querylog", "", "10.1.2.3:5000")
	if code != http.StatusOK || strings.TrimSpace(body) != `{"mode":"off","rate":7,"dropped":0}` {
		t.Errorf("GET: %d %s", code, body)
	}
}

func TestQueryLogSwitchRefusals(t *testing.T) {
	l, out, h := newQueryLog(t)
	for _, tt := range []struct {
		name, method, target, body, remote string
		code                               int
		says                               string
	}{
		{"from the pod IP", "PUT", "/debug/querylog?mode=all", "", "10.1.2.3:5000", http.StatusForbidden, "inside the pod"},
		{"unknown mode", "PUT", "/debug/querylog?mode=verbose", "", "127.0.0.1:1", http.StatusBadRequest, "allowed: off, errors, slow:<duration>"},
		{"slow without a duration", "PUT", "/debug/querylog", "slow:", "[::1]:1", http.StatusBadRequest, "slow needs a duration"},
		{"no mode", "POST", "/debug/querylog", "", "127.0.0.1:1", http.StatusBadRequest, "no mode"},
		{"bad JSON", "PUT", "/debug/querylog", `{"mode":`, "127.0.0.1:1", http.StatusBadRequest, "body"},
		{"huge body", "PUT", "/debug/querylog", strings.Repeat("a", 5000), "127.0.0.1:1", http.StatusBadRequest, "body over"},
		// A mode given twice is a guess at which was meant (a new-user trial: the parameter won silently).
		{"mode repeated", "PUT", "/debug/querylog?mode=all&mode=errors", "", "127.0.0.1:1", http.StatusBadRequest, `mode given 2 times in the query (["all" "errors"]): give one`},
		{"query and body", "PUT", "/debug/querylog?mode=off", "all", "127.0.0.1:1", http.StatusBadRequest, `mode given both in the query (?mode=off) and in the body ("all"): give one`},
		{"slow out of range", "PUT", "/debug/querylog?mode=slow:1000000h", "", "127.0.0.1:1", http.StatusBadRequest, "out of range: 1ms to 1m"},
		{"DELETE", "DELETE", "/debug/querylog", "", "127.0.0.1:1", http.StatusMethodNotAllowed, ""},
	} {
		code, body := do(h, tt.method, tt.target, tt.body, tt.remote)
		if code != tt.code || !strings.Contains(body, tt.says) {
			t.Errorf("%s: %d %q, want %d saying %q", tt.name, code, body, tt.code, tt.says)
		}
	}
	if l.Mode() != querylog.Off || len(out.changes(t)) != 0 {
		t.Errorf("refused requests changed the mode to %v / logged %v", l.Mode(), out.changes(t))
	}
}

func TestNoQueryLogNoEndpoint(t *testing.T) {
	h := Handler(prometheus.NewRegistry(), func() (bool, string) { return true, "ok" }, nil)
	if code, _ := do(h, "PUT", "/debug/querylog?mode=all", "", "127.0.0.1:1"); code != http.StatusNotFound {
		t.Errorf("without a query log: %d, want 404", code)
	}
}
