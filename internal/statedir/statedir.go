// Package statedir is the contract between initc and the stub: the files in the state dir (an
// emptyDir both containers mount, PODNS_STATE_DIR, default /run/podns), their names and formats.
// Both binaries use it, so a rename on one side cannot silently break pods.
//
//	upstream.conf  the kubelet's original resolv.conf, byte for byte, saved once by initc;
//	               the stub forwards to its nameservers
//	disabled       present when podns must stay out of the way (a hostNetwork pod); its content
//	               is a one-line reason. The stub then serves its probes but binds no DNS port.
//
// initc writes both through a temporary file and a rename, so the stub sees the old file or the
// new one, never half of one.
package statedir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	// UpstreamConfName is the saved original resolv.conf in the state dir.
	UpstreamConfName = "upstream.conf"
	// DisabledMarkerName is the disabled marker in the state dir.
	DisabledMarkerName = "disabled"
	// defaultReason is what ReadDisabled reports for an empty marker.
	defaultReason = "disabled by initc"
)

// UpstreamConfPath is the saved original resolv.conf in dir.
func UpstreamConfPath(dir string) string { return filepath.Join(dir, UpstreamConfName) }

// DisabledMarkerPath is the disabled marker in dir.
func DisabledMarkerPath(dir string) string { return filepath.Join(dir, DisabledMarkerName) }

// SaveUpstreamConf writes data, the kubelet's resolv.conf, as dir's upstream.conf, atomically.
func SaveUpstreamConf(dir string, data []byte) error {
	return writeAtomic(UpstreamConfPath(dir), data)
}

// WriteDisabled writes the disabled marker with reason (one line) to dir, atomically.
func WriteDisabled(dir, reason string) error {
	return writeAtomic(DisabledMarkerPath(dir), []byte(reason+"\n"))
}

// ReadDisabled returns the reason in dir's disabled marker, and whether there is one. An empty
// marker reads as "disabled by initc". A marker that exists but cannot be read counts as absent:
// the stub then serves DNS, which is what a pod without a marker gets.
func ReadDisabled(dir string) (reason string, disabled bool) {
	data, err := os.ReadFile(DisabledMarkerPath(dir))
	if err != nil {
		return "", false
	}
	reason = strings.TrimSpace(string(data))
	if reason == "" {
		reason = defaultReason
	}
	return reason, true
}

// RemoveDisabled removes dir's disabled marker; removed says whether there was one. A marker
// left from an earlier run of a pod that is not hostNetwork would keep the stub from serving DNS
// while resolv.conf points at it.
func RemoveDisabled(dir string) (removed bool, err error) {
	err = os.Remove(DisabledMarkerPath(dir))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// writeAtomic writes a file in the state dir through a temporary file and a rename, so a
// reader (the stub) sees the old file or the new one, never half of one.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	// 0644: the stub runs as 65532 and must read it.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
