#!/usr/bin/env bash
# Builds the podns images (Dockerfile.stub, Dockerfile.init, Dockerfile.webhook) with docker,
# podman or buildah, whichever is present, for every platform in PLATFORMS the builder can do.
#
#   images/build.sh [stub|init|webhook]...   all three when none is named
#
# Environment (all optional):
#   VERSION    image tag and stamped version   default: git describe, else "dev"
#   REGISTRY   image name prefix               default: ghcr.io/podns  (-> ghcr.io/podns/stub:VERSION, .../initc, .../webhook)
#   PLATFORMS  comma-separated os/arch         default: linux/amd64,linux/arm64
#   BUILDER    docker | podman | buildah       default: the first one found, in that order
#   CONTEXT    build context directory         default: the repository root
#   PUSH       1: push after building (docker: required for more than one platform)
#   GOFLAGS    passed to the Go build (e.g. -mod=vendor for an offline context with vendor/)
#   GO_IMAGE   the builder image               default: the one pinned in the Dockerfiles
#   BUILD_FLAGS  extra flags for the builder's build command (word-split), e.g. --layers=false
#
# The Go builder stage runs on the build machine's platform and cross-compiles, so no
# emulation (qemu/binfmt) is needed for any platform.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
REGISTRY=${REGISTRY:-ghcr.io/podns}
PLATFORMS=${PLATFORMS:-linux/amd64,linux/arm64}
CONTEXT=${CONTEXT:-$root}
PUSH=${PUSH:-0}

if [[ -z ${BUILDER:-} ]]; then
  for b in docker podman buildah; do
    if command -v "$b" >/dev/null 2>&1; then
      # A docker CLI without a daemon cannot build: fall through to podman/buildah.
      if [[ $b == docker ]] && ! docker info >/dev/null 2>&1; then continue; fi
      BUILDER=$b
      break
    fi
  done
fi
[[ -n ${BUILDER:-} ]] || { echo "build.sh: none of docker, podman, buildah is usable" >&2; exit 1; }

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(stub init webhook)

nplat=$(tr ',' '\n' <<<"$PLATFORMS" | grep -c .)
args=(--build-arg "VERSION=$VERSION")
if [[ -n ${GOFLAGS:-} ]]; then args+=(--build-arg "GOFLAGS=$GOFLAGS"); fi
if [[ -n ${GO_IMAGE:-} ]]; then args+=(--build-arg "GO_IMAGE=$GO_IMAGE"); fi
# shellcheck disable=SC2206 # word splitting is the point
if [[ -n ${BUILD_FLAGS:-} ]]; then args+=($BUILD_FLAGS); fi

# buildah before 1.29 (podman 4.3, Debian bookworm) leaves BUILDPLATFORM empty, so
# FROM --platform=$BUILDPLATFORM would fetch the builder for the target platform and run it
# under emulation (or fail offline). Say it explicitly; newer builders compute the same value.
case $(uname -m) in
  x86_64) buildplatform=linux/amd64 ;;
  aarch64|arm64) buildplatform=linux/arm64 ;;
  *) buildplatform= ;;
esac

for t in "${targets[@]}"; do
  case $t in
    stub) file=Dockerfile.stub image=$REGISTRY/stub:$VERSION ;;
    init|initc) file=Dockerfile.init image=$REGISTRY/initc:$VERSION ;;
    webhook) file=Dockerfile.webhook image=$REGISTRY/webhook:$VERSION ;;
    *) echo "build.sh: unknown image $t (stub, init or webhook)" >&2; exit 2 ;;
  esac
  echo "build.sh: $BUILDER: $image for $PLATFORMS"
  case $BUILDER in
    docker)
      out=(--load)
      if [[ $PUSH == 1 ]]; then
        out=(--push)
      elif (( nplat > 1 )); then
        echo "build.sh: docker can load one platform only; set PUSH=1 or PLATFORMS=linux/$(docker info -f '{{.Architecture}}' | sed 's/x86_64/amd64/;s/aarch64/arm64/')" >&2
        exit 2
      fi
      docker buildx build --platform "$PLATFORMS" "${args[@]}" -f "$root/$file" -t "$image" "${out[@]}" "$CONTEXT"
      ;;
    podman|buildah)
      if [[ -n $buildplatform ]]; then args+=(--build-arg "BUILDPLATFORM=$buildplatform"); fi
      if (( nplat > 1 )); then
        # A manifest list holding one image per platform, under the image's name.
        "$BUILDER" manifest rm "$image" >/dev/null 2>&1 || true
        "$BUILDER" build --platform "$PLATFORMS" "${args[@]}" -f "$root/$file" --manifest "$image" "$CONTEXT"
        if [[ $PUSH == 1 ]]; then "$BUILDER" manifest push --all "$image" "docker://$image"; fi
      else
        "$BUILDER" build --platform "$PLATFORMS" "${args[@]}" -f "$root/$file" -t "$image" "$CONTEXT"
        if [[ $PUSH == 1 ]]; then "$BUILDER" push "$image"; fi
      fi
      ;;
    *) echo "build.sh: BUILDER=$BUILDER: want docker, podman or buildah" >&2; exit 2 ;;
  esac
done
