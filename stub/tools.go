package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/querylog"
)

// The stub image has no shell, so the binary carries the tools someone debugging the pod needs
// (kubectl exec POD -c podns-stub -- /stub status). Each subcommand reads the same PODNS_*
// variables as the running stub (it runs in the same container) to find its admin endpoint
// (PODNS_HTTP_LISTEN) and DNS listener (PODNS_LISTEN), and talks to them over loopback.

// subcommand runs one tool; args follow its name.
type subcommand func(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int

var subcommands map[string]subcommand

func init() { // a map literal would refer to the functions that refer to it: an initialization cycle
	subcommands = map[string]subcommand{"status": statusCmd, "dig": digCmd, "cache": cacheCmd, "querylog": queryLogCmd}
}

// toolTimeout bounds every request a subcommand makes: the stub answers /debug/ at once.
const toolTimeout = 5 * time.Second

// errUsage marks a bad command line (exit 2, as a bad variable).
var errUsage = errors.New("usage")

// client talks to the running stub.
type client struct {
	cfg   *config.Config
	admin string // host:port of the admin endpoint, over loopback
}

// newClient reads the configuration the running stub has and finds its admin endpoint on
// loopback.
func newClient(environ map[string]string) (*client, error) {
	cfg, err := config.Load(environ)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration (the running stub would have refused it too):\n%v", err)
	}
	addr, err := adminAddr(cfg.HTTPListen)
	if err != nil {
		return nil, err
	}
	return &client{cfg: cfg, admin: addr}, nil
}

// adminAddr is where to reach PODNS_HTTP_LISTEN over loopback: the wildcard (":9253",
// "0.0.0.0:9253", "[::]:9253") on 127.0.0.1 or ::1, a loopback address as it is. /debug/ is
// served on loopback only, so a specific other address is an error.
func adminAddr(l config.HTTPAddr) (string, error) {
	if l.Off() {
		return "", errors.New("the admin endpoint is off (PODNS_HTTP_LISTEN=off): nothing to ask; set PODNS_HTTP_LISTEN (default :9253) and restart the stub")
	}
	host, port, err := net.SplitHostPort(string(l))
	if err != nil {
		return "", fmt.Errorf("PODNS_HTTP_LISTEN=%q: %v", l, err)
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("PODNS_HTTP_LISTEN=%q: %v", l, err)
	}
	switch {
	case a.Is4() && a.IsUnspecified():
		return net.JoinHostPort("127.0.0.1", port), nil
	case a.IsUnspecified():
		return net.JoinHostPort("::1", port), nil
	case a.Unmap().IsLoopback():
		return string(l), nil
	}
	return "", fmt.Errorf("PODNS_HTTP_LISTEN=%s listens on no loopback address, and /debug/ is served on loopback only: listen on :%s (every address) or 127.0.0.1:%s", l, port, port)
}

// get fetches path from the admin endpoint and decodes its JSON into v.
func (c *client) get(ctx context.Context, path string, v any) error {
	return c.do(ctx, http.MethodGet, path, v)
}

func (c *client) do(ctx context.Context, method, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	status, code, body, err := loopbackRequest(ctx, method, c.admin, path, "stub "+strings.SplitN(path[len("/debug/"):], "?", 2)[0], 16<<20)
	if err != nil {
		return fmt.Errorf("cannot reach the stub's admin endpoint at %s (PODNS_HTTP_LISTEN=%s): is the stub running in this container? %v", c.admin, c.cfg.HTTPListen, err)
	}
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%s %s: 404: the running stub does not serve it (an older version?)", method, path)
	case code != http.StatusOK:
		return fmt.Errorf("%s %s: %s: %s", method, path, status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s %s: %v", method, path, err)
	}
	return nil
}

// fail prints err as the subcommand's one-line error and returns its exit code.
func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "stub %s: %v\n", name, err)
	if errors.Is(err, errUsage) {
		return exitConfig
	}
	return exitFail
}

// statusCmd is `stub status`.
func statusCmd(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return fail(stderr, "status", fmt.Errorf("%w: stub status (no arguments; got %q)", errUsage, args))
	}
	c, err := newClient(environ)
	if err != nil {
		return fail(stderr, "status", err)
	}
	var st admin.Status
	if err := c.get(ctx, admin.StatusPath, &st); err != nil {
		return fail(stderr, "status", err)
	}
	printStatus(stdout, &st, time.Now())
	return exitOK
}

// printStatus writes st for a person: the summary, the upstreams, the cache, then the
// configuration with the source of every value.
func printStatus(w io.Writer, st *admin.Status, now time.Time) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT ready"
	}
	fmt.Fprintf(w, "podns stub %s (%s), up %s since %s, %s (%s)\n", st.Version, st.GoVersion,
		roundDur(time.Duration(st.UptimeSeconds*float64(time.Second))), st.Started.Format(time.RFC3339), ready, st.ReadyReason)
	if st.QueryLog != "" {
		fmt.Fprintf(w, "query log: %s\n", st.QueryLog)
	}

	fmt.Fprintf(w, "\nupstreams:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVER\tSTATE\tPROTOCOL\tP50 / P99 (SAMPLES)\tLAST REPLY\tLAST ERROR")
	for _, u := range st.Upstreams {
		state := "up"
		if !u.Up {
			state = "DOWN " + ago(*u.DownSince, now)
		}
		if u.ConsecutiveFails > 0 {
			state += fmt.Sprintf(" (%d failed)", u.ConsecutiveFails)
		}
		proto := u.Protocol
		if u.UDPFallback {
			proto += " (UDP fallback: TCP fails)"
		}
		if u.NoEDNS {
			proto += " no EDNS"
		}
		p50 := "-"
		if u.LatencySamples > 0 {
			p50 = fmt.Sprintf("%s / %s (%d)", ms(u.LatencyP50Seconds), ms(u.LatencyP99Seconds), u.LatencySamples)
		}
		last := "never"
		if u.LastReply != nil {
			last = ago(*u.LastReply, now)
		}
		lastErr := "-"
		if u.LastError != "" {
			lastErr = fmt.Sprintf("%s %s: %s", u.LastErrorReason, ago(*u.LastErrorAt, now), u.LastError)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", u.Server, state, proto, p50, last, lastErr)
	}
	tw.Flush()

	cs := st.Cache
	if cs.Enabled {
		budget := ""
		if cs.MaxBytes > 0 {
			budget = " of " + mib(cs.MaxBytes)
		}
		fmt.Fprintf(w, "\ncache: %d of %d entries, %s%s; hit ratio %.1f%% (%d hits, %d misses); %d stale answers served\n",
			cs.Entries, cs.Capacity, mib(cs.Bytes), budget, 100*cs.HitRatio, cs.Hits, cs.Misses, cs.StaleServed)
	} else {
		fmt.Fprintf(w, "\ncache: off\n")
	}

	fmt.Fprintf(w, "\nconfiguration:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SETTING\tVALUE\tFROM")
	for _, s := range st.Config {
		v := s.Value
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, v, s.From)
	}
	tw.Flush()
}

// ago says how long before now t was, to the second (a millisecond below one).
func ago(t, now time.Time) string {
	return roundDur(now.Sub(t)) + " ago"
}

func roundDur(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func ms(seconds float64) string { return strconv.FormatFloat(seconds*1000, 'f', 2, 64) + "ms" }

// cacheCmd is `stub cache [-n N] [NAME]`.
func cacheCmd(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("stub cache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	n := fs.Int("n", admin.DefaultTop, "how many of the entries with the most hits")
	// The flag may follow the name too: parse what is left after it again.
	var name string
	if err := fs.Parse(args); err == nil && fs.NArg() > 0 {
		name = fs.Arg(0)
		err = fs.Parse(fs.Args()[1:])
		if err == nil && fs.NArg() > 0 {
			err = fmt.Errorf("one name at most, got %q", fs.Args())
		}
		if err != nil {
			return fail(stderr, "cache", fmt.Errorf("%w: stub cache [-n N] [NAME]: %v", errUsage, err))
		}
	} else if err != nil {
		return fail(stderr, "cache", fmt.Errorf("%w: stub cache [-n N] [NAME]: %v", errUsage, err))
	}
	if *n < 1 || *n > admin.MaxTop {
		return fail(stderr, "cache", fmt.Errorf("%w: -n %d: allowed 1 to %d", errUsage, *n, admin.MaxTop))
	}
	// A name the stub would refuse (400) is a bad command line, exit 2 as for `stub dig`;
	// surrounding white space is ignored, as in every PODNS_* value.
	name = strings.TrimSpace(name)
	if _, ok := dns.IsDomainName(name); name != "" && !ok {
		return fail(stderr, "cache", fmt.Errorf("%w: %q is not a domain name", errUsage, name))
	}
	c, err := newClient(environ)
	if err != nil {
		return fail(stderr, "cache", err)
	}
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	} else {
		q.Set("n", strconv.Itoa(*n))
	}
	var rep admin.CacheReport
	if err := c.get(ctx, admin.CachePath+"?"+q.Encode(), &rep); err != nil {
		return fail(stderr, "cache", err)
	}
	printCache(stdout, &rep)
	return exitOK
}

// printCache writes one line per entry; for a name, its records below it.
func printCache(w io.Writer, rep *admin.CacheReport) {
	switch {
	case !rep.Enabled:
		fmt.Fprintln(w, "the cache is off (PODNS_CACHE_SIZE=0)")
		return
	case rep.Name != "" && len(rep.Entries) == 0:
		fmt.Fprintf(w, "no cache entry for %s\n", rep.Name)
		return
	case rep.Name == "":
		fmt.Fprintf(w, "the %d %s with the most hits (of at most %d asked):\n", len(rep.Entries), plural(len(rep.Entries), "entry", "entries"), rep.Top)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tCLASS\tFLAGS\tSTATE\tKIND\tTTL LEFT\tHITS")
	for _, e := range rep.Entries {
		flags := []string{}
		if e.DO {
			flags = append(flags, "do")
		}
		if e.CD {
			flags = append(flags, "cd")
		}
		fl := strings.Join(flags, ",")
		if fl == "" {
			fl = "-"
		}
		ttl := strconv.FormatInt(e.TTLLeftSeconds, 10) + "s"
		if e.State == "stale" {
			ttl += fmt.Sprintf(" (stale for %ds more)", e.StaleLeftSeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Name, e.Type, e.Class, fl, e.State, e.Kind, ttl, e.Hits)
	}
	tw.Flush()
	if rep.Name == "" {
		return
	}
	// The records after the table: they would widen its first column.
	for _, e := range rep.Entries {
		fl := ""
		if e.DO {
			fl += " do"
		}
		if e.CD {
			fl += " cd"
		}
		// The rcode first: a SERVFAIL entry has no records, and its heading alone read as an
		// empty answer (a new-user trial).
		fmt.Fprintf(w, "\n%s %s%s, %s (TTLs as stored):\n", e.Type, e.Class, fl, kindRcode(e.Kind))
		if len(e.Records) == 0 {
			fmt.Fprintln(w, "    (no records)")
		}
		for _, r := range e.Records {
			fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(r, "\t", " "))
		}
	}
}

// kindRcode is the rcode of an entry of kind k (admin.Entry's Kind), as a client gets it.
func kindRcode(k string) string {
	switch k {
	case "servfail":
		return "rcode SERVFAIL (the upstream's, kept PODNS_CACHE_SERVFAIL_TTL)"
	case "nxdomain":
		return "rcode NXDOMAIN"
	case "nodata":
		return "rcode NOERROR, no data"
	case "answer":
		return "rcode NOERROR"
	}
	return k
}

// queryLogCmd is `stub querylog [MODE]`: GET or PUT the query log's endpoint (stub/admin,
// /debug/querylog).
func queryLogCmd(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		return fail(stderr, "querylog", fmt.Errorf("%w: stub querylog [off|errors|slow:<duration>|all]", errUsage))
	}
	c, err := newClient(environ)
	if err != nil {
		return fail(stderr, "querylog", err)
	}
	var st struct {
		Mode     string  `json:"mode"`
		Previous *string `json:"previous"`
		Rate     int     `json:"rate"`
		Dropped  int64   `json:"dropped"`
	}
	if len(args) == 0 {
		if err := c.get(ctx, admin.QueryLogPath, &st); err != nil {
			return fail(stderr, "querylog", err)
		}
		fmt.Fprintf(stdout, "query log: %s (at most %d lines/s; %d dropped)\n", st.Mode, st.Rate, st.Dropped)
		return exitOK
	}
	// A mode the stub would refuse is a bad command line (exit 2), not a stub out of reach.
	if _, err := querylog.ParseMode(args[0]); err != nil {
		return fail(stderr, "querylog", fmt.Errorf("%w: %q: %v (allowed: %s)", errUsage, args[0], err, querylog.Allowed))
	}
	if err := c.do(ctx, http.MethodPut, admin.QueryLogPath+"?mode="+url.QueryEscape(args[0]), &st); err != nil {
		return fail(stderr, "querylog", err)
	}
	prev := "?"
	if st.Previous != nil {
		prev = *st.Previous
	}
	fmt.Fprintf(stdout, "query log: %s → %s\n", prev, st.Mode)
	return exitOK
}

// plural picks the word for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
