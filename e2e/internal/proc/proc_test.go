package proc

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseVmRSS(t *testing.T) {
	got, err := ParseVmRSS("Name:\tstub\nVmHWM:\t 9000 kB\nVmRSS:\t    6144 kB\nRssAnon:\t 1 kB\n")
	if err != nil || got != 6144*1024 {
		t.Fatalf("got %v, %v; want %v", got, err, 6144*1024)
	}
	if _, err := ParseVmRSS("Name:\tkthreadd\n"); err == nil {
		t.Error("no VmRSS line: want an error")
	}
	if _, err := ParseVmRSS("VmRSS:\t 12 MB\n"); err == nil {
		t.Error("unknown unit: want an error")
	}
}

func TestFreePortIsFreeForBoth(t *testing.T) {
	ap, err := FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("TCP on %s: %v", ap, err)
	}
	defer l.Close()
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatalf("UDP on %s: %v", ap, err)
	}
	u.Close()
}

// A started process is tracked until reaped: Stop ends a process that ignores nothing, Kill one
// that ignores SIGTERM, and AssertNoneRunning names what is left.
func TestStartStopKill(t *testing.T) {
	dir := t.TempDir()
	var s Set
	defer s.StopAll()
	sleeper, err := s.Start("sleeper", filepath.Join(dir, "a.log"), "/bin/sh", []string{"-c", "echo started; exec sleep 60"}, nil, Options{CPU: 0})
	if err != nil {
		t.Fatal(err)
	}
	stubborn, err := s.Start("stubborn", filepath.Join(dir, "b.log"), "/bin/sh", []string{"-c", "trap '' TERM; echo ready; while :; do sleep 1; done"}, nil, Options{CPU: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Signal only once each shell has run its first line (and, for stubborn, set its trap).
	waitLog(t, sleeper, "started")
	waitLog(t, stubborn, "ready")
	if err := s.AssertNoneRunning(); err == nil || !strings.Contains(err.Error(), "sleeper") || !strings.Contains(err.Error(), "stubborn") {
		t.Errorf("AssertNoneRunning with two running: %v", err)
	}
	sleeper.Stop()
	if !sleeper.Exited() || sleeper.Err() == nil {
		t.Errorf("after Stop: exited %v, err %v (want killed by SIGTERM)", sleeper.Exited(), sleeper.Err())
	}
	stubborn.Kill()
	<-stubborn.Done()
	if err := s.AssertNoneRunning(); err != nil {
		t.Error(err)
	}
	if s.Len() != 2 {
		t.Errorf("Len %d, want 2", s.Len())
	}
}

// waitLog waits (at most 5 s, polling the log file: a child's write has no other signal) until
// p's log holds want.
func waitLog(t *testing.T, p *Proc, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Tail(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q not in its log %q", p.Name, want, p.Tail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAppendLogKeepsEarlierOutput(t *testing.T) {
	log := filepath.Join(t.TempDir(), "x.log")
	var s Set
	for _, word := range []string{"first", "second"} {
		p, err := s.Start(word, log, "/bin/echo", []string{word}, nil, Options{CPU: -1, AppendLog: true})
		if err != nil {
			t.Fatal(err)
		}
		<-p.Done()
	}
	b, err := os.ReadFile(log)
	if err != nil || string(b) != "first\nsecond\n" {
		t.Errorf("log %q, %v; want both runs", b, err)
	}
}
