package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podns/podns/internal/dnstest"
)

// TestCacheSizeThatCannotFitIsRefused runs the real binary, built to read a fixture cgroup root
// (the main.cgroupRoot test hook) holding a cgroup v2 limit of 64 MiB, the component's.
// PODNS_CACHE_SIZE=10000000 is refused with exit 2 and one line naming the variable, the limit,
// the bytes per entry and the largest size that fits; that largest size starts, and its
// start-up line reports the limits in effect; a user's GOMEMLIMIT is kept and used instead.
func TestCacheSizeThatCannotFitIsRefused(t *testing.T) {
	root := t.TempDir()
	for name, content := range map[string]string{
		"proc/self/cgroup":         "0::/\n",
		"proc/meminfo":             "MemTotal:       24684092 kB\n",
		"sys/fs/cgroup/memory.max": "67108864\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "stub")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.cgroupRoot="+root, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := func(extra ...string) []string {
		return append([]string{"PATH=" + os.Getenv("PATH"), "PODNS_UPSTREAMS=127.0.0.1:1", "PODNS_HTTP_LISTEN=off",
			"PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT=0s", "PODNS_LISTEN=" + dnstest.FreeAddr(t)}, extra...)
	}

	t.Run("refused", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Env = env("PODNS_CACHE_SIZE=10000000")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != exitConfig {
			t.Fatalf("exit %d (%v), want %d; stderr:\n%s", code, err, exitConfig, stderr.String())
		}
		const want = "stub: refusing to start: PODNS_CACHE_SIZE=10000000 does not fit: the memory limit 64.0 MiB (/sys/fs/cgroup/memory.max) " +
			"less 6.4 MiB headroom leaves the cache 24.8 MiB, at 131 bytes per entry; the largest PODNS_CACHE_SIZE that fits is 198509\n"
		if stderr.String() != want {
			t.Errorf("stderr:\n%q\nwant:\n%q", stderr.String(), want)
		}
	})

	t.Run("largest that fits starts", func(t *testing.T) {
		line := startLine(t, bin, env("PODNS_CACHE_SIZE=198509"))
		for k, v := range map[string]any{
			"memory_limit": float64(64 << 20), "memory_limit_from": "/sys/fs/cgroup/memory.max",
			"go_memory_limit": float64(64<<20 - 64<<20/10), "go_memory_limit_from": "cgroup",
			"cache_max_bytes": float64((64<<20-64<<20/10)/2 - 4<<20), "cache_size": float64(198509),
		} {
			if line[k] != v {
				t.Errorf("start-up line: %s = %v, want %v", k, line[k], v)
			}
		}
	})

	t.Run("GOMEMLIMIT kept", func(t *testing.T) {
		// 200 MiB: a cache budget of 96 MiB, 768,422 entries; the cgroup's 64 MiB would allow 198,509.
		line := startLine(t, bin, env("PODNS_CACHE_SIZE=300000", "GOMEMLIMIT=200MiB"))
		if line["go_memory_limit"] != float64(200<<20) || line["go_memory_limit_from"] != "GOMEMLIMIT" || line["memory_limit"] != float64(64<<20) {
			t.Errorf("start-up line: %v", line)
		}
	})
}

// startLine starts bin with env, returns the fields of its "podns stub serving" line and stops it.
func startLine(t *testing.T, bin string, env []string) map[string]any {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stub exited before serving:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "podns stub serving" {
				go func() {
					for range lines {
					}
				}()
				return m
			}
		case <-timeout:
			t.Fatalf("no start-up line in 30 s:\n%s", strings.Join(seen, "\n"))
		}
	}
}
