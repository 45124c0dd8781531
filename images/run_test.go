package images

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// testPort53 runs the stub image as its default user (65532) with every capability dropped and
// no_new_privs, in a network namespace of its own, listening on 127.0.0.1:53: with the sysctl
// net.ipv4.ip_unprivileged_port_start=53 (what the Kustomize component sets) it serves; without
// it the bind is refused, which shows the image carries no capability that would hide a
// missing sysctl.
func testPort53(t *testing.T, pm podman) {
	args := func(name string, sysctl bool) []string {
		a := []string{"run", "-d", "--name", name, "--network", "none", "--read-only", "--cap-drop=ALL",
			"--security-opt", "no-new-privileges"}
		if sysctl {
			a = append(a, "--sysctl", "net.ipv4.ip_unprivileged_port_start=53")
		}
		// The upstream is unreachable in an empty netns: any reply (SERVFAIL) proves the bind.
		return append(a, "-e", "PODNS_LISTEN=127.0.0.1:53", "-e", "PODNS_UPSTREAMS=127.0.0.1:5353",
			"-e", "PODNS_HTTP_LISTEN=off", stubImage)
	}

	name := containerName(t, "port53")
	if _, err := pm.output(args(name, true)...); err != nil {
		t.Fatal(err)
	}
	defer pm.output("rm", "-f", "-t", "0", name)
	pidOut, err := pm.output("inspect", "--format", "{{.State.Pid}}", name)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(pidOut)
	if st, err := os.Stat("/proc/" + pid); err != nil || st.Sys().(*syscall.Stat_t).Uid != 65532 {
		t.Errorf("stub process %s not running as 65532: %v", pid, err)
	}
	var r *dns.Msg
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err = queryInNetns(t, "/proc/"+pid+"/ns/net", "127.0.0.1:53")
		if err == nil || time.Now().After(deadline) {
			break
		}
		if out, _ := pm.output("inspect", "--format", "{{.State.Running}}", name); strings.TrimSpace(out) != "true" {
			logs, _ := pm.output("logs", name)
			t.Fatalf("stub exited with the sysctl set:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond) // polling a socket in another netns; no signal to wait on
	}
	if err != nil {
		logs, _ := pm.output("logs", name)
		t.Fatalf("no DNS reply on 127.0.0.1:53 inside the container: %v\nlogs:\n%s", err, logs)
	}
	t.Logf("uid 65532 serves 127.0.0.1:53 with the sysctl (reply rcode %s)", dns.RcodeToString[r.Rcode])

	name2 := containerName(t, "port53-nosysctl")
	if _, err := pm.output(args(name2, false)...); err != nil {
		t.Fatal(err)
	}
	defer pm.output("rm", "-f", "-t", "0", name2)
	code, err := pm.output("wait", "--condition", "stopped", name2)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := pm.output("logs", name2)
	if strings.TrimSpace(code) == "0" || !strings.Contains(logs, "permission denied") {
		t.Errorf("without the sysctl the stub must fail to bind port 53: exit %s, logs:\n%s", strings.TrimSpace(code), logs)
	}
}

// queryInNetns sends one DNS query from inside the network namespace at nsPath: the socket is
// created on an OS thread switched into that namespace, and keeps it after the thread returns.
func queryInNetns(t *testing.T, nsPath, addr string) (*dns.Msg, error) {
	t.Helper()
	type result struct {
		r   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it exits with the goroutine, so it never runs other
		// goroutines in the container's namespace.
		f, err := os.Open(nsPath)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{nil, err}
			return
		}
		c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
		m := new(dns.Msg)
		m.SetQuestion("www.podns-image-test.example.", dns.TypeA)
		r, _, err := c.Exchange(m, addr)
		done <- result{r, err}
	}()
	res := <-done
	return res.r, res.err
}

// testInitImage runs the init image as a pod would: root without capabilities, no_new_privs,
// resolv.conf bind-mounted as a single file, the state dir a volume. (Not --read-only: in a
// pod that would make the runtime mount resolv.conf read-only; podman's -v would not, so the
// flag would prove nothing here.)
func testInitImage(t *testing.T, pm podman) {
	const kubelet = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	dir := t.TempDir()
	conf, state := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "state")
	if err := os.WriteFile(conf, []byte(kubelet), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(conf)
	ino := st.Sys().(*syscall.Stat_t).Ino
	run := func() string {
		out, err := pm.output("run", "--rm", "--network", "none", "--cap-drop=ALL",
			"--security-opt", "no-new-privileges",
			"-v", conf+":/etc/resolv.conf", "-v", state+":/run/podns", initImage)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := run()
	want := "# podns: nameserver is the pod-local DNS cache; the kubelet's original is /run/podns/upstream.conf\n" +
		"nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n"
	if got, _ := os.ReadFile(conf); string(got) != want {
		t.Errorf("resolv.conf after the init image:\n%s\nwant:\n%s\nlog: %s", got, want, out)
	}
	if got, _ := os.ReadFile(filepath.Join(state, "upstream.conf")); string(got) != kubelet {
		t.Errorf("upstream.conf = %q, want the original", got)
	}
	if st, _ := os.Stat(conf); st.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("resolv.conf replaced, not rewritten in place")
	}
	if !strings.Contains(out, `"action":"rewritten"`) || !strings.Contains(out, `"version":"`+version+`"`) {
		t.Errorf("log line: %s", out)
	}
	if out := run(); !strings.Contains(out, `"action":"unchanged"`) {
		t.Errorf("rerun: %s", out)
	}
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, []byte(want)) {
		t.Errorf("rerun changed resolv.conf: %s", got)
	}
}

// testWebhookImage runs the webhook image as its Deployment does (non-root, no capabilities,
// no_new_privs, read-only root): it prints its stamped version, refuses a bad variable with
// exit 2 naming it, and without API server credentials (no ServiceAccount mount, no
// KUBECONFIG) exits 1 saying so rather than crashing. The admission path itself is tested in
// webhook/ over loopback TLS.
func testWebhookImage(t *testing.T, pm podman) {
	base := []string{"run", "--rm", "--network", "none", "--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges"}
	if v, err := pm.output(append(base, hookImage, "-version")...); err != nil || strings.TrimSpace(v) != version {
		t.Errorf("webhook -version = %q (%v), want %q (ldflags stamp)", strings.TrimSpace(v), err, version)
	}
	exit := func(args ...string) (int, string) {
		cmd := pm.command(append(base, args...)...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := exit("-e", "PODNS_CERT_MODE=acme", hookImage); code != 2 || !strings.Contains(out, `PODNS_CERT_MODE="acme"`) {
		t.Errorf("bad PODNS_CERT_MODE: exit %d, want 2 naming the variable:\n%s", code, out)
	}
	if code, out := exit(hookImage); code != 1 || !strings.Contains(out, "cannot reach the API server") {
		t.Errorf("no credentials: exit %d, want 1 saying so:\n%s", code, out)
	}
}
