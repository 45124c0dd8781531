package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-help"}, map[string]string{}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"PODNS_STATE_DIR    /run/podns", "PODNS_RESOLV_CONF  /etc/resolv.conf", "PODNS_NAMESERVER   127.0.0.1",
		"PODNS_OPTIONS      timeout:1 attempts:3", "PODNS_POD_IP", "PODNS_HOST_IP", "PODNS_LOG_LEVEL    info", "PODNS_LOG_FORMAT   json",
		"EXIT  MEANING\n0     done", "\n1     refused or failed", "\n2     bad configuration",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-help lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBadConfigExits2(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(nil, map[string]string{"PODNS_NAMESERVER": "x", "PODNS_LOG_FORMAT": "xml"}, &out, &errb)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	if !strings.Contains(errb.String(), `PODNS_NAMESERVER="x"`) || !strings.Contains(errb.String(), `PODNS_LOG_FORMAT="xml"`) {
		t.Errorf("stderr does not name both variables:\n%s", errb.String())
	}
	if code := run([]string{"--force"}, map[string]string{}, &out, &errb); code != exitConfig {
		t.Errorf("unknown argument: exit %d, want %d", code, exitConfig)
	}
}

// TestRunLogsOneLine checks the log contract: one JSON line with what was read, what was
// written and which options changed.
func TestRunLogsOneLine(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	os.WriteFile(conf, []byte("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5 timeout:5\n"), 0o644)
	var out, errb bytes.Buffer
	env := map[string]string{"PODNS_RESOLV_CONF": conf, "PODNS_STATE_DIR": filepath.Join(dir, "state"),
		"PODNS_POD_IP": "10.244.0.5", "PODNS_HOST_IP": "192.168.1.10"}
	if code := run(nil, env, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one log line, got %d:\n%s", len(lines), errb.String())
	}
	var rec struct {
		Level, Action, Message string
		Read                   struct{ Nameservers, Search, Options []string }
		Wrote                  struct {
			Nameserver string
			Options    []string
		}
		OptionsChanged    []string `json:"options_changed"`
		UpstreamConfState string   `json:"upstream_conf_state"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	if rec.Level != "info" || rec.Action != "rewritten" || rec.UpstreamConfState != "saved" ||
		strings.Join(rec.Read.Nameservers, ",") != "10.96.0.10" || len(rec.Read.Search) != 3 ||
		strings.Join(rec.Read.Options, ",") != "ndots:5,timeout:5" ||
		rec.Wrote.Nameserver != "127.0.0.1" || strings.Join(rec.Wrote.Options, ",") != "ndots:5,timeout:1,attempts:3" ||
		strings.Join(rec.OptionsChanged, ",") != "timeout:5->timeout:1,+attempts:3" {
		t.Errorf("log line: %+v\n%s", rec, lines[0])
	}
}

// buildInitc builds the real binary, as `make build` does.
func buildInitc(t *testing.T) string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		gotool = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "initc")
	cmd := exec.Command(gotool, "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// inMountNS runs the initc binary in a private mount namespace where conf is bind-mounted
// over /etc/resolv.conf, as the kubelet's file is in a container. PODNS_RESOLV_CONF is left
// unset so the default path is what gets rewritten.
func inMountNS(t *testing.T, bin, conf, stateDir string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$1"`, conf, bin)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PODNS_STATE_DIR=" + stateDir}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("unshare: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

func stat(t *testing.T, path string) (ino uint64, mtime time.Time) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino, st.ModTime()
}

func TestBindMountedResolvConf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs initc in a private mount namespace over a bind-mounted /etc/resolv.conf")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	hostConf, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if now, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(now, hostConf) {
			t.Errorf("the host's /etc/resolv.conf changed: the mount namespace leaked")
		}
	}()
	bin := buildInitc(t)
	const kubelet = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"

	t.Run("the setup is realistic: rename onto the bind mount fails", func(t *testing.T) {
		dir := t.TempDir()
		conf := filepath.Join(dir, "resolv.conf")
		os.WriteFile(conf, []byte(kubelet), 0o644)
		other := filepath.Join(dir, "other")
		os.WriteFile(other, []byte("nameserver 127.0.0.1\n"), 0o644)
		out, err := exec.Command("unshare", "--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && mv "$1" /etc/resolv.conf`, conf, other).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "busy") {
			t.Fatalf("rename onto the bind mount: err %v, output %q; want EBUSY", err, out)
		}
	})

	t.Run("rewrite in place, save once, rerun is a no-op", func(t *testing.T) {
		dir := t.TempDir()
		conf, state := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "state")
		os.WriteFile(conf, []byte(kubelet), 0o644)
		ino, _ := stat(t, conf)

		code, out := inMountNS(t, bin, conf, state)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		want := "# podns: nameserver is the pod-local DNS cache; the kubelet's original is " + state + "/upstream.conf\n" +
			"nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n"
		if got, _ := os.ReadFile(conf); string(got) != want {
			t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
		}
		if got, _ := os.ReadFile(filepath.Join(state, "upstream.conf")); string(got) != kubelet {
			t.Errorf("upstream.conf = %q, want the kubelet's file byte for byte", got)
		}
		ino2, mtime := stat(t, conf)
		if ino2 != ino {
			t.Errorf("inode %d -> %d: the file was replaced, not rewritten in place", ino, ino2)
		}

		code, out = inMountNS(t, bin, conf, state)
		if code != 0 || !strings.Contains(out, `"action":"unchanged"`) || !strings.Contains(out, `"upstream_conf_state":"kept"`) {
			t.Fatalf("rerun: exit %d: %s", code, out)
		}
		if got, _ := os.ReadFile(conf); string(got) != want {
			t.Errorf("rerun changed resolv.conf:\n%s", got)
		}
		if got, _ := os.ReadFile(filepath.Join(state, "upstream.conf")); string(got) != kubelet {
			t.Errorf("rerun overwrote upstream.conf with %q", got)
		}
		if ino3, mtime3 := stat(t, conf); ino3 != ino || !mtime3.Equal(mtime) {
			t.Errorf("rerun wrote the file (inode %d, mtime %v -> %v)", ino3, mtime, mtime3)
		}
	})

	t.Run("hostNetwork: untouched, marker written, exit 0", func(t *testing.T) {
		dir := t.TempDir()
		conf, state := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "state")
		os.WriteFile(conf, []byte(kubelet), 0o644)
		code, out := inMountNS(t, bin, conf, state, "PODNS_POD_IP=192.168.1.10", "PODNS_HOST_IP=192.168.1.10")
		if code != 0 || !strings.Contains(out, `"level":"warn"`) {
			t.Fatalf("exit %d: %s", code, out)
		}
		if got, _ := os.ReadFile(conf); string(got) != kubelet {
			t.Errorf("resolv.conf changed: %q", got)
		}
		if m, err := os.ReadFile(filepath.Join(state, "disabled")); err != nil || !strings.HasPrefix(string(m), "hostNetwork pod") || strings.Count(string(m), "\n") != 1 {
			t.Errorf("marker = %q, %v; want one line starting with the reason", m, err)
		}
		if _, err := os.Stat(filepath.Join(state, "upstream.conf")); err == nil {
			t.Error("upstream.conf saved for a hostNetwork pod")
		}
	})

	t.Run("read-only mount: refused with the manifest fix named", func(t *testing.T) {
		dir := t.TempDir()
		conf, state := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "state")
		os.WriteFile(conf, []byte(kubelet), 0o644)
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
			`mount --bind "$0" /etc/resolv.conf && mount -o remount,bind,ro /etc/resolv.conf && exec "$1"`, conf, bin)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PODNS_STATE_DIR=" + state}
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != exitFail || !strings.Contains(string(out), "/etc/resolv.conf: is mounted read-only (readOnlyRootFilesystem: true") {
			t.Fatalf("exit %d: %s", cmd.ProcessState.ExitCode(), out)
		}
		if got, _ := os.ReadFile(conf); string(got) != kubelet {
			t.Errorf("resolv.conf changed to %q", got)
		}
		if _, err := os.Stat(filepath.Join(state, "upstream.conf")); err == nil {
			t.Error("upstream.conf saved although the rewrite could not happen")
		}
	})

	for _, tc := range []struct{ name, in, want string }{
		{"no nameserver", "search default.svc.cluster.local\noptions ndots:5\n", "/etc/resolv.conf: has no nameserver line"},
		{"already podns, nothing saved", "nameserver 127.0.0.1\n", "/etc/resolv.conf: nameserver is already 127.0.0.1"},
		{"binary garbage", "\x7fELF\x02\x01\x01\x00\x00\x00\x00", "/etc/resolv.conf: refusing to rewrite: not a resolv.conf: NUL byte"},
		{"empty", "", "/etc/resolv.conf: has no nameserver line"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf, state := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "state")
			os.WriteFile(conf, []byte(tc.in), 0o644)
			_, mtime := stat(t, conf)
			code, out := inMountNS(t, bin, conf, state)
			if code != exitFail {
				t.Fatalf("exit %d, want %d: %s", code, exitFail, out)
			}
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Errorf("want one line containing %q, got:\n%s", tc.want, out)
			}
			if got, _ := os.ReadFile(conf); string(got) != tc.in {
				t.Errorf("resolv.conf changed to %q", got)
			}
			if _, m := stat(t, conf); !m.Equal(mtime) {
				t.Error("resolv.conf was written")
			}
			if _, err := os.Stat(filepath.Join(state, "upstream.conf")); err == nil {
				t.Error("upstream.conf written on a refusal")
			}
		})
	}
}
