package kube

// What one more pod costs with podns (issue 17): how much later its app starts, and how much
// memory its stub really takes. Both steps use bare pods made from one template rendered with and
// without the component (manifests/overlays/startup), in namespace e2e-startup.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	costNS = "e2e-startup"
	// Rounds of pods created together, each round costPerRound pods of each kind (one with podns,
	// one without), one round at a time: 20 of each kind in about 1 min on an idle machine.
	costRounds   = 10
	costPerRound = 2
	// Stubs whose cache the memory step fills, and with how many names (A and AAAA each: 2 entries
	// a name, so 5,000 names fill the default PODNS_CACHE_SIZE of 10,000).
	costFillPods  = 2
	costFillNames = 5000
)

// podTimes is what the driver saw of one pod of the start-up step.
type podTimes struct {
	kind string // "podns", "plain" (without podns) or "probe" (podns with a startupProbe instead of the hook)
	// Arrival times (time.Now in the driver) of the first watch event showing the pod scheduled
	// and the app container running.
	sched, running time.Time
	// The API's own timestamps (1 s resolution): PodScheduled's lastTransitionTime and the app
	// container's state.running.startedAt.
	schedAPI, startedAPI time.Time
	node                 string
	ids                  map[string]string // container name → containerd ID
	uid                  string
	stamp                time.Time // the app's own "started <ns>" line
}

type costState struct {
	pods  map[string]*podTimes
	names []string // creation order
	kinds []string
}

type ctrStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	State       struct {
		Running *struct {
			StartedAt time.Time `json:"startedAt"`
		} `json:"running"`
	} `json:"state"`
}

type podJSON struct {
	Metadata struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Conditions []struct {
			Type               string    `json:"type"`
			Status             string    `json:"status"`
			LastTransitionTime time.Time `json:"lastTransitionTime"`
		} `json:"conditions"`
		ContainerStatuses     []ctrStatus `json:"containerStatuses"`
		InitContainerStatuses []ctrStatus `json:"initContainerStatuses"`
	} `json:"status"`
}

// podWatch follows the namespace's pods through a raw watch and timestamps what it sees on
// arrival: the scheduler's binding and the kubelet's status updates reach the driver within a few
// ms of being written, far finer than the API's own 1 s timestamps.
type podWatch struct {
	mu      sync.Mutex
	pods    map[string]*podTimes
	changed chan struct{}
	cancel  context.CancelFunc
	done    chan error
}

func startWatch(t *testing.T, ns string, pods map[string]*podTimes) *podWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &podWatch{pods: pods, changed: make(chan struct{}, 1), cancel: cancel, done: make(chan error, 1)}
	cmd := exec.CommandContext(ctx, "kubectl", "get", "--raw",
		"/api/v1/namespaces/"+ns+"/pods?watch=1&timeoutSeconds=900")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		dec := json.NewDecoder(bufio.NewReader(out))
		for {
			var ev struct {
				Type   string  `json:"type"`
				Object podJSON `json:"object"`
			}
			if err := dec.Decode(&ev); err != nil {
				break
			}
			now := time.Now()
			w.observe(now, &ev.Object)
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
		w.done <- cmd.Wait()
	}()
	return w
}

func (w *podWatch) observe(now time.Time, p *podJSON) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pt := w.pods[p.Metadata.Name]
	if pt == nil {
		return
	}
	pt.uid = p.Metadata.UID
	for _, c := range p.Status.Conditions {
		if c.Type == "PodScheduled" && c.Status == "True" && pt.sched.IsZero() {
			pt.sched, pt.schedAPI, pt.node = now, c.LastTransitionTime, p.Spec.NodeName
		}
	}
	for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if c.ContainerID != "" {
			pt.ids[c.Name] = strings.TrimPrefix(c.ContainerID, "containerd://")
		}
		if c.Name == "app" && c.State.Running != nil && pt.running.IsZero() {
			pt.running, pt.startedAPI = now, c.State.Running.StartedAt
		}
	}
}

// waitRunning waits until every named pod's app container was seen running.
func (w *podWatch) waitRunning(t *testing.T, limit time.Duration, names ...string) {
	t.Helper()
	deadline := time.After(limit)
	for {
		w.mu.Lock()
		all := true
		for _, n := range names {
			all = all && !w.pods[n].running.IsZero()
		}
		w.mu.Unlock()
		if all {
			return
		}
		select {
		case <-w.changed:
		case err := <-w.done:
			t.Fatalf("the pod watch ended: %v", err)
		case <-deadline:
			t.Fatalf("pods %v: app not running after %s", names, limit)
		}
	}
}

func (w *podWatch) stop() { w.cancel() }

// podTemplate returns the pod template of a Deployment of the startup overlay, as applied.
func podTemplate(t *testing.T, deploy string) map[string]any {
	var d struct {
		Spec struct {
			Template map[string]any `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "-n", costNS, "get", "deploy", deploy, "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template
}

func podFrom(tpl map[string]any, name string) map[string]any {
	meta, _ := tpl["metadata"].(map[string]any)
	m := map[string]any{"name": name, "namespace": costNS}
	if meta != nil {
		m["labels"] = meta["labels"]
	}
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": tpl["spec"]}
}

func (e *env) costStartup(t *testing.T) {
	kubectl(t, "create", "namespace", costNS)
	kubectl(t, "label", "namespace", costNS, "podns.io/e2e=true")
	e.poll(time.Minute, "serviceaccount in "+costNS, func() bool {
		_, err := run(10*time.Second, "kubectl", "-n", costNS, "get", "serviceaccount", "default")
		return err == nil
	})
	kubectl(t, "apply", "-k", filepath.Join(e.manDir, "overlays", "startup"))
	with, without := podTemplate(t, "with-podns"), podTemplate(t, "without-podns")

	tpls := map[string]map[string]any{"podns": with, "plain": without}
	kinds := []string{"podns", "plain"}
	if os.Getenv("PODNS_E2E_COST_PROBE") == "1" {
		tpls["probe"] = withStartupProbe(t, with)
		kinds = append(kinds, "probe")
	}
	cs := &costState{pods: map[string]*podTimes{}, kinds: kinds}
	for i := 0; i < costRounds*costPerRound; i++ {
		for _, k := range kinds {
			cs.pods[fmt.Sprintf("%s-%02d", k, i)] = &podTimes{kind: k, ids: map[string]string{}}
		}
	}
	w := startWatch(t, costNS, cs.pods)
	defer w.stop()
	// One round at a time, each round's pods created together and waited for: the kinds meet the
	// same load (and the same machine noise), and no pod's start is stretched by a backlog of
	// earlier ones. With PODNS_E2E_COST_PROBE=1 a round has a third pod: podns with the stub's
	// former startupProbe instead of its postStart hook.
	dir := t.TempDir()
	for i := 0; i < costRounds; i++ {
		var items []any
		var round []string
		for j := range costPerRound * len(kinds) {
			// Rotate which kind the API server and the kubelet see first.
			k := kinds[(i+j)%len(kinds)]
			n := fmt.Sprintf("%s-%02d", k, i*costPerRound+j/len(kinds))
			items = append(items, podFrom(tpls[k], n))
			round = append(round, n)
		}
		f := filepath.Join(dir, fmt.Sprintf("round-%02d.json", i))
		bs, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
		os.WriteFile(f, bs, 0o644)
		kubectl(t, "create", "-f", f)
		w.waitRunning(t, 2*time.Minute, round...)
		cs.names = append(cs.names, round...)
	}
	e.cost = cs

	// The app's own start stamp, from its log file as the kubelet keeps it (podLogsDir in
	// hack/cluster.sh; CRI format "<time> stdout F started <ns>").
	stampRE := regexp.MustCompile(`(?m) stdout F started (\d+)$`)
	for _, n := range cs.names {
		p := cs.pods[n]
		f := filepath.Join(e.work, "pod-logs", costNS+"_"+n+"_"+p.uid, "app", "0.log")
		var m []string
		e.poll(30*time.Second, "the start stamp in "+f, func() bool {
			b, _ := os.ReadFile(f)
			m = stampRE.FindStringSubmatch(string(b))
			return m != nil
		})
		ns, _ := strconv.ParseInt(m[1], 10, 64)
		p.stamp = time.Unix(0, ns)
	}
	ev := containerdEvents(t, filepath.Join(e.work, "logs", "containerd.log"))
	rep := startupReport(cs, ev)
	t.Log("\n" + rep)
	e.writeResults("startup", rep)
}

// deletePods deletes pods without waiting: the kubelet stops them while the suite goes on (and a
// teardown with ~60 more containers to stop takes minutes on a loaded machine).
func deletePods(t *testing.T, names []string) {
	kubectl(t, append([]string{"-n", costNS, "delete", "pod", "--grace-period=1", "--wait=false"}, names...)...)
}

// ctrdEvents holds the containerd CRI log's ns-resolution times of each pod's sandbox and
// containers (containerd logs each CRI call at info level, with the request and the return).
type ctrdEvents struct {
	sandboxDone map[string]time.Time // pod name → RunPodSandbox returned
	sandboxOf   map[string]string    // pod name → sandbox ID
	createReq   map[string]time.Time // sandbox ID + "/" + container name → CreateContainer requested
	started     map[string]time.Time // container ID → StartContainer returned
	exited      map[string]time.Time // container ID → its shim disconnected (the process exited)
}

func containerdEvents(t *testing.T, path string) *ctrdEvents {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ev := &ctrdEvents{map[string]time.Time{}, map[string]string{}, map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}}
	timeRE := regexp.MustCompile(`^time="([^"]+)"`)
	sandboxRE := regexp.MustCompile(`RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),Uid:[^,]*,Namespace:` + costNS + `,Attempt:0,\} returns sandbox id \\"([0-9a-f]+)\\"`)
	createRE := regexp.MustCompile(`CreateContainer within sandbox \\"([0-9a-f]+)\\" for container &ContainerMetadata\{Name:([^,]+),Attempt:0,\}`)
	startRE := regexp.MustCompile(`StartContainer for \\"([0-9a-f]+)\\" returns successfully`)
	exitRE := regexp.MustCompile(`msg="shim disconnected" id=([0-9a-f]+)`)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		tm := timeRE.FindStringSubmatch(l)
		if tm == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, tm[1])
		if err != nil {
			continue
		}
		if m := sandboxRE.FindStringSubmatch(l); m != nil {
			ev.sandboxDone[m[1]], ev.sandboxOf[m[1]] = at, m[2]
		} else if m := createRE.FindStringSubmatch(l); m != nil {
			ev.createReq[m[1]+"/"+m[2]] = at
		} else if m := startRE.FindStringSubmatch(l); m != nil {
			ev.started[m[1]] = at
		} else if m := exitRE.FindStringSubmatch(l); m != nil {
			if _, seen := ev.exited[m[1]]; !seen {
				ev.exited[m[1]] = at
			}
		}
	}
	return ev
}

// phase is one stretch of a pod's start, between two of its events.
type phase struct {
	what     string
	from, to func(p *podTimes, name string) time.Time
}

func startupReport(cs *costState, ev *ctrdEvents) string {
	created := func(c string) func(*podTimes, string) time.Time {
		return func(p *podTimes, n string) time.Time { return ev.createReq[ev.sandboxOf[n]+"/"+c] }
	}
	started := func(c string) func(*podTimes, string) time.Time {
		return func(p *podTimes, n string) time.Time { return ev.started[p.ids[c]] }
	}
	exited := func(c string) func(*podTimes, string) time.Time {
		return func(p *podTimes, n string) time.Time { return ev.exited[p.ids[c]] }
	}
	sched := func(p *podTimes, _ string) time.Time { return p.sched }
	sandbox := func(_ *podTimes, n string) time.Time { return ev.sandboxDone[n] }
	stamp := func(p *podTimes, _ string) time.Time { return p.stamp }
	withPhases := []phase{
		{"scheduled → sandbox ready (kubelet, CNI)", sched, sandbox},
		{"sandbox → podns-init create requested", sandbox, created("podns-init")},
		{"podns-init create + start", created("podns-init"), started("podns-init")},
		{"podns-init runs, exits", started("podns-init"), exited("podns-init")},
		{"podns-init exited → stub create requested (kubelet relist, sync)", exited("podns-init"), created("podns-stub")},
		{"podns-stub create + start", created("podns-stub"), started("podns-stub")},
		{"stub started → app create requested (stub ready: postStart hook or startupProbe; kubelet sync)", started("podns-stub"), created("app")},
		{"app create + start", created("app"), started("app")},
		{"app start returned → app's own stamp", started("app"), stamp},
	}
	withoutPhases := []phase{
		{"scheduled → sandbox ready (kubelet, CNI)", sched, sandbox},
		{"sandbox → app create requested", sandbox, created("app")},
		{"app create + start", created("app"), started("app")},
		{"app start returned → app's own stamp", started("app"), stamp},
	}
	var b strings.Builder
	total := func(kind string) (d []time.Duration, api []time.Duration) {
		for _, n := range cs.names {
			if p := cs.pods[n]; p.kind == kind {
				d = append(d, p.stamp.Sub(p.sched))
				api = append(api, p.startedAPI.Sub(p.schedAPI))
			}
		}
		return d, api
	}
	o, oAPI := total("plain")
	fmt.Fprintf(&b, "Pod start, scheduled → app running, %d rounds of %d pods of each kind created together, one round at a time:\n", costRounds, costPerRound)
	fmt.Fprintf(&b, "(scheduled: the driver's receipt of the watch event binding the pod; running: the app process's own\n")
	fmt.Fprintf(&b, "realtime stamp at start; same clock, ms resolution)\n\n")
	fmt.Fprintf(&b, "| | median | max | added at the median | ratio | median of the differences to the plain pod of the same number | API timestamps (1 s), median |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| without podns | %s | %s | | | | %s |\n", ms(median(o)), ms(slices.Max(o)), ms(median(oAPI)))
	for _, k := range cs.kinds {
		if k == "plain" {
			continue
		}
		w, wAPI := total(k)
		var diff []time.Duration
		for i := 0; i < costRounds*costPerRound; i++ {
			a, c := cs.pods[fmt.Sprintf("%s-%02d", k, i)], cs.pods[fmt.Sprintf("plain-%02d", i)]
			diff = append(diff, a.stamp.Sub(a.sched)-c.stamp.Sub(c.sched))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** | %.2f | %s (max %s) | %s |\n", kindTitle[k], ms(median(w)), ms(slices.Max(w)),
			ms(median(w)-median(o)), ratio(median(w), median(o)), ms(median(diff)), ms(slices.Max(diff)), ms(median(wAPI)))
	}
	b.WriteString("\n")
	for _, k := range cs.kinds {
		phases := withPhases
		if k == "plain" {
			phases = withoutPhases
		}
		fmt.Fprintf(&b, "Where the time goes, %s (containerd's CRI log, ns):\n\n| phase | median | max |\n|---|---|---|\n", kindTitle[k])
		for _, ph := range phases {
			var ds []time.Duration
			for _, n := range cs.names {
				p := cs.pods[n]
				if p.kind != k {
					continue
				}
				if f, t := ph.from(p, n), ph.to(p, n); !f.IsZero() && !t.IsZero() {
					ds = append(ds, t.Sub(f))
				}
			}
			if len(ds) == 0 {
				fmt.Fprintf(&b, "| %s | – | – |\n", ph.what)
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", ph.what, ms(median(ds)), ms(slices.Max(ds)))
		}
		b.WriteString("\n")
	}
	return b.String()
}

var kindTitle = map[string]string{
	"podns": "with podns", "plain": "without podns", "probe": "with podns, startupProbe instead of the postStart hook",
}

// withStartupProbe is the podns template with the stub's former start gate: no postStart hook,
// a startupProbe on /readyz every 1 s (the API's minimum period), 30 failures allowed.
func withStartupProbe(t *testing.T, tpl map[string]any) map[string]any {
	bs, _ := json.Marshal(tpl)
	var c map[string]any
	json.Unmarshal(bs, &c)
	spec := c["spec"].(map[string]any)
	for _, ic := range spec["initContainers"].([]any) {
		m := ic.(map[string]any)
		if m["name"] != "podns-stub" {
			continue
		}
		delete(m, "lifecycle")
		m["startupProbe"] = map[string]any{
			"httpGet":       map[string]any{"path": "/readyz", "port": "podns-http"},
			"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 30,
		}
		return c
	}
	t.Fatal("no podns-stub in the template")
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// writeResults appends a section to the run's results file, which the teardown keeps with the
// logs ($KUBE_WORK.logs/cost.md).
func (e *env) writeResults(title, body string) {
	f, err := os.OpenFile(filepath.Join(e.work, "logs", "cost.md"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.t.Logf("results file: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "## %s (%s)\n\n%s\n", title, time.Now().UTC().Format(time.RFC3339), body)
}

// memSample is one stub's memory as the node sees it, in bytes.
type memSample struct {
	rss, pss, uss, anon int64 // smaps_rollup: Rss, Pss, Private_Clean+Private_Dirty, Anonymous
	workingSet          int64 // the container's cgroup: usage less inactive file pages, as the kubelet counts it
	kubelet             int64 // the kubelet's /stats/summary workingSetBytes for the container (cAdvisor, refreshed every ~10 s)
}

// smapsRollup reads the fields of /proc/PID/smaps_rollup (kB) as bytes.
func smapsRollup(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			m[strings.TrimSuffix(f[0], ":")] = v << 10
		}
	}
	return m, nil
}

// workingSet computes the kubelet's working set of the process's memory cgroup: usage less the
// inactive file pages (cgroup v1: memory.usage_in_bytes − total_inactive_file; v2: memory.current
// − inactive_file), what the kubelet compares with the container's limit and evicts on.
func workingSet(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	read := func(p string) (int64, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	stat := func(p, key string) (int64, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == key {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
		return 0, fmt.Errorf("%s: no %s", p, key)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		var usage, inactive int64
		var err1, err2 error
		switch {
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			dir := filepath.Join("/sys/fs/cgroup/memory", f[2])
			usage, err1 = read(filepath.Join(dir, "memory.usage_in_bytes"))
			inactive, err2 = stat(filepath.Join(dir, "memory.stat"), "total_inactive_file")
		case f[0] == "0" && f[1] == "":
			dir := filepath.Join("/sys/fs/cgroup", f[2])
			if _, err := os.Stat(filepath.Join(dir, "memory.current")); err != nil {
				continue
			}
			usage, err1 = read(filepath.Join(dir, "memory.current"))
			inactive, err2 = stat(filepath.Join(dir, "memory.stat"), "inactive_file")
		default:
			continue
		}
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("%v %v", err1, err2)
		}
		return max(usage-inactive, 0), nil
	}
	return 0, fmt.Errorf("pid %d: no memory cgroup", pid)
}

// kubeletWorkingSets returns the kubelet's working set of every container and pod in costNS:
// "pod/container" and "pod" → bytes.
func kubeletWorkingSets(t *testing.T, node string) map[string]int64 {
	var s struct {
		Pods []struct {
			PodRef struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"podRef"`
			Containers []struct {
				Name   string `json:"name"`
				Memory struct {
					WorkingSetBytes int64 `json:"workingSetBytes"`
				} `json:"memory"`
			} `json:"containers"`
			Memory struct {
				WorkingSetBytes int64 `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"pods"`
	}
	out := kubectl(t, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/stats/summary")
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats/summary: %v", err)
	}
	ws := map[string]int64{}
	for _, p := range s.Pods {
		if p.PodRef.Namespace != costNS {
			continue
		}
		ws[p.PodRef.Name] = p.Memory.WorkingSetBytes
		for _, c := range p.Containers {
			ws[p.PodRef.Name+"/"+c.Name] = c.Memory.WorkingSetBytes
		}
	}
	return ws
}

// taskPIDs maps containerd's running tasks to their host PIDs.
func (e *env) taskPIDs(t *testing.T) map[string]int {
	out, err := run(30*time.Second, "ctr", "--address", filepath.Join(e.work, "containerd.sock"), "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "RUNNING" {
			pids[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	return pids
}

// stubMemory samples every named pod's stub.
func (e *env) stubMemory(t *testing.T, names []string) map[string]memSample {
	cs := e.cost
	pids := e.taskPIDs(t)
	ws := kubeletWorkingSets(t, cs.pods[names[0]].node)
	out := map[string]memSample{}
	for _, n := range names {
		pid := pids[cs.pods[n].ids["podns-stub"]]
		if pid == 0 {
			t.Fatalf("%s: the stub's task is not running", n)
		}
		sm, err := smapsRollup(pid)
		if err != nil {
			t.Fatal(err)
		}
		w, err := workingSet(pid)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = memSample{rss: sm["Rss"], pss: sm["Pss"], uss: sm["Private_Clean"] + sm["Private_Dirty"] + sm["Private_Hugetlb"],
			anon: sm["Anonymous"], workingSet: w, kubelet: ws[n+"/podns-stub"]}
	}
	return out
}

func (e *env) costMemory(t *testing.T) {
	cs := e.cost
	if cs == nil {
		t.Skip("the start-up step did not create the pods")
	}
	var injected, plain, others []string
	stubs := 0 // processes mapping the stub's binary on the node
	for _, n := range cs.names {
		switch cs.pods[n].kind {
		case "podns":
			injected = append(injected, n)
		case "plain":
			plain = append(plain, n)
		}
		if cs.pods[n].kind != "podns" {
			others = append(others, n)
		}
		if cs.pods[n].kind != "plain" {
			stubs++
		}
	}
	idle := e.stubMemory(t, injected)
	podWS := kubeletWorkingSets(t, cs.pods[injected[0]].node)

	deletePods(t, others)
	defer deletePods(t, injected)

	filled := injected[:costFillPods]
	fillOut := make([]string, len(filled))
	fillErr := make([]error, len(filled))
	var wg sync.WaitGroup
	for i, n := range filled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fillOut[i], fillErr[i] = run(3*time.Minute, "kubectl", "-n", costNS, "exec", n, "-c", "app", "--",
				"/dnsclient", "fill", "-n", strconv.Itoa(costFillNames), "-c", "16", "fill.ext.podns.test.")
		}()
	}
	wg.Wait()
	entries := map[string]float64{}
	for i, n := range filled {
		if fillErr[i] != nil {
			t.Fatal(fillErr[i])
		}
		t.Logf("%s: %s", n, strings.TrimSpace(fillOut[i]))
		entries[n] = metric(client(t, costNS, n, "app", "get", "http://127.0.0.1:9253/metrics"), "podns_cache_entries")
		// A and AAAA of each name (TTL 10 s: expired ones are kept for serve-stale until evicted).
		if entries[n] < 0.9*2*costFillNames {
			t.Errorf("%s: podns_cache_entries %v after filling %d names, want ≥ %v", n, entries[n], costFillNames, 0.9*2*costFillNames)
		}
	}
	full := e.stubMemory(t, filled)

	var b strings.Builder
	fmt.Fprintf(&b, "Memory per stub as the node sees it (MiB): %d stubs on the node, running the same image,\n", stubs)
	fmt.Fprintf(&b, "so the binary's file pages are shared %d ways (PSS) and not private (USS = Private_Clean + Private_Dirty).\n", stubs)
	fmt.Fprintf(&b, "Working set: the container's memory cgroup usage less inactive file pages, as the kubelet counts it against\n")
	fmt.Fprintf(&b, "the limit (in brackets: the kubelet's /stats/summary, refreshed every ~10 s).\n\n")
	fmt.Fprintf(&b, "| | RSS | PSS | USS (private) | anon | working set |\n|---|---|---|---|---|---|\n")
	row := func(what string, ss []memSample) {
		get := func(f func(memSample) int64) (med, mx float64) {
			var v []int64
			for _, s := range ss {
				v = append(v, f(s))
			}
			slices.Sort(v)
			return mibf(v[len(v)/2]), mibf(v[len(v)-1])
		}
		cell := func(f func(memSample) int64) string {
			m, x := get(f)
			return fmt.Sprintf("%.2f (max %.2f)", m, x)
		}
		km, _ := get(func(s memSample) int64 { return s.kubelet })
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s [%.2f] |\n", what,
			cell(func(s memSample) int64 { return s.rss }), cell(func(s memSample) int64 { return s.pss }),
			cell(func(s memSample) int64 { return s.uss }), cell(func(s memSample) int64 { return s.anon }),
			cell(func(s memSample) int64 { return s.workingSet }), km)
	}
	var all, fullS, before []memSample
	for _, n := range injected {
		all = append(all, idle[n])
	}
	for _, n := range filled {
		fullS = append(fullS, full[n])
		before = append(before, idle[n])
	}
	row(fmt.Sprintf("idle, median of %d stubs", len(all)), all)
	row(fmt.Sprintf("the same %d stubs, idle", len(filled)), before)
	row(fmt.Sprintf("after %d names (A + AAAA: %.0f entries)", costFillNames, entries[filled[0]]), fullS)
	var wPods, oPods []int64
	for _, n := range injected {
		wPods = append(wPods, podWS[n])
	}
	for _, n := range plain {
		oPods = append(oPods, podWS[n])
	}
	slices.Sort(wPods)
	slices.Sort(oPods)
	wm, om := wPods[len(wPods)/2], oPods[len(oPods)/2]
	fmt.Fprintf(&b, "\nWhole pod, kubelet's working set at idle (median): with podns %.2f MiB, without %.2f MiB, added %.2f MiB (ratio %.1f)\n",
		mibf(wm), mibf(om), mibf(wm-om), float64(wm)/float64(max(om, 1)))
	rep := b.String()
	t.Log("\n" + rep)
	e.writeResults("memory", rep)
}

func mibf(b int64) float64 { return float64(b) / (1 << 20) }
