#!/usr/bin/env bash
# make e2e-kube: build (or reuse) Kubernetes, bring the cluster up, run the driver, and always tear
# down and prove that nothing is left, whatever failed.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBE_VERSION:?}" "${KUBE_CACHE:?}" "${KUBE_WORK:?}" "${CNI_VERSION:?}" "${COREDNS_BIN:?}" "${PODNS_BIN:?}"
export KUBE_VERSION KUBE_CACHE KUBE_WORK CNI_VERSION COREDNS_BIN PODNS_BIN
[[ $(id -u) == 0 ]] || { echo "e2e-kube needs root (kubelet, containerd, iptables)" >&2; exit 1; }
t0=$(date +%s)
# A run that was killed before its trap ran leaves its work dir: clean that first.
hack/cluster.sh down
mkdir -p "$KUBE_WORK/bin"
hack/build.sh
t1=$(date +%s)
export PATH=$KUBE_CACHE/bin:$PATH
echo "e2e-kube: binaries ready in $(( t1 - t0 ))s"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  hack/cluster.sh down || rc=1
  hack/cluster.sh check || rc=1
  echo "e2e-kube: total $(( $(date +%s) - t0 ))s (build $(( t1 - t0 ))s), exit $rc"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
hack/cluster.sh up
PODNS_E2E_KUBECONFIG=$KUBE_WORK/admin.kubeconfig PODNS_E2E_WORK=$KUBE_WORK \
  go test -count=1 -v -timeout 30m -run '^TestKube$' .
