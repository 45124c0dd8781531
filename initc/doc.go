// Command initc is podns's init container: it saves the pod's resolv.conf (as the kubelet wrote
// it) to the state dir shared with the stub, then rewrites resolv.conf in place to point at the
// stub on loopback. In a hostNetwork pod it leaves resolv.conf alone and disables podns.
// Every knob is a PODNS_* environment variable; `initc -help` lists them.
//
// It runs once per pod start, before the app and the stub, through the pod's bind-mounted
// /etc/resolv.conf, so that every container of the pod resolves through the stub on loopback. It
// runs as root (the file is root-owned, 0644) and exits.
//
// A pod in the webhook's restricted mode (no root container: Pod Security restricted) has no
// initc: the pod gets dnsPolicy None and a dnsConfig the kubelet writes as the same file initc
// would (nameserver 127.0.0.1, the kubelet's search list, ndots:5 timeout:1 attempts:3), and the
// stub takes its upstream from PODNS_UPSTREAMS instead of upstream.conf, and checks it at start
// with PODNS_READY_CHECK_NAME.
//
// # Configuration
//
// All environment variables: their defaults, allowed values and meanings are in the generated
// configuration reference (docs/configuration.md, section "initc"), which initc -help prints as
// text. An empty value counts as unset (caarlos0/env), so a feature is switched off with the word
// off.
//
// PODNS_OPTIONS words: ndots:0–ndots:15, timeout:1–timeout:30, attempts:1–attempts:5 (glibc's
// limits; musl reads the same three), and flags without a value (rotate, edns0,
// single-request-reopen, use-vc, trust-ad, no-aaaa, …: any lower-case name of letters, digits and
// -, since newer glibc releases add flags; a misspelt flag is therefore not caught). A name given
// twice is an error.
//
// Every bad variable is reported at once, one line each, naming the variable, its value and the
// allowed values; initc then exits 2 without touching anything:
//
//	initc: invalid configuration:
//	PODNS_NAMESERVER="localhost": not an IP address (allowed: IPv4 or IPv6 address, no zone)
//	PODNS_OPTIONS="ndots:16": "ndots:16": ndots takes a number from 0 to 15 (allowed: space-separated resolv.conf options, or off)
//
// # What it writes
//
// For the kubelet's ClusterFirst file
//
//	search default.svc.cluster.local svc.cluster.local cluster.local
//	nameserver 10.96.0.10
//	options ndots:5
//
// /etc/resolv.conf becomes
//
//	# podns: nameserver is the pod-local DNS cache; the kubelet's original is /run/podns/upstream.conf
//	nameserver 127.0.0.1
//	search default.svc.cluster.local svc.cluster.local cluster.local
//	options ndots:5 timeout:1 attempts:3
//
// and /run/podns/upstream.conf holds the original, byte for byte (mode 0644: the stub reads it as
// uid 65532).
//
//   - nameserver: only PODNS_NAMESERVER. The original's nameservers (all of them, beyond
//     glibc's three) stay in upstream.conf, where the stub reads them.
//   - search / domain: every search and domain line the resolvers read is copied unchanged and
//     in order (the last one still wins), trailing comments included; a CRLF line ending is
//     normalized to LF, because glibc would otherwise take the \r as part of the last domain.
//     Lines resolvers ignore (indented, or longer than 4096 bytes) are not copied.
//   - options, merged: an option named in PODNS_OPTIONS takes that value at the place of its
//     first occurrence and its repetitions are dropped (glibc reads the last occurrence, musl
//     the first of a line: after the merge both read the same); PODNS_OPTIONS's other options
//     are appended; every other option of the kubelet's (ndots, edns0, …) is kept as written,
//     all on one options line. ndots is therefore kept unless PODNS_OPTIONS names it.
//   - Everything else (comments, sortlist, unknown keywords) is dropped.
//
// Before anything is written the new content is parsed back and must give exactly one nameserver,
// PODNS_NAMESERVER, the original's search list, and the merged options; otherwise initc refuses.
//
// # Behaviour per case
//
// initc first decides which file is the kubelet's original: the current resolv.conf if it has a
// nameserver and none of them is PODNS_NAMESERVER; otherwise the saved upstream.conf.
//
//   - first run: a kubelet file — what initc does: saves it to upstream.conf (temp file +
//     rename in the state dir, fsync), rewrites resolv.conf in place; exit: 0
//   - rerun (init containers rerun when the sandbox is recreated): resolv.conf already
//     podns's, upstream.conf present — what initc does: keeps upstream.conf; renders the
//     rewrite from it again; if resolv.conf already says exactly that, writes nothing
//     ("action":"unchanged"); exit: 0
//   - resolv.conf points at podns but differs from the rewrite (edited), or is empty (a write
//     cut short), and upstream.conf is present — what initc does: rewrites from the saved
//     original; exit: 0
//   - resolv.conf is a kubelet file different from upstream.conf (the kubelet wrote a new one
//     for a new sandbox) — what initc does: saves the new original over the old copy
//     ("upstream_conf_state":"replaced"), rewrites; exit: 0
//   - hostNetwork: PODNS_POD_IP = PODNS_HOST_IP — what initc does: leaves resolv.conf alone,
//     writes the disabled marker, logs a warning; exit: 0
//   - every nameserver is the unspecified address (0.0.0.0, ::): it reaches the pod itself, so
//     the stub could only forward to itself — what initc does: leaves resolv.conf alone (the
//     pod resolves as without podns), writes the disabled marker with the reason, logs a
//     warning; with another nameserver beside it the file is rewritten and the stub skips the
//     unspecified one; exit: 0
//   - a disabled marker exists but the pod is not hostNetwork — what initc does: removes the
//     stale marker (else the stub would not serve DNS while resolv.conf points at it), then as
//     above; exit: 0
//   - no usable nameserver line (empty file, names instead of addresses, only indented lines)
//     — what initc does: refuses: nothing to forward to; exit: 1
//   - resolv.conf already names PODNS_NAMESERVER (alone or among others) and there is no
//     upstream.conf — what initc does: refuses: nothing to forward to (the stub would forward
//     to itself); exit: 1
//   - upstream.conf unreadable, not a resolv.conf, without nameserver, or itself pointing at
//     podns, while resolv.conf holds no new original — what initc does: refuses; exit: 1
//   - not a resolv.conf: a NUL byte, invalid UTF-8, over 64 KiB — what initc does: refuses;
//     exit: 1
//   - resolv.conf missing or unreadable, mounted read-only, state dir not writable — what
//     initc does: fails; exit: 1
//   - bad configuration — what initc does: reports every bad variable; exit: 2
//
// On exit 1 resolv.conf is byte-identical to what it was, and upstream.conf is written only when
// the rewrite has been validated and resolv.conf opened for writing: the order is read, decide,
// render, validate, open, save, write. The write itself is truncate, one write, fsync on the file
// opened in place — never a rename, which fails on the bind-mounted file (EBUSY) and would not be
// seen through it. If that write fails after the truncate, initc writes the previous content back
// and says so.
//
// The init container must not set readOnlyRootFilesystem: true: containerd and CRI-O then mount
// /etc/resolv.conf read-only too, and initc refuses with /etc/resolv.conf: is mounted read-only
// (readOnlyRootFilesystem: true makes the runtime mount it so; the init container needs false). It
// needs no capability (drop: [ALL]) and runs with allowPrivilegeEscalation: false: as uid 0 it
// owns the root-owned 0644 file. Not verified: user-namespaced pods (hostUsers: false), where the
// kubelet's file may not be owned by the container's root.
//
// Without PODNS_POD_IP and PODNS_HOST_IP (both set by the component's manifests through the
// downward API) the hostNetwork check cannot run; initc then proceeds and its log line is a
// warning carrying "hostnetwork_check":"off: ...".
//
// # Exit codes
//
// 0 done, 1 refused or failed (resolv.conf untouched), 2 bad configuration: each with its cases in
// the configuration reference (docs/configuration.md, section "initc").
//
// A non-zero exit keeps the pod from starting, on purpose: an app whose resolv.conf pointed at a
// stub with nothing to forward to would fail later and less clearly. Set terminationMessagePolicy:
// FallbackToLogsOnError on the container to see the reason in kubectl describe pod.
//
// # The disabled marker
//
// $PODNS_STATE_DIR/disabled, mode 0644, content: one line, the reason, e.g.
//
//	hostNetwork pod (PODNS_POD_IP 192.168.1.10 = PODNS_HOST_IP): the pod shares the node's loopback and port 53; podns left /etc/resolv.conf alone
//
// When it exists the stub stays up so the pod's probes pass, but binds no DNS port. Only initc
// writes it (hostNetwork) and removes it (any later run in a pod that is not hostNetwork). The
// kubelet rejects the net.ipv4.ip_unprivileged_port_start sysctl the stub needs on hostNetwork
// pods, so such pods must carry the opt-out label podns.io/inject: "false"; the marker is the
// defence in depth for hand-written manifests.
//
// # Log
//
// One line per run (zerolog, JSON by default). A rewrite:
//
//	{"level":"info","component":"initc","version":"v0.1.0","action":"rewritten","resolv_conf":"/etc/resolv.conf",
//	 "read":{"nameservers":["10.96.0.10"],"search":["default.svc.cluster.local","svc.cluster.local","cluster.local"],"options":["ndots:5","timeout:5"]},
//	 "upstream_conf":"/run/podns/upstream.conf","upstream_conf_state":"saved",
//	 "wrote":{"nameserver":"127.0.0.1","options":["ndots:5","timeout:1","attempts:3"]},
//	 "options_changed":["timeout:5->timeout:1","+attempts:3"],"stale_marker_removed":false,
//	 "time":"2026-11-22T11:56:52Z","message":"resolv.conf rewritten to use podns"}
//
// action is rewritten, unchanged (rerun) or disabled (a warning line); upstream_conf_state is
// saved, kept or replaced; options_changed entries are old->new, +added and -dropped (repeated). A
// refusal is one error line whose message names the file and the problem:
//
//	{"level":"error","component":"initc","version":"v0.1.0","resolv_conf":"/etc/resolv.conf","state_dir":"/run/podns","message":"/etc/resolv.conf: nameserver is already 127.0.0.1 (PODNS_NAMESERVER) but no saved original exists in /run/podns/upstream.conf: nothing to forward to"}
//
// # How resolv.conf is parsed
//
// internal/resolvconf (shared with the stub, so both read the same nameservers) follows glibc
// where glibc and musl agree: a keyword must start the line and be followed by a blank (indented
// lines are ignored, as both libcs ignore them); # and ; start a comment, at the start of a line
// or after a value; CRLF and a missing final newline are fine; a nameserver that is not an address
// is skipped, duplicates are dropped, IPv6 and scoped (fe80::1%eth0) addresses are kept; the last
// search or domain line sets the search list; every options line counts; ndots is clamped to 0–15.
// Lines over 4096 bytes are ignored whole (as musl ignores a line it would truncate); a file over
// 64 KiB, or with a NUL byte or invalid UTF-8, is refused.
//
// # Code
//
//   - initc/ — main: flags, configuration, one log line, exit code.
//   - initc/config — the Config struct, its validation, PODNS_OPTIONS parsing.
//   - initc/rewrite — pure: renders and validates the new resolv.conf (Render, Merge,
//     PointsAt).
//   - initc/apply — the file work: which file is the original, save, marker, in-place write.
//
// # Tests
//
// go test -race ./initc/... ./internal/resolvconf/: table tests of the rewrite over kubelet
// outputs for every dnsPolicy, IPv6, 32+ search domains, comments, CRLF, no final newline, four
// nameservers, empty files and binary garbage; table tests of every case above on real files
// (inode kept, content, saved original, a second run changes nothing, every refusal leaves all
// three files byte-identical); FuzzParse and FuzzRender. As root, TestBindMountedResolvConf builds
// the binary and runs it in a private mount namespace with a file bind-mounted over
// /etc/resolv.conf (and checks that a rename onto it fails with EBUSY, as in a container), also
// with that mount read-only.
package main
