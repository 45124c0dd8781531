package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// The query log, switched on and off through the admin endpoint of a running stub: the switch's
// line, the query lines (written at PODNS_LOG_LEVEL=warn too), and the request-duration histogram.
func TestQueryLogSwitchedWhileRunning(t *testing.T) {
	up := upstreamServer(t)
	st := startStub(t, map[string]string{"PODNS_UPSTREAMS": up, "PODNS_LOG_LEVEL": "warn", "PODNS_QUERY_LOG_RATE": "1000"})
	dnsAddr, httpAddr := st.dns, st.http
	lines := func(msg string) []map[string]any { return st.logs.Records(t, dnstest.Message(msg)) }
	ask := func(name string) {
		t.Helper()
		c := &dns.Client{Timeout: 2 * time.Second}
		if r, _, err := c.Exchange(dnstest.Msg(name, dns.TypeA), dnsAddr); err != nil || len(r.Answer) != 1 {
			t.Fatalf("%s: %v %v", name, r, err)
		}
	}
	put := func(mode string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "http://"+httpAddr+"/debug/querylog?mode="+mode, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT mode=%s: %d %s", mode, resp.StatusCode, b)
		}
	}
	hits := `podns_request_duration_seconds_count{cache="hit"}`
	before := scrape(t, httpAddr, []string{hits})[0]

	// A line is written just after its answer is sent: wait for it before the next switch.
	waitLines := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(lines("query")) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d query lines after 5s, want %d", len(lines("query")), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	misses := `podns_request_duration_seconds_count{cache="miss"}`
	missesBefore := scrape(t, httpAddr, []string{misses})[0]
	ask("quiet.example.") // mode off: no line
	for deadline := time.Now().Add(5 * time.Second); scrape(t, httpAddr, []string{misses})[0] == missesBefore; {
		if time.Now().After(deadline) {
			t.Fatal("the miss was not timed within 5s")
		}
		time.Sleep(time.Millisecond) // timed, and offered to the log, just after its answer left
	}
	put("all")
	ask("loud.example.")
	waitLines(1)
	ask("loud.example.") // a hit
	waitLines(2)
	put("off")
	ask("loud.example.")

	changes := lines("query log mode changed")
	if len(changes) != 2 || changes[0]["old"] != "off" || changes[0]["new"] != "all" || changes[1]["new"] != "off" ||
		!strings.HasPrefix(changes[0]["by"].(string), "PUT /debug/querylog from 127.0.0.1:") {
		t.Errorf("change lines %v", changes)
	}
	var got []string
	for _, q := range lines("query") {
		if q["part"] != "querylog" || q["component"] != "stub" {
			t.Errorf("query line %v", q)
		}
		got = append(got, q["name"].(string)+" "+q["cache"].(string))
	}
	if strings.Join(got, ", ") != "loud.example. miss, loud.example. hit" {
		t.Errorf("query lines for %v, want the two asked while the mode was all", got)
	}
	// A hit is timed once its batch has been sent, after the client has its answer: wait for
	// the count to reach 2, then check it did not pass it.
	after := scrape(t, httpAddr, []string{hits})[0]
	for deadline := time.Now().Add(5 * time.Second); after-before < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		after = scrape(t, httpAddr, []string{hits})[0]
	}
	if after-before != 2 {
		t.Errorf("%s rose by %v, want 2", hits, after-before)
	}
	// startStub's cleanup stops the stub and checks that it exits 0.
}
