package statedir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPathsAreTheContractNames(t *testing.T) {
	// initc and every deployed stub image agree on these names: changing one breaks pods.
	if got := UpstreamConfPath("/run/podns"); got != "/run/podns/upstream.conf" {
		t.Errorf("UpstreamConfPath = %q", got)
	}
	if got := DisabledMarkerPath("/run/podns"); got != "/run/podns/disabled" {
		t.Errorf("DisabledMarkerPath = %q", got)
	}
}

func TestDisabledMarkerRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, off := ReadDisabled(dir); off {
		t.Fatal("disabled without a marker")
	}
	reason := "hostNetwork pod (PODNS_POD_IP 10.0.0.1 = PODNS_HOST_IP)"
	if err := WriteDisabled(dir, reason); err != nil {
		t.Fatal(err)
	}
	// The format on disk: the reason and a newline.
	if b, err := os.ReadFile(filepath.Join(dir, "disabled")); err != nil || string(b) != reason+"\n" {
		t.Fatalf("marker file %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "disabled")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("marker mode %v, %v; want 0644 (the stub runs as another user)", fi.Mode(), err)
	}
	if why, off := ReadDisabled(dir); !off || why != reason {
		t.Fatalf("ReadDisabled = %q, %v", why, off)
	}
	removed, err := RemoveDisabled(dir)
	if err != nil || !removed {
		t.Fatalf("RemoveDisabled = %v, %v", removed, err)
	}
	if _, off := ReadDisabled(dir); off {
		t.Fatal("disabled after removal")
	}
	if removed, err := RemoveDisabled(dir); err != nil || removed {
		t.Fatalf("second RemoveDisabled = %v, %v; want false, nil", removed, err)
	}
}

func TestReadDisabledFormats(t *testing.T) {
	for _, tt := range []struct{ content, want string }{
		{"hostNetwork pod\n", "hostNetwork pod"},
		{"  spaced reason \n\n", "spaced reason"},
		{"", "disabled by initc"},
		{"\n", "disabled by initc"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, DisabledMarkerName), []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if why, off := ReadDisabled(dir); !off || why != tt.want {
			t.Errorf("marker %q: ReadDisabled = %q, %v; want %q", tt.content, why, off, tt.want)
		}
	}
}

func TestSaveUpstreamConfReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"nameserver 10.96.0.10\n", "nameserver 10.96.0.11\nsearch a.svc\n"} {
		if err := SaveUpstreamConf(dir, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(UpstreamConfPath(dir)); err != nil || string(b) != content {
			t.Fatalf("upstream.conf = %q, %v; want %q", b, err, content)
		}
	}
	// No temporary file is left behind.
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("state dir holds %v (%v), want only upstream.conf", ents, err)
	}
}
