#!/usr/bin/env bash
# Builds the integration test bed's binaries (kube-apiserver, kube-controller-manager,
# etcd) from the Go module proxy into a versioned cache directory outside the work
# tree, skipping every binary that is already there. Prints the directory on stdout.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${TMC_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tmc-syncer/testbin}
dir="$cache/$KUBE_VERSION-$ETCD_VERSION"
mkdir -p "$dir"

log() { printf 'testbin: %s\n' "$*" >&2; }

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # build <module dir> <package> <output name> <ldflags>
  local mod=$1 pkg=$2 out=$3 flags=$4
  if [ -x "$dir/$out" ]; then
    log "$out: cached in $dir"
    return
  fi
  log "$out: building $pkg (a cold build takes several minutes)..."
  local start=$SECONDS
  (cd "$root/hack/testbin/$mod" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go build -trimpath -ldflags "$flags" -o "$dir/$out.tmp" "$pkg")
  mv "$dir/$out.tmp" "$dir/$out"
  log "$out: built in $((SECONDS - start))s"
}

build etcd go.etcd.io/etcd/server/v3 etcd "-s -w"
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$ldflags"
echo "$dir"
