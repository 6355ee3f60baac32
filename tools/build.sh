#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) from the pinned Go modules in tools/kube and tools/etcd into a per-user cache.
# Each binary is built once; a later run only builds what is missing.
#
#   tools/build.sh [DEST_DIR]      default: $XDG_CACHE_HOME/jupyternetes-ssa/kube/<version>/bin
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kube_version=$(awk '/^require k8s.io\/kubernetes /{print $3}' "$here/kube/go.mod")
etcd_version=$(awk '/go.etcd.io\/etcd\/server\/v3 v/{print $2; exit}' "$here/etcd/go.mod")
cache=${XDG_CACHE_HOME:-$HOME/.cache}
dest=${1:-$cache/jupyternetes-ssa/kube/$kube_version/bin}
mkdir -p "$dest"

minor=${kube_version#v1.}
minor=${minor%%.*}
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$kube_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$kube_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

export CGO_ENABLED=0 GOFLAGS=-mod=mod
build() {  # build MODULE_DIR NAME PACKAGE
  local out="$dest/$2"
  if [ -x "$out" ]; then
    echo "==> $2: cached at $out"
    return
  fi
  echo "==> building $2 ($3); this takes minutes on a cold cache" >&2
  local start=$SECONDS
  (cd "$1" && go build -trimpath -tags=selinux,notest -ldflags "$ldflags" -o "$out.tmp" "$3")
  mv "$out.tmp" "$out"
  echo "==> built $2 in $((SECONDS - start))s" >&2
}

build "$here/etcd" etcd go.etcd.io/etcd/server/v3
build "$here/kube" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build "$here/kube" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build "$here/kube" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build "$here/kube" kubectl k8s.io/kubernetes/cmd/kubectl
echo "$kube_version etcd-$etcd_version" > "$dest/VERSION"
echo "$dest"
