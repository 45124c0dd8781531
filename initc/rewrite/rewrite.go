// Package rewrite computes the resolv.conf that points a pod at podns, from the one the kubelet
// wrote. It touches no file: Render is a pure function, so every input the kubelet (or a broken
// node) can produce is tested as a table and fuzzed.
package rewrite

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"

	"github.com/podns/podns/internal/resolvconf"
)

// Header is the first line of every file Render writes; it tells a human reading the pod's
// resolv.conf where the original went. Resolvers skip it as a comment.
const Header = "# podns: nameserver is the pod-local DNS cache; the kubelet's original is %s\n"

// Result is a rendered resolv.conf and what changed.
type Result struct {
	// Content is the new file.
	Content []byte
	// Options are the options written, in order.
	Options []resolvconf.Option
	// Changes lists each option change for the log: "timeout:5->timeout:1", "+attempts:3",
	// "-ndots:2 (repeated)".
	Changes []string
}

// Render returns the file that replaces original (the kubelet's resolv.conf, parsed as
// parsed): a header naming savedPath, "nameserver ns", the original's search and domain lines
// unchanged (in order, so the last one still wins), and the original's options merged with
// merge. Merging: an option named in merge takes merge's value at the place of its first
// occurrence, and its repetitions are dropped, so glibc (which reads the last occurrence) and
// musl (the first of a line) read the same value; merge's other options are appended in order;
// every other option stays as written, on one line. ndots therefore stays as the kubelet wrote
// it unless merge names it.
//
// The result is validated by parsing it back: one nameserver, ns; the same search list; the
// merged options. Any mismatch is an error and nothing should be written.
func Render(original []byte, parsed *resolvconf.File, ns netip.Addr, merge []resolvconf.Option, savedPath string) (Result, error) {
	if len(parsed.Nameservers) == 0 {
		return Result{}, errors.New("has no nameserver line: nothing to forward to")
	}
	var b bytes.Buffer
	// A control character in the path must not start a line of its own.
	fmt.Fprintf(&b, Header, strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, savedPath))
	b.WriteString("nameserver " + ns.String() + "\n")
	for _, line := range strings.Split(string(original), "\n") {
		// A trailing '\r' would end up inside the last search domain for glibc, which splits
		// only on space and tab: CRLF is normalized here.
		line = strings.TrimSuffix(line, "\r")
		if k := resolvconf.Keyword(line); k == "search" || k == "domain" {
			b.WriteString(line + "\n")
		}
	}
	opts, changes := Merge(parsed.Options, merge)
	b.Write((&resolvconf.File{Options: opts}).Bytes())

	r := Result{Content: b.Bytes(), Options: opts, Changes: changes}
	if err := check(r, parsed, ns); err != nil {
		return Result{}, fmt.Errorf("rewrite failed validation, nothing written: %w", err)
	}
	return r, nil
}

// Merge merges options as Render documents, returning the options to write and the changes.
func Merge(orig, merge []resolvconf.Option) ([]resolvconf.Option, []string) {
	want := make(map[string]resolvconf.Option, len(merge))
	for _, m := range merge {
		want[m.Name] = m
	}
	var out []resolvconf.Option
	var changes []string
	placed := map[string]bool{}
	for _, o := range orig {
		m, ok := want[o.Name]
		switch {
		case !ok:
			out = append(out, o)
		case placed[o.Name]:
			changes = append(changes, fmt.Sprintf("-%s (repeated)", o))
		default:
			placed[o.Name] = true
			out = append(out, m)
			if o != m {
				changes = append(changes, fmt.Sprintf("%s->%s", o, m))
			}
		}
	}
	for _, m := range merge {
		if !placed[m.Name] {
			out = append(out, m)
			changes = append(changes, "+"+m.String())
		}
	}
	return out, changes
}

// check parses the rendered file back and compares it with what it must say.
func check(r Result, orig *resolvconf.File, ns netip.Addr) error {
	got, err := resolvconf.Parse(r.Content)
	if err != nil {
		return err
	}
	if len(got.Nameservers) != 1 || got.Nameservers[0] != ns {
		return fmt.Errorf("nameservers %v, want only %s", got.Nameservers, ns)
	}
	if !reflect.DeepEqual(got.Search, orig.Search) {
		return fmt.Errorf("search list %v, want %v", got.Search, orig.Search)
	}
	if !equalOptions(got.Options, r.Options) {
		return fmt.Errorf("options %v, want %v", got.Options, r.Options)
	}
	return nil
}

func equalOptions(a, b []resolvconf.Option) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// PointsAt reports whether f already names ns: the file is podns's own rewrite (or someone
// else's loop), not an original worth saving.
func PointsAt(f *resolvconf.File, ns netip.Addr) bool {
	for _, a := range f.Nameservers {
		if a.WithZone("").Unmap() == ns.Unmap() {
			return true
		}
	}
	return false
}
