// Command ociimage packs static binaries into a single-layer OCI image archive that
// `ctr images import` loads: the e2e cluster has no registry and nothing may be pulled, so every
// image it runs (pause, CoreDNS, the DNS test client) is packed here from files on this machine.
//
//	ociimage -name registry.k8s.io/pause:3.10 -o pause.tar -entrypoint /pause /path/to/pause=/pause
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	name := flag.String("name", "", "image reference, e.g. ghcr.io/podns/stub:v0.1.0")
	out := flag.String("o", "", "output OCI archive (tar)")
	entry := flag.String("entrypoint", "", "comma-separated entrypoint")
	user := flag.String("user", "", "user[:group] the image runs as")
	flag.Parse()
	if *name == "" || *out == "" || *entry == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: ociimage -name REF -o OUT.tar -entrypoint /bin [-user U:G] SRC=/DEST...")
		os.Exit(2)
	}
	if err := run(*name, *out, strings.Split(*entry, ","), *user, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

type blob struct {
	mediaType string
	data      []byte
}

func (b blob) digest() string {
	s := sha256.Sum256(b.data)
	return "sha256:" + hex.EncodeToString(s[:])
}

func (b blob) descriptor() map[string]any {
	return map[string]any{"mediaType": b.mediaType, "digest": b.digest(), "size": len(b.data)}
}

func run(name, out string, entry []string, user string, files []string) error {
	// The layer: every file mode 0755 owned by root, plus /tmp so programs that want it find it.
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 01777}); err != nil {
		return err
	}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(dst, "/") {
			return fmt.Errorf("%q: want SRC=/DEST", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	// Uncompressed: the archive is imported on this machine at once, and gzip of a 100 MB CoreDNS
	// binary costs more than it saves here.
	diffID := sha256.Sum256(raw.Bytes())
	layer := blob{"application/vnd.oci.image.layer.v1.tar", raw.Bytes()}

	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entry, "User": user, "Env": []string{"PATH=/"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	}
	cj, _ := json.Marshal(cfg)
	config := blob{"application/vnd.oci.image.config.v1+json", cj}
	mj, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        config.descriptor(),
		"layers":        []any{layer.descriptor()},
	})
	manifest := blob{"application/vnd.oci.image.manifest.v1+json", mj}
	md := manifest.descriptor()
	// containerd names the imported image from this annotation.
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
	ij, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	ow := tar.NewWriter(f)
	put := func(n string, d []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(d)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := ow.Write(d)
		return err
	}
	for _, b := range []blob{layer, config, manifest} {
		if err := put("blobs/sha256/"+strings.TrimPrefix(b.digest(), "sha256:"), b.data); err != nil {
			return err
		}
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", ij); err != nil {
		return err
	}
	if err := ow.Close(); err != nil {
		return err
	}
	return f.Close()
}
