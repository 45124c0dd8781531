package upstream

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// rttSamples is how many recent round trips per server Status takes its median from: enough for
// a stable median, few enough that it describes the last moments, not the process's life (the
// podns_upstream_duration_seconds histogram has that).
const rttSamples = 64

// recent is what Status reports of a server beyond its health: the round trips of its last
// successful attempts and its last error.
type recent struct {
	n    atomic.Uint64            // samples recorded so far; the next goes to rtts[n%rttSamples]
	rtts [rttSamples]atomic.Int64 // nanoseconds
	mu   sync.Mutex               // guards the last error
	err  string                   // the last failure, "" when none yet
	why  string                   // its reason (the label values of podns_upstream_errors_total, or "probe")
	at   time.Time                // when (Forwarder.now)
}

// observe records the round trip of a successful attempt: two atomic operations, no lock, as it
// runs on every miss.
func (r *recent) observe(d time.Duration) {
	i := r.n.Add(1) - 1
	r.rtts[i%rttSamples].Store(int64(d))
}

// noteError records a failure of the server, for Status.
func (p *peer) noteError(reason string, err error) {
	if err == nil {
		return
	}
	now := p.f.now()
	p.st.mu.Lock()
	p.st.err, p.st.why, p.st.at = err.Error(), reason, now
	p.st.mu.Unlock()
}

// probeReason is the reason Status gives for a failed probe.
const probeReason = "probe"

// ServerStatus is one upstream server as Status sees it: for `stub status` and /debug/status.
type ServerStatus struct {
	// Server is the normalised address, as in Servers and the metrics' upstream label.
	Server string
	// Up is false while the server is marked down (skipped while another is up, probed).
	Up bool
	// DownSince is when it was marked down; zero while up.
	DownSince time.Time
	// Fails is the count of consecutive failed attempts (MaxFails of them mark it down).
	Fails int
	// Protocol is what its queries go over now: "tcp" or "udp".
	Protocol string
	// Fallback is set while Protocol is udp although Config.Protocol is tcp: its TCP failed
	// while UDP answered (fallback.go).
	Fallback bool
	// NoEDNS is set while its queries go without an OPT record (it rejected one, ednsMemory).
	NoEDNS bool
	// RTTMedian is the median round trip of its last successful attempts (up to 64, Samples of
	// them); 0 when there was none.
	RTTMedian time.Duration
	// RTTP99 is the 99th percentile (nearest rank) of the same round trips: with 100 samples
	// or fewer (there are at most 64), the slowest of them. The median alone hides the slow
	// lookups a user complains about.
	RTTP99  time.Duration
	Samples int
	// LastReply is when it last gave a valid reply; zero when never.
	LastReply time.Time
	// LastError, LastErrorReason and LastErrorAt describe its last failure: an attempt that
	// timed out or failed (reason timeout, network), a reply passed over (servfail, notimp,
	// refused) or a failed probe (probe). Empty when it never failed.
	LastError, LastErrorReason string
	LastErrorAt                time.Time
}

// Status returns every server's state, in the order of Servers. It takes each server's locks
// briefly and allocates; it is for people asking, not for the query path.
func (f *Forwarder) Status() []ServerStatus {
	out := make([]ServerStatus, len(f.peers))
	for i, p := range f.peers {
		s := ServerStatus{Server: p.addr, Up: !p.h.down.Load(), Protocol: p.protocol(),
			Fallback: !f.udp && p.fb.on.Load(), NoEDNS: p.ednsIntolerant()}
		p.h.mu.Lock()
		s.Fails = p.h.fails
		if !s.Up {
			s.DownSince = p.h.downSince
		}
		p.h.mu.Unlock()
		if at := p.h.lastReply.Load(); at != 0 {
			s.LastReply = f.epoch.Add(time.Duration(at))
		}
		s.RTTMedian, s.RTTP99, s.Samples = p.st.quantiles()
		p.st.mu.Lock()
		s.LastError, s.LastErrorReason, s.LastErrorAt = p.st.err, p.st.why, p.st.at
		p.st.mu.Unlock()
		out[i] = s
	}
	return out
}

// quantiles returns the median of the recorded round trips (the lower middle of an even count),
// their 99th percentile by nearest rank (the ceil(0.99 n)-th smallest), and how many there are.
func (r *recent) quantiles() (median, p99 time.Duration, n int) {
	n = int(min(r.n.Load(), rttSamples))
	if n == 0 {
		return 0, 0, 0
	}
	s := make([]int64, n)
	for i := range s {
		s[i] = r.rtts[i].Load()
	}
	slices.Sort(s)
	return time.Duration(s[(n-1)/2]), time.Duration(s[(99*n+99)/100-1]), n
}
