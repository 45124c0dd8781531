package querylog

import "context"

// Upstream is what the forwarder reports about one upstream query, for the line's upstream and
// attempts fields. The server puts one in the context of Forwarder.Exchange (WithUpstream);
// upstream.Forwarder fills it in when it finds one there (UpstreamFrom), and other forwarders may
// ignore it.
type Upstream struct {
	// Server is the ip:port of the upstream whose reply Exchange returned: the one that answered,
	// or, when every upstream tried replied SERVFAIL, REFUSED or NOTIMP, the last of them. ""
	// when none replied.
	Server string
	// Attempts is how many upstream servers Exchange tried, the one that answered included.
	Attempts int
}

type upstreamKey struct{}

// WithUpstream returns ctx carrying u, for the forwarder to fill in.
func WithUpstream(ctx context.Context, u *Upstream) context.Context {
	return context.WithValue(ctx, upstreamKey{}, u)
}

// UpstreamFrom returns the Upstream ctx carries, or nil.
func UpstreamFrom(ctx context.Context) *Upstream {
	u, _ := ctx.Value(upstreamKey{}).(*Upstream)
	return u
}
