#!/usr/bin/env bash
# Builds the integration test bed's binaries (kube-apiserver, kube-controller-manager,
# etcd; kcp, its kubectl-kcp plugin and kcp's own syncer in the subdirectory
# kcp-<version>) from the Go module proxy into a versioned cache directory outside
# the work tree, skipping every binary that is already there. Prints the directory
# on stdout.
set -euo pipefail

KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
# kcp v0.11.0 is the last kcp release with TMC in tree (hack/testbin/kcp/go.mod pins it;
# integration/framework names the same subdirectory).
KCP_VERSION=v0.11.0
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

build() { # build <module dir> <package> <output path under $dir> <ldflags>
  local mod=$1 pkg=$2 out=$3 flags=$4
  if [ -x "$dir/$out" ]; then
    log "$out: cached in $dir"
    return
  fi
  log "$out: building $pkg (a cold build takes several minutes)..."
  local start=$SECONDS
  mkdir -p "$(dirname "$dir/$out")"
  (cd "$root/hack/testbin/$mod" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go build -trimpath -ldflags "$flags" -o "$dir/$out.tmp" "$pkg")
  mv "$dir/$out.tmp" "$dir/$out"
  log "$out: built in $((SECONDS - start))s"
}

build etcd go.etcd.io/etcd/server/v3 etcd "-s -w"
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$ldflags"
if [ "${TMC_TESTBIN_KCP:-1}" != 0 ]; then
  kcp_ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kcp_ldflags="$kcp_ldflags -X $pkg.gitVersion=v1.24.3+kcp-$KCP_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=24"
  done
  build kcp github.com/kcp-dev/kcp/cmd/kcp "kcp-$KCP_VERSION/kcp" "$kcp_ldflags"
  build kcp github.com/kcp-dev/kcp/cmd/kubectl-kcp "kcp-$KCP_VERSION/kubectl-kcp" "$kcp_ldflags"
  # kcp's own syncer (side-by-side and take-over tests): an old golang.org/x/net in its
  # dependencies links syscall.recvmsg, which Go 1.23+ only allows with -checklinkname=0.
  build kcp github.com/kcp-dev/kcp/cmd/syncer "kcp-$KCP_VERSION/syncer" "$kcp_ldflags -checklinkname=0"
fi
echo "$dir"
