package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/stub/upstream"
)

// exchanger is what the ready check needs of the forwarder.
type exchanger interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// readyCheck is PODNS_READY_CHECK_NAME: after the startup probe it asks the upstreams for the
// name, A and then (when A has no address) AAAA, until an answer carries an address; /readyz is
// 503 until then. It exists for restricted mode, where the stub's upstreams (PODNS_UPSTREAMS)
// and the pod's search list come from what the webhook was told, not from the kubelet: a wrong
// cluster DNS IP or cluster domain then holds the pod at start with one log line naming the
// setting, instead of failing each of the app's lookups later. It asks the forwarder directly,
// not the cache: a cached NXDOMAIN must not keep it failing, and its answers must not fill the
// app's cache.
type readyCheck struct {
	name      string        // absolute
	upstreams string        // for the log line: the addresses and where they came from
	fwd       exchanger     // the stub's forwarder
	timeout   time.Duration // one round's bound: the forwarder's MaxExchangeTime
	first     time.Duration // the pause after the first failed round (PODNS_UPSTREAM_PROBE_INTERVAL)
	max       time.Duration // the longest pause (PODNS_UPSTREAM_PROBE_MAX_INTERVAL)
	log       zerolog.Logger

	passed atomic.Bool
	why    atomic.Pointer[string] // the last round's failure, for /readyz
}

// Results of a failed round, the log line's "result" field. A new warning is logged only when
// the result changes, so a pod held at start logs one line, not one per round.
const (
	checkTimeout   = "timeout"    // no reply within PODNS_UPSTREAM_TIMEOUT from any upstream
	checkNoReply   = "no reply"   // connections refused, network unreachable
	checkNoAddress = "no address" // NOERROR without A or AAAA records (NODATA, a CNAME to nothing)
)

// readyCheckHints say which setting a result points at.
var readyCheckHints = map[string]string{
	"NXDOMAIN":     "the name does not exist there: is the cluster domain in PODNS_READY_CHECK_NAME (and the pod's search list) right, and are the upstreams the cluster DNS?",
	checkNoAddress: "the name exists there without an address: are the upstreams the cluster DNS?",
	"SERVFAIL":     "the upstreams failed to resolve it (or all refused it): are the upstreams the cluster DNS, and is it healthy?",
	checkTimeout:   "no reply from the upstreams: is PODNS_UPSTREAMS the cluster DNS Service IP, and does a NetworkPolicy allow port 53 to it?",
	checkNoReply:   "the upstreams refused the connection or are unreachable: is PODNS_UPSTREAMS the cluster DNS Service IP?",
}

// hintSource says where the upstreams and the check name come from when podns set them: the
// restricted modes set PODNS_UPSTREAMS and PODNS_READY_CHECK_NAME on the stub themselves, so the
// value to fix is in the webhook's or the component's settings, not in the pod.
const hintSource = " (with the podns webhook's restricted mode, both come from the webhook's PODNS_CLUSTER_DNS and PODNS_CLUSTER_DOMAIN; " +
	"with the podns-restricted component, from its clusterDNS and clusterDomain settings)"

func newReadyCheck(name string, ups []string, source string, fwd *upstream.Forwarder, first, max time.Duration, log zerolog.Logger) *readyCheck {
	c := &readyCheck{name: name, upstreams: strings.Join(ups, ",") + " (from " + source + ")", fwd: fwd,
		timeout: fwd.MaxExchangeTime(), first: first, max: max, log: log}
	why := "ready check: resolving " + name
	c.why.Store(&why)
	return c
}

// ready reports whether the check has passed, and the last failure when it has not.
func (c *readyCheck) ready() (bool, string) {
	if c.passed.Load() {
		return true, ""
	}
	return false, *c.why.Load()
}

// run repeats rounds until one passes or ctx ends, pausing first, then twice as long after each
// failed round, up to max: the backoff of the forwarder's probes of a down upstream.
func (c *readyCheck) run(ctx context.Context) {
	wait, last := c.first, ""
	for {
		result, err := c.round(ctx)
		if ctx.Err() != nil {
			return
		}
		if result == "" {
			c.passed.Store(true)
			c.log.Info().Str("ready_check_name", c.name).Str("upstreams", c.upstreams).Msg("ready check passed")
			return
		}
		why := fmt.Sprintf("ready check: %s through %s: %s", c.name, c.upstreams, result)
		c.why.Store(&why)
		if result != last {
			last = result
			ev := c.log.Warn()
			if err != nil {
				ev = ev.AnErr("error", err)
			}
			hint, ok := readyCheckHints[result]
			if !ok { // another RCODE: FORMERR, NOTAUTH, ...
				hint = "the upstreams answered with an error: are the upstreams the cluster DNS?"
			}
			hint += hintSource
			ev.Str("ready_check_name", c.name).Str("upstreams", c.upstreams).Str("result", result).Float64("retry_in", wait.Seconds()).
				Str("hint", hint).
				Msgf("ready check failed: PODNS_READY_CHECK_NAME=%s through upstreams %s: %s; /readyz stays 503 until it resolves to an address", c.name, c.upstreams, result)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, c.max)
	}
}

// round asks for the name's A records, then its AAAA records when the A answer has no address
// (an IPv6-only cluster). result is "" when an answer carries an address, else an RCODE name
// (NXDOMAIN, SERVFAIL: the forwarder's answer when every upstream passed the query over) or one
// of the check* results; err is the forwarder's error for timeout and no reply.
func (c *readyCheck) round(ctx context.Context) (result string, err error) {
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		q := new(dns.Msg)
		q.SetQuestion(c.name, qtype)
		qctx, cancel := context.WithTimeout(ctx, c.timeout)
		r, err := c.fwd.Exchange(qctx, q)
		cancel()
		switch {
		case err != nil && (upstream.IsTimeout(err) || errors.Is(err, context.DeadlineExceeded)):
			return checkTimeout, err
		case err != nil:
			return checkNoReply, err
		case r.Rcode != dns.RcodeSuccess:
			return dns.RcodeToString[r.Rcode], nil
		}
		for _, rr := range r.Answer {
			if rr.Header().Rrtype == qtype {
				return "", nil
			}
		}
	}
	return checkNoAddress, nil
}
