# podns — build, test and run everything from here. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/podns/podns/internal/version.Version=$(VERSION)
# Tools the tests need (CoreDNS as the real cluster DNS, staticcheck, helm for the Kustomize
# component's Helm layouts) are installed here, pinned, and reused between runs.
TOOLS     := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

COREDNS_VERSION     := v1.14.7
STATICCHECK_VERSION := v0.8.2
HELM_VERSION        := v3.22.0
# How long each fuzz target runs in `make test` (CI budget), and in `make fuzz` by default.
FUZZTIME  ?= 15s

.PHONY: help build tools lint test test-unit fuzz bench demo images docs clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

build: ## static binaries bin/stub, bin/initc and bin/webhook
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/stub ./stub
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/initc ./initc
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/webhook ./webhook

tools: $(TOOLS)/coredns $(TOOLS)/staticcheck $(TOOLS)/helm ## pinned CoreDNS, staticcheck and helm into .tools/bin

$(TOOLS)/coredns:
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/coredns/coredns@$(COREDNS_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Only run by injector-manifests' tests (kustomize inflating a local chart); never contacts a
# chart repository.
$(TOOLS)/helm:
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

lint: $(TOOLS)/staticcheck ## go vet and staticcheck, every module
	$(GO) vet ./...
	staticcheck ./...
	cd injector-manifests && $(GO) vet ./... && staticcheck ./...
	cd monitoring && $(GO) vet ./... && staticcheck ./...
	cd e2e/kube && $(GO) vet ./... && staticcheck ./...

test: build tools test-unit fuzz ## the README's test command: everything CI runs

# The image test builds the three images from a cold cache on a fresh machine (~5 min when loaded).
test-unit:
	$(GO) test -race -count=1 -timeout 20m ./...
	cd injector-manifests && PODNS_HELM=$(TOOLS)/helm $(GO) test -race -count=1 ./...
	cd monitoring && $(GO) test -race -count=1 ./...

# Every fuzz target, each for a bounded time, seeded from its testdata corpus.
fuzz: ## run each fuzz target for FUZZTIME
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)' $$dir/*_test.go 2>/dev/null | cut -d' ' -f2); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    e2e/internal/fuzzrun.sh $(GO) $$pkg $$dir $$t $(FUZZTIME); \
	  done; \
	done

# Generated from the Config struct tags; internal/cli/docgen's test fails when the committed file
# is stale.
docs: ## regenerate docs/configuration.md (the variables and exit codes of stub, initc and webhook)
	$(GO) run ./internal/cli/docgen -o docs/configuration.md

images: ## stub, initc and webhook images for linux/amd64 and linux/arm64 (docker, podman or buildah)
	VERSION=$(VERSION) images/build.sh

clean: ## remove build output (keeps .tools)
	rm -rf bin bench-results soak-results

# The e2e suite owns `demo` (see e2e/README.md); the peer benchmark, the soak and the
# real-Kubernetes suite bring their own targets (`bench-peers`, `soak`, `e2e-kube`).
include e2e/e2e.mk
include e2e/bench/bench.mk
include e2e/soak/soak.mk
-include e2e/kube/kube.mk

bench: bench-peers ## peer benchmark vs CoreDNS (NodeLocal config), dnsmasq, unbound; writes bench-results/
