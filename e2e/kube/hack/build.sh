#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries and CNI plugins once per machine into $KUBE_CACHE (outside
# the repo), so later runs skip the build. A binary appears only after a complete build (tmp+mv),
# so an interrupted run never leaves a half-written binary behind to be trusted.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBE_VERSION:?}" "${KUBE_CACHE:?}" "${CNI_VERSION:?}"
out=$KUBE_CACHE/bin
mkdir -p "$out"
# The binaries come from this module's go.mod, whatever KUBE_VERSION says: building into a cache
# named for another version would mislabel them, so refuse when the two disagree.
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [[ -x $out/$c ]] && continue
  pinned=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
  [[ $pinned == "$KUBE_VERSION" ]] || { echo "build.sh: KUBE_VERSION=$KUBE_VERSION but go.mod pins k8s.io/kubernetes $pinned" >&2; exit 1; }
  break
done
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  [[ -x $out/$c ]] && continue
  start=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$out/$c.tmp" "$out/$c"
  echo "built $c in $(( $(date +%s) - start ))s"
done
for p in main/bridge main/loopback ipam/host-local; do
  [[ -x $out/${p#*/} ]] && continue
  GOBIN=$out CGO_ENABLED=0 go install "github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION"
done
# The in-cluster tools: the DNS test client and the image packer, rebuilt every run (seconds).
CGO_ENABLED=0 go build -trimpath -o "$KUBE_WORK/bin/dnsclient" ./cmd/dnsclient
go build -trimpath -o "$KUBE_WORK/bin/ociimage" ./cmd/ociimage
musl-gcc -static -Os -o "$KUBE_WORK/bin/pause" hack/pause.c
