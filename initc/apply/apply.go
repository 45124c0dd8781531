// Package apply does initc's work on the pod's files: save the kubelet's resolv.conf to the
// state dir once, rewrite resolv.conf in place, or disable podns for a pod it cannot serve (a
// hostNetwork pod, or one whose every nameserver is the unspecified address).
//
// The order of operations is what makes a failure harmless: everything is read, decided,
// rendered and validated first, and resolv.conf is opened for writing (a read-only mount
// fails here); then the original is saved (atomically, inside the state dir); only then is
// resolv.conf itself truncated, written once and fsynced (it is a bind mount: rename onto it
// fails with EBUSY). Any error before that last step leaves resolv.conf byte-identical.
package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"syscall"

	"github.com/podns/podns/initc/rewrite"
	"github.com/podns/podns/internal/resolvconf"
	"github.com/podns/podns/internal/statedir"
)

// Params is one run's input.
type Params struct {
	ResolvConf string              // the file to rewrite in place
	StateDir   string              // where upstream.conf and the marker go; created if missing
	Nameserver netip.Addr          // the stub's address
	Options    []resolvconf.Option // merged over the original's options
	// HostNetwork is true when the downward API says pod IP == host IP.
	HostNetwork bool
	// HostNetworkReason is the marker's text when HostNetwork is true.
	HostNetworkReason string
}

// Action says what a run did to resolv.conf.
type Action string

// The actions of a successful run.
const (
	Rewritten Action = "rewritten" // resolv.conf now points at podns
	Unchanged Action = "unchanged" // it already did, byte for byte: a rerun; nothing written
	Disabled  Action = "disabled"  // resolv.conf untouched, marker written; Report.Reason says why
)

// Saved says what happened to upstream.conf.
type Saved string

// The states of upstream.conf after a run.
const (
	SavedNew      Saved = "saved"    // the original was saved now
	SavedKept     Saved = "kept"     // an earlier run's copy was used and left alone
	SavedReplaced Saved = "replaced" // the kubelet wrote a new original (new sandbox); saved over the old copy
	SavedNone     Saved = "none"     // disabled: nothing saved
)

// Report is what a run did, for the log line.
type Report struct {
	Action   Action
	Saved    Saved
	Original *resolvconf.File // the kubelet's file podns forwards to (nil when disabled)
	Written  []byte           // the resolv.conf content now in place (nil when disabled)
	Options  []resolvconf.Option
	Changes  []string // option changes, see rewrite.Merge
	// Reason says why podns is disabled (Action Disabled); it is also the marker's text.
	Reason string
	// StaleMarkerRemoved is true when a disabled marker from an earlier run was removed
	// because this pod is not hostNetwork: left in place it would keep the stub from serving
	// DNS while resolv.conf points at it.
	StaleMarkerRemoved bool
}

// Error is a refusal or failure: the file it concerns and the problem. resolv.conf is
// unchanged unless Touched is true.
type Error struct {
	File    string
	Problem string
	Err     error
	Touched bool // resolv.conf was truncated and could not be restored: only after a write error
}

func (e *Error) Error() string {
	msg := e.File + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func fail(file, problem string, err error) error {
	return &Error{File: file, Problem: problem, Err: err}
}

// Run does one initc run. See the package doc for the order of operations and README for the
// behaviour in each case.
func Run(p Params) (Report, error) {
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return Report{}, fail(p.StateDir, "cannot create the state dir", err)
	}
	savedPath := statedir.UpstreamConfPath(p.StateDir)
	markerPath := statedir.DisabledMarkerPath(p.StateDir)

	if p.HostNetwork {
		return disable(p.StateDir, p.HostNetworkReason)
	}

	curData, cur, err := readConf(p.ResolvConf)
	if err != nil {
		return Report{}, err
	}

	origData, orig, saved, err := pickOriginal(p, curData, cur, savedPath)
	if err != nil {
		return Report{}, err
	}
	if !forwardable(orig) {
		// Without podns such a pod's lookups go to its own port 53, where nothing of the
		// cluster's listens; with podns the stub would forward to itself and refuse to start.
		// Leaving the file alone keeps the pod resolving exactly as it would without podns.
		return disable(p.StateDir, fmt.Sprintf("every nameserver of %s (%v) is the unspecified address, which reaches the pod itself, not a DNS server: the stub would forward to itself; podns left %s alone",
			p.ResolvConf, orig.Nameservers, p.ResolvConf))
	}

	res, err := rewrite.Render(origData, orig, p.Nameserver, p.Options, savedPath)
	if err != nil {
		return Report{}, fail(p.ResolvConf, "cannot rewrite", err)
	}
	rep := Report{Action: Rewritten, Saved: saved, Original: orig, Written: res.Content, Options: res.Options, Changes: res.Changes}

	// Open resolv.conf for writing before anything changes, so a read-only mount or a
	// permission problem is reported with nothing saved and nothing written.
	var out *os.File
	if !bytes.Equal(curData, res.Content) {
		out, err = openForWrite(p.ResolvConf)
		if err != nil {
			return Report{}, err
		}
		defer out.Close()
	}
	if saved != SavedKept {
		if err := statedir.SaveUpstreamConf(p.StateDir, origData); err != nil {
			return Report{}, fail(savedPath, "cannot save the original", err)
		}
	}
	if rep.StaleMarkerRemoved, err = statedir.RemoveDisabled(p.StateDir); err != nil {
		return Report{}, fail(markerPath, "cannot remove a stale disabled marker", err)
	}
	if out == nil {
		rep.Action = Unchanged
		return rep, nil
	}
	if err := writeInPlace(out, p.ResolvConf, res.Content, curData); err != nil {
		return Report{}, err
	}
	return rep, nil
}

// pickOriginal decides which file is the kubelet's original: the current resolv.conf, unless it is
// podns's own rewrite or has no nameserver (a rerun, or a write cut short); then the copy saved in
// the state dir. saved says what will become of the saved copy. An error names the file that
// makes the run impossible, before anything was written.
func pickOriginal(p Params, curData []byte, cur *resolvconf.File, savedPath string) (origData []byte, orig *resolvconf.File, saved Saved, err error) {
	if len(cur.Nameservers) > 0 && !rewrite.PointsAt(cur, p.Nameserver) {
		old, err := os.ReadFile(savedPath)
		switch {
		case err == nil && bytes.Equal(old, curData):
			return curData, cur, SavedKept, nil
		case err == nil:
			return curData, cur, SavedReplaced, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, nil, "", fail(savedPath, "cannot read the saved original", err)
		}
		return curData, cur, SavedNew, nil
	}
	origData, orig, err = readConf(savedPath)
	if errors.Is(err, fs.ErrNotExist) {
		if len(cur.Nameservers) == 0 {
			return nil, nil, "", fail(p.ResolvConf, "has no nameserver line: nothing to forward to", nil)
		}
		return nil, nil, "", fail(p.ResolvConf, fmt.Sprintf("nameserver is already %s (PODNS_NAMESERVER) but no saved original exists in %s: nothing to forward to", p.Nameserver, savedPath), nil)
	}
	if err != nil {
		return nil, nil, "", err
	}
	if !forwardable(orig) || rewrite.PointsAt(orig, p.Nameserver) {
		return nil, nil, "", fail(savedPath, fmt.Sprintf("saved original is unusable (nameservers %v) and %s does not hold a new one", orig.Nameservers, p.ResolvConf), nil)
	}
	return origData, orig, SavedKept, nil
}

// disable writes the disabled marker with reason and leaves resolv.conf alone: the stub then
// serves only its probes and the pod resolves as it would without podns.
func disable(stateDir, reason string) (Report, error) {
	if err := statedir.WriteDisabled(stateDir, reason); err != nil {
		return Report{}, fail(statedir.DisabledMarkerPath(stateDir), "cannot write the disabled marker", err)
	}
	return Report{Action: Disabled, Saved: SavedNone, Reason: reason}, nil
}

// forwardable reports whether f names a nameserver the stub can forward to: one that is not the
// unspecified address (0.0.0.0, ::, ::ffff:0.0.0.0), which Linux delivers to the local host (the
// stub's own listener). The stub skips such a nameserver when the file has another one
// (stub/config ResolveUpstreams).
func forwardable(f *resolvconf.File) bool {
	for _, a := range f.Nameservers {
		if !a.Unmap().IsUnspecified() {
			return true
		}
	}
	return false
}

// readConf reads and parses a resolv.conf, refusing what is not one. A file larger than
// resolvconf.MaxSize is not read beyond that.
func readConf(path string) ([]byte, *resolvconf.File, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, &Error{File: path, Problem: "does not exist", Err: fs.ErrNotExist}
		}
		return nil, nil, fail(path, "cannot read", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, resolvconf.MaxSize+1))
	if err != nil {
		return nil, nil, fail(path, "cannot read", err)
	}
	parsed, err := resolvconf.Parse(data)
	if err != nil {
		return nil, nil, fail(path, "refusing to rewrite", err)
	}
	return data, parsed, nil
}

// openForWrite opens path for an in-place rewrite, without truncating it yet.
func openForWrite(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, syscall.EROFS) {
		// containerd and CRI-O mount resolv.conf read-only when the container's root
		// filesystem is: the fix is in the manifest, so say where.
		return nil, fail(path, "is mounted read-only (readOnlyRootFilesystem: true makes the runtime mount it so; the init container needs false)", err)
	}
	if err != nil {
		return nil, fail(path, "cannot open for writing", err)
	}
	return f, nil
}

// writeInPlace replaces the content of the file open as f without replacing the file:
// truncate, one write, fsync. A rename would fail on a bind mount (EBUSY) and a new inode
// would not be seen through it. If the write fails after the truncate, the previous content
// is put back.
func writeInPlace(f *os.File, path string, data, previous []byte) error {
	err := f.Truncate(0)
	if err == nil {
		var n int
		n, err = f.WriteAt(data, 0)
		if err == nil && n < len(data) {
			err = io.ErrShortWrite
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		e := &Error{File: path, Problem: "write failed", Err: err}
		if _, rerr := f.WriteAt(previous, 0); rerr != nil || f.Truncate(int64(len(previous))) != nil {
			e.Touched = true
			e.Problem = "write failed and the previous content could not be restored"
		} else {
			_ = f.Sync()
			e.Problem = "write failed, previous content restored"
		}
		return e
	}
	if err := f.Close(); err != nil {
		return fail(path, "close after write", err)
	}
	return nil
}
