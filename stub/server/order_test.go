package server

import (
	"net/netip"
	"testing"
)

// A reply that must wait behind an earlier one with the same client and ID is kept as a copy:
// the miss worker that built it reuses its buffer for its next miss at once (missWorker).
func TestReplyOrderCopiesAWaitingReply(t *testing.T) {
	var o replyOrder
	client := netip.MustParseAddrPort("127.0.0.1:5353")
	first := o.reserve(client, 7)
	second := o.reserve(client, 7)
	var sent []string
	send := func(b []byte) { sent = append(sent, string(b)) }

	buf := []byte("AAAA reply")
	o.complete(second, buf, send)
	if len(sent) != 0 {
		t.Fatalf("the second reply left before the first: %q", sent)
	}
	copy(buf, "next miss!") // the worker's next miss overwrites its buffer
	o.complete(first, []byte("A reply"), send)
	if want := []string{"A reply", "AAAA reply"}; len(sent) != 2 || sent[0] != want[0] || sent[1] != want[1] {
		t.Errorf("sent %q, want %q", sent, want)
	}
	if o.active.Load() != 0 {
		t.Errorf("%d queues still open after both replies left", o.active.Load())
	}
}
