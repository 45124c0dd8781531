package images

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// builderLabel marks a builder image this test made, so a later run reuses it.
const builderLabel = "io.podns.test-builder"

// pinnedBuilder returns the GO_IMAGE the Dockerfiles pin; they must agree.
func pinnedBuilder(t *testing.T, root string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^ARG GO_IMAGE=(\S+)$`)
	var name string
	for _, f := range []string{"Dockerfile.stub", "Dockerfile.init", "Dockerfile.webhook"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(data)
		if m == nil {
			t.Fatalf("%s: no ARG GO_IMAGE=", f)
		}
		if name != "" && name != string(m[1]) {
			t.Fatalf("Dockerfiles pin different builders: %s and %s", name, m[1])
		}
		name = string(m[1])
	}
	return name
}

// ensureBuilder makes a local image called name (exactly what the Dockerfiles use) from the
// host's Go toolchain, unless one exists: nothing can be pulled here. The image holds GOROOT,
// a shell for RUN (the host's /bin/sh with its shared libraries), and the few files `go build`
// needs (passwd for HOME, /tmp); CGO is off so no C toolchain.
func ensureBuilder(t *testing.T, pm podman, name, goroot, goversion string) {
	t.Helper()
	if out, err := pm.output("image", "inspect", "--format", "{{index .Labels \""+builderLabel+"\"}}", name); err == nil {
		t.Logf("builder %s exists (%s)", name, strings.TrimSpace(out))
		return
	}
	t.Logf("making builder image %s from %s (%s)", name, goroot, goversion)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeBuilderTar(pw, goroot)) }()
	cmd := pm.command("import",
		"--change", "ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--change", "ENV GOPATH=/go",
		"--change", "ENV GOTOOLCHAIN=local",
		"--change", "ENV GOLANG_VERSION="+strings.TrimPrefix(goversion, "go"),
		"--change", "WORKDIR /go",
		"--change", fmt.Sprintf("LABEL %s=%q", builderLabel, "host "+goroot+" "+goversion),
		"--message", "podns image test: host Go toolchain as the pinned builder",
		"-", name)
	cmd.Stdin = pr
	if out, err := cmd.CombinedOutput(); err != nil {
		pr.CloseWithError(err)
		t.Fatalf("podman import: %v\n%s", err, out)
	}
}

// writeBuilderTar writes the builder's root filesystem as a tar stream.
func writeBuilderTar(w io.Writer, goroot string) error {
	tw := tar.NewWriter(w)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"etc", 0o755}, {"root", 0o700}, {"tmp", 0o1777}, {"go", 0o777}, {"go/bin", 0o777}, {"usr", 0o755}, {"usr/local", 0o755}} {
		if err := dir(d.name, d.mode); err != nil {
			return err
		}
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")); err != nil {
		return err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return err
	}
	// /bin/sh and what the dynamic loader needs to run it.
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		return err
	}
	libs, err := elfDeps(sh)
	if err != nil {
		return err
	}
	made := map[string]bool{}
	for _, f := range append([]string{"/bin/sh"}, libs...) {
		data, err := os.ReadFile(f) // follows symlinks: the file lands at the path the loader asks for
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(f, "/")
		if err := writeParents(tw, name, made); err != nil {
			return err
		}
		if err := file(name, 0o755, data); err != nil {
			return err
		}
	}
	// GOROOT, without its test suite and docs.
	goroot = filepath.Clean(goroot)
	err = filepath.WalkDir(goroot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(goroot, path)
		if rel == "test" || rel == "doc" {
			return filepath.SkipDir
		}
		name := filepath.Join("usr/local/go", rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = name
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
		switch {
		case d.IsDir():
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			hdr.Linkname = target
			return tw.WriteHeader(hdr)
		case d.Type().IsRegular():
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// writeParents writes the directories above name that are not written yet.
func writeParents(tw *tar.Writer, name string, made map[string]bool) error {
	var todo []string
	for d := filepath.Dir(name); d != "." && d != "/"; d = filepath.Dir(d) {
		todo = append([]string{d}, todo...)
	}
	for _, d := range todo {
		if made[d+"/"] || d == "bin" || d == "etc" || d == "usr" || d == "usr/local" {
			continue
		}
		made[d+"/"] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
			return err
		}
	}
	return nil
}

// elfDeps returns the ELF interpreter and shared libraries a dynamic executable needs, found
// where the loader looks on a multiarch Debian.
func elfDeps(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, err
			}
			out = append(out, string(bytes.TrimRight(b, "\x00")))
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	triplet := map[elf.Machine]string{elf.EM_X86_64: "x86_64-linux-gnu", elf.EM_AARCH64: "aarch64-linux-gnu"}[f.Machine]
	for _, lib := range needed {
		found := ""
		for _, d := range []string{"/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/lib", "/usr/lib"} {
			if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
				found = filepath.Join(d, lib)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, not found", path, lib)
		}
		out = append(out, found)
	}
	return out, nil
}

// podman runs podman with the test's containers.conf.
type podman struct{ conf string }

func (p podman) command(args ...string) *exec.Cmd {
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return cmd
}

func (p podman) output(args ...string) (string, error) {
	out, err := p.command(args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
