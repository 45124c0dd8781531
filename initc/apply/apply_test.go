package apply

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podns/podns/internal/resolvconf"
	"github.com/podns/podns/internal/statedir"
)

const (
	clusterFirst = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	rewritten    = "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n"
)

var podnsOpts = []resolvconf.Option{{Name: "timeout", Value: "1"}, {Name: "attempts", Value: "3"}}

// podFiles is the state of a pod's files before and after a run; "" for a file that does not
// exist (absent), as the case tables read.
type podFiles struct {
	resolv, saved, marker string
}

const absent = "\x00absent"

func setup(t *testing.T, f podFiles) Params {
	t.Helper()
	dir := t.TempDir()
	p := Params{
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		StateDir:   filepath.Join(dir, "state"),
		Nameserver: netip.MustParseAddr("127.0.0.1"),
		Options:    podnsOpts,
	}
	if err := os.Mkdir(p.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if f.resolv == "REWRITTEN" { // podns's own rewrite, which names the state dir
		f.resolv = withHeader(p.StateDir, rewritten)
	}
	for path, content := range map[string]string{
		p.ResolvConf:                            f.resolv,
		statedir.UpstreamConfPath(p.StateDir):   f.saved,
		statedir.DisabledMarkerPath(p.StateDir): f.marker,
	} {
		if content == absent {
			continue
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return absent
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withHeader is what Render writes for a pod whose state dir is stateDir.
func withHeader(stateDir, body string) string {
	return "# podns: nameserver is the pod-local DNS cache; the kubelet's original is " +
		statedir.UpstreamConfPath(stateDir) + "\n" + body
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name        string
		before      podFiles
		hostNetwork bool
		action      Action
		saved       Saved
		after       podFiles // resolv "" means the rewrite of clusterFirst
		staleMarker bool
		wantErr     string // also: after == before, byte for byte
	}{
		{
			name:   "first run saves the original and rewrites",
			before: podFiles{resolv: clusterFirst, saved: absent, marker: absent},
			action: Rewritten, saved: SavedNew,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:   "rerun after a sandbox restart: saved copy kept, nothing written",
			before: podFiles{resolv: "REWRITTEN", saved: clusterFirst, marker: absent},
			action: Unchanged, saved: SavedKept,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:   "a rewrite someone edited is redone from the saved original",
			before: podFiles{resolv: "nameserver 127.0.0.1\noptions ndots:1\n", saved: clusterFirst, marker: absent},
			action: Rewritten, saved: SavedKept,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:   "a write cut short (empty file) is redone from the saved original",
			before: podFiles{resolv: "", saved: clusterFirst, marker: absent},
			action: Rewritten, saved: SavedKept,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:   "a new original from the kubelet replaces the saved copy",
			before: podFiles{resolv: clusterFirst, saved: "nameserver 10.96.0.99\n", marker: absent},
			action: Rewritten, saved: SavedReplaced,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:   "a stale disabled marker is removed: the stub must serve",
			before: podFiles{resolv: clusterFirst, saved: absent, marker: "hostNetwork pod\n"},
			action: Rewritten, saved: SavedNew, staleMarker: true,
			after: podFiles{saved: clusterFirst, marker: absent},
		},
		{
			name:        "hostNetwork: marker written, resolv.conf untouched, nothing saved",
			before:      podFiles{resolv: clusterFirst, saved: absent, marker: absent},
			hostNetwork: true,
			action:      Disabled, saved: SavedNone,
			after: podFiles{resolv: clusterFirst, saved: absent, marker: "hostNetwork pod: test\n"},
		},
		{
			name:    "no nameserver: refused",
			before:  podFiles{resolv: "search default.svc.cluster.local\noptions ndots:5\n", saved: absent, marker: absent},
			wantErr: "resolv.conf: has no nameserver line: nothing to forward to",
		},
		{
			name:    "empty file and nothing saved: refused",
			before:  podFiles{resolv: "", saved: absent, marker: absent},
			wantErr: "resolv.conf: has no nameserver line",
		},
		{
			name:    "already podns's nameserver but nothing saved: refused",
			before:  podFiles{resolv: "nameserver 127.0.0.1\nsearch default.svc.cluster.local\n", saved: absent, marker: absent},
			wantErr: "resolv.conf: nameserver is already 127.0.0.1 (PODNS_NAMESERVER) but no saved original exists",
		},
		{
			name:    "podns's nameserver among others, nothing saved: refused (it would forward to itself)",
			before:  podFiles{resolv: "nameserver 10.96.0.10\nnameserver 127.0.0.1\n", saved: absent, marker: absent},
			wantErr: "nameserver is already 127.0.0.1",
		},
		{
			name:    "binary garbage: refused",
			before:  podFiles{resolv: "\x7fELF\x02\x01\x01\x00\x00\x00", saved: absent, marker: absent},
			wantErr: "resolv.conf: refusing to rewrite: not a resolv.conf: NUL byte at offset 7",
		},
		{
			name:    "invalid UTF-8: refused",
			before:  podFiles{resolv: "nameserver 10.0.0.1\nsearch \xff\n", saved: absent, marker: absent},
			wantErr: "not a resolv.conf: invalid UTF-8",
		},
		{
			name:    "absurd size: refused",
			before:  podFiles{resolv: "nameserver 10.0.0.1\n" + strings.Repeat("#\n", resolvconf.MaxSize), saved: absent, marker: absent},
			wantErr: "not a resolv.conf",
		},
		{
			name:    "the saved original is podns's own file: refused",
			before:  podFiles{resolv: "nameserver 127.0.0.1\n", saved: "nameserver 127.0.0.1\n", marker: absent},
			wantErr: "upstream.conf: saved original is unusable",
		},
		{
			name:    "the saved original names only the unspecified address: refused",
			before:  podFiles{resolv: "nameserver 127.0.0.1\n", saved: "nameserver 0.0.0.0\n", marker: absent},
			wantErr: "upstream.conf: saved original is unusable",
		},
		{
			name:    "the saved original is garbage: refused",
			before:  podFiles{resolv: "nameserver 127.0.0.1\n", saved: "\x00", marker: absent},
			wantErr: "upstream.conf: refusing to rewrite: not a resolv.conf",
		},
		{
			name:    "resolv.conf missing",
			before:  podFiles{resolv: absent, saved: absent, marker: absent},
			wantErr: "resolv.conf: does not exist",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := setup(t, tc.before)
			tc.before.resolv = read(t, p.ResolvConf)
			p.HostNetwork = tc.hostNetwork
			p.HostNetworkReason = "hostNetwork pod: test"
			savedPath := statedir.UpstreamConfPath(p.StateDir)
			markerPath := statedir.DisabledMarkerPath(p.StateDir)
			inode := inodeOf(t, p.ResolvConf)

			rep, err := Run(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				var e *Error
				if !errors.As(err, &e) || e.Touched {
					t.Errorf("error %#v: want *Error, not Touched", err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				for path, want := range map[string]string{p.ResolvConf: tc.before.resolv, savedPath: tc.before.saved, markerPath: tc.before.marker} {
					if got := read(t, path); got != want {
						t.Errorf("%s changed on failure:\n got %q\nwant %q", filepath.Base(path), got, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if rep.Action != tc.action || rep.Saved != tc.saved || rep.StaleMarkerRemoved != tc.staleMarker {
				t.Errorf("report = %s/%s/stale %v, want %s/%s/%v", rep.Action, rep.Saved, rep.StaleMarkerRemoved, tc.action, tc.saved, tc.staleMarker)
			}
			wantResolv := tc.after.resolv
			if wantResolv == "" {
				wantResolv = withHeader(p.StateDir, rewritten)
			}
			for path, want := range map[string]string{p.ResolvConf: wantResolv, savedPath: tc.after.saved, markerPath: tc.after.marker} {
				if got := read(t, path); got != want {
					t.Errorf("%s:\n got %q\nwant %q", filepath.Base(path), got, want)
				}
			}
			if got := inodeOf(t, p.ResolvConf); got != inode {
				t.Errorf("resolv.conf inode %d -> %d: replaced, not rewritten in place", inode, got)
			}
			if st, err := os.Stat(savedPath); err == nil && st.Mode().Perm() != 0o644 {
				t.Errorf("upstream.conf mode %v, want 0644 (the stub reads it as 65532)", st.Mode().Perm())
			}
			// Whatever the first run did, a second run changes nothing.
			if tc.action != Disabled {
				rep2, err := Run(p)
				if err != nil || rep2.Action != Unchanged || rep2.Saved != SavedKept {
					t.Fatalf("rerun: %v, %s/%s; want unchanged/kept", err, rep2.Action, rep2.Saved)
				}
				if got := read(t, p.ResolvConf); got != wantResolv {
					t.Errorf("rerun changed resolv.conf to %q", got)
				}
				if got := read(t, savedPath); got != tc.after.saved {
					t.Errorf("rerun changed upstream.conf to %q", got)
				}
			}
		})
	}
}

func TestRunCreatesStateDir(t *testing.T) {
	p := setup(t, podFiles{resolv: clusterFirst, saved: absent, marker: absent})
	p.StateDir = filepath.Join(p.StateDir, "sub", "dir")
	if _, err := Run(p); err != nil {
		t.Fatal(err)
	}
	if got := read(t, statedir.UpstreamConfPath(p.StateDir)); got != clusterFirst {
		t.Errorf("saved %q", got)
	}
}

func TestRunStateDirUnwritable(t *testing.T) {
	p := setup(t, podFiles{resolv: clusterFirst, saved: absent, marker: absent})
	// A file where the state dir should be: saving must fail and resolv.conf stay as it was.
	os.RemoveAll(p.StateDir)
	os.WriteFile(p.StateDir, nil, 0o644)
	_, err := Run(p)
	if err == nil || !strings.Contains(err.Error(), "state") {
		t.Fatalf("err = %v, want a state dir error", err)
	}
	if got := read(t, p.ResolvConf); got != clusterFirst {
		t.Errorf("resolv.conf changed to %q", got)
	}
}

// A kubelet file whose every nameserver is the unspecified address (0.0.0.0, ::) gives the stub
// nothing to forward to but itself: podns is disabled and the pod resolves as without it. With one
// real nameserver beside it the file is rewritten; the stub skips the unspecified one.
func TestUnspecifiedNameservers(t *testing.T) {
	for _, tc := range []struct {
		resolv string
		want   Action
	}{
		{"nameserver 0.0.0.0\nsearch default.svc.cluster.local\n", Disabled},
		{"nameserver ::\n", Disabled},
		{"nameserver ::ffff:0.0.0.0\nnameserver 0.0.0.0\n", Disabled},
		{"nameserver 0.0.0.0\nnameserver 10.96.0.10\n", Rewritten},
	} {
		p := setup(t, podFiles{resolv: tc.resolv, saved: absent, marker: absent})
		rep, err := Run(p)
		if err != nil {
			t.Fatalf("%q: %v", tc.resolv, err)
		}
		if rep.Action != tc.want {
			t.Fatalf("%q: action %s, want %s", tc.resolv, rep.Action, tc.want)
		}
		marker := read(t, statedir.DisabledMarkerPath(p.StateDir))
		saved := read(t, statedir.UpstreamConfPath(p.StateDir))
		if tc.want == Rewritten {
			if marker != absent || saved != tc.resolv {
				t.Errorf("%q: marker %q, saved %q; want no marker and the original saved", tc.resolv, marker, saved)
			}
			continue
		}
		if got := read(t, p.ResolvConf); got != tc.resolv {
			t.Errorf("%q: resolv.conf changed to %q", tc.resolv, got)
		}
		if saved != absent || rep.Saved != SavedNone {
			t.Errorf("%q: saved %q (%s), want nothing saved", tc.resolv, saved, rep.Saved)
		}
		if !strings.Contains(marker, "unspecified address") || marker != rep.Reason+"\n" {
			t.Errorf("%q: marker %q, reason %q", tc.resolv, marker, rep.Reason)
		}
	}
}
