// Package images holds the image build script (build.sh) and the image test: both Dockerfiles
// build offline with podman, the stub image answers DNS and binds port 53 as uid 65532 only
// with the pod sysctl, and the init image rewrites a bind-mounted resolv.conf. The test needs
// root and podman and skips without them. See README.md.
package images
