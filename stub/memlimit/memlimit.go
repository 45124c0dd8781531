// Package memlimit reads the container's memory limit from the cgroup filesystem, sets the Go
// runtime's memory limit below it, and derives the cache's byte budget, so that a setting that
// cannot fit is refused at start instead of the container being OOM-killed later.
//
// Where the limit is read (every path below the injected root, "/" in the stub):
//   - cgroup v2 (unified; most clusters): the "0::<path>" line of /proc/self/cgroup, then
//     memory.max in /sys/fs/cgroup<path> and each of its ancestors, the lowest wins; "max" is
//     no limit. With a cgroup namespace (the default on v2) <path> is "/" and /sys/fs/cgroup is
//     the container's own cgroup.
//   - cgroup v1, when no v2 memory.max exists: the line whose controllers include "memory",
//     then memory.limit_in_bytes in /sys/fs/cgroup/memory<path> and its ancestors, the lowest
//     wins (a runtime that mounts only the container's cgroup there leaves just the mount's root,
//     which is the container's). v1 writes "unlimited" as a huge number (9223372036854771712).
//
// A limit of 2^60 bytes or more, or not below the machine's memory (/proc/meminfo MemTotal), is
// no limit. Missing files mean no limit, never an error.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// Unlimited is the threshold at and above which a limit counts as none (cgroup v1 reports
// "no limit" as 2^63 rounded down to a page; some kernels a little less).
const Unlimited = int64(1) << 60

// Limit is the container's memory limit as read from the cgroup filesystem.
type Limit struct {
	Bytes int64  // 0: no limit
	File  string // the file the limit came from (below the root); "" when none
}

// Read returns the memory limit of the calling process's cgroup, every path taken below root
// ("/" in production, a fixture directory in tests). An error means a file exists but does not
// say what cgroups write; a missing file is no limit.
func Read(root string) (Limit, error) {
	cg, err := os.ReadFile(path.Join(root, "proc/self/cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return Limit{}, nil
	}
	if err != nil {
		return Limit{}, err
	}
	v2, v1, hasV1 := parseProcCgroup(cg)
	lim, found, err := lowest(root, "sys/fs/cgroup", v2, "memory.max")
	if err != nil || found || !hasV1 {
		return capped(root, lim), err
	}
	lim, _, err = lowest(root, "sys/fs/cgroup/memory", v1, "memory.limit_in_bytes")
	return capped(root, lim), err
}

// parseProcCgroup returns the v2 path ("0::<path>"; "/" when absent) and the v1 memory
// controller's path from /proc/self/cgroup ("hierarchy-ID:controller-list:path", cgroups(7)).
func parseProcCgroup(b []byte) (v2, v1 string, hasV1 bool) {
	v2 = "/"
	for line := range strings.SplitSeq(string(b), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && ctrls == "" {
			v2 = p
			continue
		}
		for c := range strings.SplitSeq(ctrls, ",") {
			if c == "memory" {
				v1, hasV1 = p, true
			}
		}
	}
	return v2, v1, hasV1
}

// lowest reads file in mount/cg and in each of its ancestors up to mount itself, and returns
// the lowest limit; found says whether any of the files exists.
func lowest(root, mount, cg, file string) (lim Limit, found bool, err error) {
	for p := path.Clean("/" + cg); ; p = path.Dir(p) {
		name := path.Join(mount, p, file)
		b, err := os.ReadFile(path.Join(root, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return lim, found, err
		default:
			found = true
			n, err := parseLimit(b)
			if err != nil {
				return lim, found, fmt.Errorf("/%s: %w", name, err)
			}
			if n > 0 && (lim.Bytes == 0 || n < lim.Bytes) {
				lim = Limit{Bytes: n, File: "/" + name}
			}
		}
		if p == "/" {
			return lim, found, nil
		}
	}
}

// parseLimit reads memory.max ("max" or bytes) or memory.limit_in_bytes (bytes). 0 is none.
func parseLimit(b []byte) (int64, error) {
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil && u > math.MaxInt64 {
			return 0, nil // beyond int64: unlimited
		}
		return 0, fmt.Errorf("not a memory limit: %q", s)
	}
	if n < 0 || n >= Unlimited {
		return 0, nil
	}
	return n, nil
}

// capped drops a limit that is not below the machine's memory: cgroup v1 and some runtimes
// write a large number rather than "unlimited".
func capped(root string, lim Limit) Limit {
	if lim.Bytes == 0 {
		return lim
	}
	if total := memTotal(root); total > 0 && lim.Bytes >= total {
		return Limit{}
	}
	return lim
}

// memTotal is MemTotal from /proc/meminfo in bytes; 0 when unknown.
func memTotal(root string) int64 {
	f, err := os.Open(path.Join(root, "proc/meminfo"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// Headroom is the part of a container limit kept out of the Go runtime's limit, for memory the
// runtime does not manage: the binary's mapped pages (~8 MiB of the stub's RSS, reclaimable
// page cache but charged to the cgroup), thread stacks, socket buffers (charged on v2): 10 %
// of the limit, at least 4 MiB.
func Headroom(limit int64) int64 { return max(limit/10, 4<<20) }

// baseHeap is the heap the stub needs besides the cache: the runtime, the metrics registry,
// buffers and the misses in flight (idle, the whole heap is ~2 MiB).
const baseHeap = 4 << 20

// CacheBudget is the cache's byte budget (cache.Config.MaxBytes) under a Go memory limit of
// goLimit bytes: half of it less the base heap. Half, because with GOGC=100 the heap grows to
// twice what is live between collections; a live heap near the limit would make the collector
// run continuously instead. 0 when goLimit leaves nothing for the cache.
func CacheBudget(goLimit int64) int64 { return max(goLimit/2-baseHeap, 0) }

// Fit reports whether size cache entries of perEntry bytes each fit budget bytes, and the
// largest size that does.
func Fit(size int, perEntry, budget int64) (largest int, ok bool) {
	n := budget / perEntry
	return int(min(n, math.MaxInt32)), int64(size) <= n
}

// Plan is what Apply found and set.
type Plan struct {
	Cgroup Limit
	// GoLimit is the Go runtime's memory limit in effect, bytes; 0 when none.
	GoLimit int64
	// GoLimitFrom says where GoLimit came from: "GOMEMLIMIT" (the user's, left alone), "cgroup"
	// (Cgroup less Headroom, set by Apply) or "none".
	GoLimitFrom string
	// CacheBudget is CacheBudget(GoLimit); 0 when there is no limit (the cache is bounded by
	// its size only).
	CacheBudget int64
}

// Apply reads the limit below root and sets the Go runtime's memory limit to the container
// limit less Headroom, unless the user set GOMEMLIMIT (gomemlimit, the variable's value; the
// runtime has applied it already). readErr is a cgroup file that could not be read; Apply then
// goes on as if there were no container limit.
func Apply(root, gomemlimit string) (p Plan, readErr error) {
	p.Cgroup, readErr = Read(root)
	switch {
	case gomemlimit != "":
		p.GoLimitFrom = "GOMEMLIMIT"
		if cur := debug.SetMemoryLimit(-1); cur != math.MaxInt64 {
			p.GoLimit = cur
		}
	case p.Cgroup.Bytes > 0:
		p.GoLimitFrom = "cgroup"
		p.GoLimit = max(p.Cgroup.Bytes-Headroom(p.Cgroup.Bytes), 1)
		debug.SetMemoryLimit(p.GoLimit)
	default:
		p.GoLimitFrom = "none"
	}
	if p.GoLimit > 0 {
		p.CacheBudget = CacheBudget(p.GoLimit)
	}
	return p, readErr
}
