package memlimit

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// fixture writes files (path below root → content) into a new root directory.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	meminfo = "MemTotal:       24684092 kB\nMemFree:         1000000 kB\n"
	// This VM's /proc/self/cgroup: hybrid, memory on v1, an empty v2 hierarchy.
	procV1 = "9:name=systemd:/\n4:memory:/process_api/4ebe\n3:cpuset:/\n0::/\n"
	// A Kubernetes pod on cgroup v2 without a cgroup namespace.
	procV2 = "0::/kubepods.slice/pod1/cri-abc\n"
)

func TestRead(t *testing.T) {
	for _, tt := range []struct {
		name     string
		files    map[string]string
		want     int64
		wantFile string
		wantErr  string
	}{
		{name: "v2 number", files: map[string]string{
			"proc/self/cgroup": procV2, "proc/meminfo": meminfo,
			"sys/fs/cgroup/kubepods.slice/pod1/cri-abc/memory.max": "67108864\n",
		}, want: 64 << 20, wantFile: "/sys/fs/cgroup/kubepods.slice/pod1/cri-abc/memory.max"},
		{name: "v2 max", files: map[string]string{
			"proc/self/cgroup": procV2, "proc/meminfo": meminfo,
			"sys/fs/cgroup/kubepods.slice/pod1/cri-abc/memory.max": "max\n",
			// v1 files of a hybrid host must not be read once v2 has memory.max.
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "1048576\n",
		}},
		{name: "v2 the pod's limit is lower than the container's", files: map[string]string{
			"proc/self/cgroup": procV2, "proc/meminfo": meminfo,
			"sys/fs/cgroup/kubepods.slice/pod1/cri-abc/memory.max": "max\n",
			"sys/fs/cgroup/kubepods.slice/pod1/memory.max":         "33554432\n",
		}, want: 32 << 20, wantFile: "/sys/fs/cgroup/kubepods.slice/pod1/memory.max"},
		{name: "v2 cgroup namespace", files: map[string]string{
			"proc/self/cgroup": "0::/\n", "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory.max": "67108864\n",
		}, want: 64 << 20, wantFile: "/sys/fs/cgroup/memory.max"},
		{name: "v1 number", files: map[string]string{
			"proc/self/cgroup": procV1, "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/process_api/4ebe/memory.limit_in_bytes": "33554432\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":                  "9223372036854771712\n",
		}, want: 32 << 20, wantFile: "/sys/fs/cgroup/memory/process_api/4ebe/memory.limit_in_bytes"},
		{name: "v1 unlimited", files: map[string]string{
			"proc/self/cgroup": procV1, "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/process_api/4ebe/memory.limit_in_bytes": "9223372036854771712\n",
		}},
		{name: "v1 above physical memory", files: map[string]string{
			"proc/self/cgroup": procV1, "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/process_api/4ebe/memory.limit_in_bytes": "68719476736\n", // 64 GiB
		}},
		{name: "v1 only the container's cgroup mounted", files: map[string]string{
			"proc/self/cgroup": "4:memory:/docker/abc\n", "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "67108864\n",
		}, want: 64 << 20, wantFile: "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{name: "v1 memory with another controller", files: map[string]string{
			"proc/self/cgroup": "5:memory,memsw:/a\n", "proc/meminfo": meminfo,
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "67108864\n",
		}, want: 64 << 20, wantFile: "/sys/fs/cgroup/memory/a/memory.limit_in_bytes"},
		{name: "no /proc/self/cgroup", files: map[string]string{"proc/meminfo": meminfo}},
		{name: "no limit files", files: map[string]string{"proc/self/cgroup": procV1, "proc/meminfo": meminfo}},
		{name: "v2 garbage", files: map[string]string{
			"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "lots\n",
		}, wantErr: `/sys/fs/cgroup/memory.max: not a memory limit: "lots"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(fixture(t, tt.files))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Bytes != tt.want || got.File != tt.wantFile {
				t.Errorf("Read = %+v, want %d from %q", got, tt.want, tt.wantFile)
			}
		})
	}
}

func TestFit(t *testing.T) {
	for _, tt := range []struct {
		size     int
		perEntry int64
		budget   int64
		largest  int
		ok       bool
	}{
		{10000, 288, CacheBudget(64<<20 - Headroom(64<<20)), 90294, true},
		{90294, 288, CacheBudget(64<<20 - Headroom(64<<20)), 90294, true},
		{90295, 288, CacheBudget(64<<20 - Headroom(64<<20)), 90294, false},
		{10000000, 288, CacheBudget(64<<20 - Headroom(64<<20)), 90294, false},
		{10000, 288, CacheBudget(32<<20 - Headroom(32<<20)), 36408, true},
		{1, 288, CacheBudget(8<<20 - Headroom(8<<20)), 0, false}, // 8 MiB leaves nothing for a cache
		{0, 288, 0, 0, true},
	} {
		largest, ok := Fit(tt.size, tt.perEntry, tt.budget)
		if largest != tt.largest || ok != tt.ok {
			t.Errorf("Fit(%d, %d, %d) = %d, %v; want %d, %v", tt.size, tt.perEntry, tt.budget, largest, ok, tt.largest, tt.ok)
		}
	}
}

func TestHeadroomAndBudget(t *testing.T) {
	for _, tt := range []struct{ limit, headroom, budget int64 }{
		{64 << 20, 64 << 20 / 10, (64<<20-64<<20/10)/2 - 4<<20},
		{32 << 20, 4 << 20, 10 << 20},
		{8 << 20, 4 << 20, 0},
	} {
		if h := Headroom(tt.limit); h != tt.headroom {
			t.Errorf("Headroom(%d) = %d, want %d", tt.limit, h, tt.headroom)
		}
		if b := CacheBudget(tt.limit - Headroom(tt.limit)); b != tt.budget {
			t.Errorf("CacheBudget under %d = %d, want %d", tt.limit, b, tt.budget)
		}
	}
}

// TestApplySetsRuntimeLimit: from a cgroup limit Apply sets the runtime's limit (read back with
// debug.SetMemoryLimit(-1)) to the limit less the headroom; a user's GOMEMLIMIT is left alone.
func TestApplySetsRuntimeLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	root := fixture(t, map[string]string{
		"proc/self/cgroup": "0::/\n", "proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "67108864\n",
	})

	p, err := Apply(root, "")
	if err != nil {
		t.Fatal(err)
	}
	want := int64(64<<20 - 64<<20/10)
	if got := debug.SetMemoryLimit(-1); got != want || p.GoLimit != want || p.GoLimitFrom != "cgroup" {
		t.Errorf("runtime limit %d, plan %+v; want %d from cgroup", got, p, want)
	}
	if p.CacheBudget != CacheBudget(want) || p.Cgroup.Bytes != 64<<20 {
		t.Errorf("plan %+v", p)
	}

	// The user's GOMEMLIMIT (the runtime applied it at start; here: set by hand) wins.
	debug.SetMemoryLimit(100 << 20)
	p, err = Apply(root, "100MiB")
	if err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 100<<20 || p.GoLimit != 100<<20 || p.GoLimitFrom != "GOMEMLIMIT" {
		t.Errorf("runtime limit %d, plan %+v; want the user's 100 MiB kept", got, p)
	}

	// No container limit: nothing set, no budget.
	debug.SetMemoryLimit(math.MaxInt64)
	p, err = Apply(fixture(t, map[string]string{"proc/self/cgroup": "0::/\n"}), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 || p.GoLimit != 0 || p.CacheBudget != 0 || p.GoLimitFrom != "none" {
		t.Errorf("runtime limit %d, plan %+v; want none", got, p)
	}
}
