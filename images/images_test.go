package images

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

const (
	version   = "v0.1.0"
	stubImage = "ghcr.io/podns/stub:" + version
	initImage = "ghcr.io/podns/initc:" + version
	hookImage = "ghcr.io/podns/webhook:" + version
	// Size goals from the issue.
	stubMaxBytes = 10 << 20
	initMaxBytes = 4 << 20
	// The webhook carries client-go and controller-runtime (about 30 MB stripped at v0.1.0);
	// no size goal in issue #15, this bound catches a dependency that doubles it.
	hookMaxBytes = 40 << 20
)

// containersConf gives podman what this machine needs (runc; ulimits the VM can grant)
// without touching /etc/containers.
const containersConf = `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
`

func TestImages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds and runs images with podman")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman (apt-get install podman buildah runc)")
	}
	if testing.Short() {
		t.Skip("-short: the image test builds three images")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "containers.conf")
	if err := os.WriteFile(conf, []byte(containersConf), 0o644); err != nil {
		t.Fatal(err)
	}
	pm := podman{conf: conf}

	goroot, goversion := goEnv(t)
	builder := pinnedBuilder(t, root)
	if tag := builder[strings.LastIndex(builder, ":")+1:]; !strings.HasPrefix(tag, strings.TrimPrefix(goversion, "go")+"-") {
		t.Logf("note: the host has %s, the Dockerfiles pin %s; the local builder image carries the host's", goversion, builder)
	}
	start := time.Now()
	ensureBuilder(t, pm, builder, goroot, goversion)
	t.Logf("builder ready in %s", time.Since(start).Round(time.Millisecond))

	ctx := buildContext(t, root)
	// The previous run's images would be left dangling by the new tags; an image some
	// container still uses stays (rmi refuses), which is fine.
	pm.output("rmi", stubImage, initImage, hookImage)
	start = time.Now()
	build := exec.Command(filepath.Join(root, "images", "build.sh"), "stub", "init", "webhook")
	build.Env = append(os.Environ(),
		"CONTAINERS_CONF="+conf, "BUILDER=podman", "VERSION="+version, "CONTEXT="+ctx,
		"PLATFORMS=linux/"+runtime.GOARCH, "GOFLAGS=-mod=vendor", "PUSH=0",
		// No network for RUN steps: the build is offline by construction, not by luck. No
		// intermediate images left behind in the machine's image store.
		"BUILD_FLAGS=--network=none --layers=false")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("images/build.sh: %v\n%s", err, out)
	}
	t.Logf("the three images built offline in %s", time.Since(start).Round(time.Second))

	t.Run("image metadata and size", func(t *testing.T) {
		for _, img := range []struct {
			name, entrypoint, user string
			max                    int64
		}{
			{stubImage, "/stub", "65532:65532", stubMaxBytes},
			{initImage, "/initc", "0:0", initMaxBytes},
			{hookImage, "/webhook", "65532:65532", hookMaxBytes},
		} {
			info := inspect(t, pm, img.name)
			t.Logf("%s: %d bytes (%.2f MiB), %d layer(s)", img.name, info.Size, float64(info.Size)/(1<<20), len(info.RootFS.Layers))
			if info.Size > img.max {
				t.Errorf("%s is %d bytes, over the %d goal", img.name, info.Size, img.max)
			}
			if len(info.RootFS.Layers) != 1 {
				t.Errorf("%s has %d layers, want 1 (FROM scratch + the binary)", img.name, len(info.RootFS.Layers))
			}
			if got := strings.Join(info.Config.Entrypoint, " "); got != img.entrypoint {
				t.Errorf("%s entrypoint %q, want %q", img.name, got, img.entrypoint)
			}
			if info.Config.User != img.user {
				t.Errorf("%s user %q, want %q", img.name, info.Config.User, img.user)
			}
			if info.Architecture != runtime.GOARCH || info.Os != "linux" {
				t.Errorf("%s is %s/%s, want linux/%s", img.name, info.Os, info.Architecture, runtime.GOARCH)
			}
			for k, want := range map[string]string{
				"org.opencontainers.image.version":  version,
				"org.opencontainers.image.source":   "https://github.com/podns/podns",
				"org.opencontainers.image.licenses": "Apache-2.0",
			} {
				if got := info.Config.Labels[k]; got != want {
					t.Errorf("%s label %s = %q, want %q", img.name, k, got, want)
				}
			}
			files := imageFiles(t, pm, img.name)
			if len(files) != 1 || files[0] != img.entrypoint {
				t.Errorf("%s holds %v, want only %s (no shell, nothing else)", img.name, files, img.entrypoint)
			}
		}
	})

	t.Run("stub image resolves a name from the host", func(t *testing.T) {
		upstream := startTestDNS(t)
		listen := dnstest.FreeAddr(t) // for a listener in a container on the host network
		name := containerName(t, "stub")
		if _, err := pm.output("run", "-d", "--name", name, "--network", "host",
			"--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
			"-e", "PODNS_LISTEN="+listen, "-e", "PODNS_UPSTREAMS="+upstream, "-e", "PODNS_HTTP_LISTEN=off",
			stubImage); err != nil {
			t.Fatal(err)
		}
		defer pm.output("rm", "-f", "-t", "0", name)
		for _, proto := range []string{"udp", "tcp"} {
			r := queryUntil(t, pm, name, proto, listen, "www.podns-image-test.example.", 30*time.Second)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.53" {
				t.Errorf("%s answer %v, want www.podns-image-test.example. A 192.0.2.53", proto, r.Answer)
			}
		}
		if v, _ := pm.output("run", "--rm", "--network", "none", stubImage, "-version"); strings.TrimSpace(v) != version {
			t.Errorf("stub -version = %q, want %q (ldflags stamp)", strings.TrimSpace(v), version)
		}
	})

	t.Run("stub binds port 53 as 65532 with the pod sysctl, and only with it", func(t *testing.T) {
		testPort53(t, pm)
	})

	t.Run("webhook image runs as 65532 and checks its configuration", func(t *testing.T) {
		testWebhookImage(t, pm)
	})

	t.Run("init image rewrites a bind-mounted resolv.conf", func(t *testing.T) {
		testInitImage(t, pm)
	})

	t.Run("cross-platform build without emulation", func(t *testing.T) {
		testCrossBuild(t, pm, root, ctx, conf)
	})
}

// testCrossBuild builds the init image for the other architecture (amd64 <-> arm64) with
// build.sh and checks the binary inside is for that architecture: the builder stage ran on the
// host's platform and cross-compiled. Only initc, to keep the test short; the stub is the
// same Dockerfile pattern.
func testCrossBuild(t *testing.T, pm podman, root, ctx, conf string) {
	other, machine := "arm64", elf.EM_AARCH64
	if runtime.GOARCH == "arm64" {
		other, machine = "amd64", elf.EM_X86_64
	}
	const registry = "localhost/podns-imagetest-cross"
	image := registry + "/initc:" + version
	start := time.Now()
	build := exec.Command(filepath.Join(root, "images", "build.sh"), "init")
	build.Env = append(os.Environ(),
		"CONTAINERS_CONF="+conf, "BUILDER=podman", "VERSION="+version, "CONTEXT="+ctx, "REGISTRY="+registry,
		"PLATFORMS=linux/"+other, "GOFLAGS=-mod=vendor", "PUSH=0", "BUILD_FLAGS=--network=none --layers=false")
	out, err := build.CombinedOutput()
	defer pm.output("rmi", image)
	if err != nil {
		t.Fatalf("images/build.sh for linux/%s: %v\n%s", other, err, out)
	}
	t.Logf("linux/%s init image built in %s", other, time.Since(start).Round(time.Second))
	info := inspect(t, pm, image)
	if info.Architecture != other {
		t.Errorf("image architecture %s, want %s", info.Architecture, other)
	}
	t.Logf("%s: %d bytes (%.2f MiB)", image, info.Size, float64(info.Size)/(1<<20))
	mnt, err := pm.output("image", "mount", image)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.output("image", "unmount", image)
	f, err := elf.Open(filepath.Join(strings.TrimSpace(mnt), "initc"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("/initc is for %s, want %s", f.Machine, machine)
	}
}

// goEnv returns the host toolchain's GOROOT and version.
func goEnv(t *testing.T) (string, string) {
	t.Helper()
	out, err := exec.Command(goTool(), "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		t.Fatalf("go env: %q", out)
	}
	return f[0], f[1]
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go" // where the machine notes put it
}

// buildContext copies the module's packages that the three binaries need (as `go list -deps`
// says, so a new package is picked up), the Dockerfiles and .dockerignore into a temporary
// context, and vendors the modules there: the build then needs no network. The repository
// itself never gets a vendor/ directory.
func buildContext(t *testing.T, root string) string {
	t.Helper()
	ctx := t.TempDir()
	// Files a package embeds (go:embed, webhook/inject's definition.yaml) come along.
	list := exec.Command(goTool(), "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}", "./stub", "./initc", "./webhook")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderrOf(err))
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		path, dir := f[0], f[1]
		if !strings.HasPrefix(path, "github.com/podns/podns") {
			continue
		}
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("package %s outside the repository: %s", path, dir)
		}
		copyGoFiles(t, dir, filepath.Join(ctx, rel))
		for _, e := range f[2:] {
			copyFile(t, filepath.Join(dir, e), filepath.Join(ctx, rel, e))
		}
	}
	for _, f := range []string{"go.mod", "go.sum", "Dockerfile.stub", "Dockerfile.init", "Dockerfile.webhook", ".dockerignore"} {
		copyFile(t, filepath.Join(root, f), filepath.Join(ctx, f))
	}
	vendor := exec.Command(goTool(), "mod", "vendor")
	vendor.Dir = ctx
	vendor.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor in the build context: %v\n%s", err, out)
	}
	return ctx
}

func stderrOf(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

func copyGoFiles(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			copyFile(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type imageInfo struct {
	Size         int64
	Os           string
	Architecture string
	Config       struct {
		User       string
		Entrypoint []string
		Labels     map[string]string
	}
	RootFS struct{ Layers []string }
}

func inspect(t *testing.T, pm podman, image string) imageInfo {
	t.Helper()
	out, err := pm.output("image", "inspect", image)
	if err != nil {
		t.Fatal(err)
	}
	var infos []imageInfo
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("podman image inspect %s: %v\n%s", image, err, out)
	}
	return infos[0]
}

// imageFiles lists the regular files of an image, by mounting it.
func imageFiles(t *testing.T, pm podman, image string) []string {
	t.Helper()
	out, err := pm.output("image", "mount", image)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.output("image", "unmount", image)
	mnt := strings.TrimSpace(out)
	var files []string
	filepath.WalkDir(mnt, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, "/"+strings.TrimPrefix(path, mnt+"/"))
		}
		return nil
	})
	return files
}

func containerName(t *testing.T, what string) string {
	return fmt.Sprintf("podns-imagetest-%s-%d", what, os.Getpid())
}

// startTestDNS serves a test zone on loopback, UDP and TCP on one port: the stub's upstream.
// Nothing is forwarded anywhere.
func startTestDNS(t *testing.T) string {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 && r.Question[0].Name == "www.podns-image-test.example." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("www.podns-image-test.example. 60 IN A 192.0.2.53")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	return dnstest.Serve(t, handler)
}

// queryUntil asks addr until it answers or the deadline passes (the container is starting);
// it stops early when the container has exited.
func queryUntil(t *testing.T, pm podman, container, proto, addr, name string, within time.Duration) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		r, _, err := c.Exchange(m, addr)
		if err == nil {
			return r
		}
		lastErr = err
		if out, _ := pm.output("inspect", "--format", "{{.State.Running}}", container); strings.TrimSpace(out) != "true" {
			logs, _ := pm.output("logs", container)
			t.Fatalf("container %s is not running: %s\nlogs:\n%s", container, out, logs)
		}
		time.Sleep(200 * time.Millisecond) // the container has no readiness signal we can wait on from here
	}
	logs, _ := pm.output("logs", container)
	t.Fatalf("%s %s: no answer within %s: %v\nlogs:\n%s", proto, addr, within, lastErr, logs)
	return nil
}
