package dnstest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// MsgOption sets one field of a query Msg builds.
type MsgOption func(*dns.Msg)

// ID sets the query's message ID (RFC 1035 section 4.1.1); without it the ID is random.
func ID(id uint16) MsgOption { return func(m *dns.Msg) { m.Id = id } }

// EDNS adds an OPT record (RFC 6891 section 6.1.2) advertising a UDP payload size of size
// bytes, with the DO bit (RFC 3225) set when do is true; without it the query has no OPT.
func EDNS(size uint16, do bool) MsgOption { return func(m *dns.Msg) { m.SetEdns0(size, do) } }

// CD sets the Checking Disabled bit (RFC 4035 section 3.2.2) to cd.
func CD(cd bool) MsgOption { return func(m *dns.Msg) { m.CheckingDisabled = cd } }

// Msg builds a recursive (RD=1) query for name, as written (no case change, no trailing dot
// added), of type qtype in class IN, then applies opts in order.
func Msg(name string, qtype uint16, opts ...MsgOption) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	for _, o := range opts {
		o(m)
	}
	return m
}

// Query is Msg packed to wire form. It panics when the message does not pack (a name that is
// not a domain name): a bug in the test, like a bad pattern for regexp.MustCompile. It does
// not take a testing.TB so that goroutines may call it.
func Query(name string, qtype uint16, opts ...MsgOption) []byte {
	b, err := Msg(name, qtype, opts...).Pack()
	if err != nil {
		panic("dnstest: packing a query for " + name + ": " + err.Error())
	}
	return b
}

// Exchange sends m to addr over proto ("udp" or "tcp"), waiting up to 3 s, with a 65535-byte
// UDP read buffer so that the reply's size is the server's choice, and returns the reply. It
// fails the test when nothing comes back or the reply's ID is not the query's.
func Exchange(tb testing.TB, proto, addr string, m *dns.Msg) *dns.Msg {
	tb.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second, UDPSize: dns.MaxMsgSize}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		tb.Fatalf("%s query %s: %v", proto, m.Question[0].Name, err)
	}
	if r.Id != m.Id {
		tb.Fatalf("reply ID %d, query ID %d", r.Id, m.Id)
	}
	return r
}
