# e2e on a real single-node Kubernetes (see e2e/kube/README.md). Included by the root Makefile.
# Needs root, Go and the Debian packages etcd-server containerd runc iptables iproute2 conntrack
# musl-tools openssl (kubectl is built with Kubernetes).
KUBE_VERSION ?= v1.36.3
KUBE_CNI_VERSION ?= v1.9.1
# Built Kubernetes binaries, reused by every later run on this machine (outside the repo).
KUBE_CACHE ?= /var/cache/podns-e2e-kube/$(KUBE_VERSION)
# The cluster's state while it runs; removed by the teardown.
KUBE_WORK ?= /var/lib/podns-e2e-kube/run

.PHONY: e2e-kube
e2e-kube: build tools ## e2e on a real single-node Kubernetes (root; the first run builds Kubernetes)
	KUBE_VERSION=$(KUBE_VERSION) CNI_VERSION=$(KUBE_CNI_VERSION) KUBE_CACHE=$(KUBE_CACHE) \
	KUBE_WORK=$(KUBE_WORK) COREDNS_BIN=$(TOOLS)/coredns PODNS_BIN=$(CURDIR)/bin \
	  e2e/kube/hack/run.sh

# API-server test of admission-time injection (apiserver_test.go): the MutatingAdmissionPolicy of
# injector-manifests/admission-policy and the webhook of injector-manifests/webhook (bin/webhook out
# of cluster), each against its own kube-apiserver and etcd on loopback; no kubelet, no root.
# Needs the kube-apiserver and kubectl that `make e2e-kube` builds into $(KUBE_CACHE) (1.36 or later:
# MutatingAdmissionPolicy v1) and Debian's etcd-server; skips with a message without them.
.PHONY: e2e-admission
e2e-admission: build ## API-server test of the webhook and the MutatingAdmissionPolicy (no root)
	cd e2e/kube && PODNS_E2E_KUBE_BIN=$(KUBE_CACHE)/bin PODNS_E2E_WEBHOOK_VERSION=$(VERSION) $(GO) test -race -count=1 -timeout 10m -v -run '^TestAdmission$$' .
