#!/usr/bin/env bash
# The CRI test environment: a containerd on a private socket, root and state directory
# (runc, and gVisor's runsc through the runc shim), offline-built busybox images imported
# into it, and loopback OCI registries (Debian's docker-registry): one open, one asking for
# Basic auth, one sending clients to a token server for Bearer auth (scripts/token-server.py).
#
#   scripts/cri-env.sh install        apt packages (containerd, runc, runsc, umoci, skopeo, …)
#   scripts/cri-env.sh start DIR      starts everything under DIR, prints `export …` lines
#   scripts/cri-env.sh stop DIR       stops it and removes what containerd left behind
#
# Everything here is for tests; bulkhead itself only speaks CRI. The configuration is the
# one ../shared/CRI-ON-THIS-MACHINE.md verified on this kind of machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PACKAGES=(containerd runc runsc umoci skopeo busybox-static docker-registry apache2-utils jq zstd openssl
  containernetworking-plugins nftables iproute2)

install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "cri-env: need root to install ${missing[*]}" >&2; exit 1; }
  echo "cri-env: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS CMD...
  local n=$(($1 * 10)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@"
}

# gVisor through the runc shim (Debian ships runsc without its containerd shim): every CRI
# container its own gVisor sandbox, `kill` after exit is not an error. Network: containerd
# puts a container in its pause's namespace (/proc/<pid>/ns/net), but the pause is a gVisor
# sandbox of its own, so the wrapper points the container at the pod's CNI namespace and
# runs it with `--network=host` there: the pod's namespace, through the host kernel's stack
# (runsc's own netstack, `--network=sandbox`, cannot take the interface in this setup: it
# refuses "in root network namespace"); the pause, and anything in the host's namespace,
# gets `--network=none`. Each container's OCI spec is kept in specs/ for the tests.
write_runsc_wrapper() {
  cat >"$1" <<'EOF'
#!/usr/bin/env bash
cmd="" bundle=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --bundle | -b) bundle=${args[$((i + 1))]} ;;
    --bundle=*) bundle=${args[$i]#--bundle=} ;;
    create | start | kill | delete | state | run | exec | ps | events | pause | resume | update)
      [ -z "$cmd" ] && cmd=${args[$i]} ;;
  esac
done
here=$(dirname "$0")
known=$here/netns
id=${args[-1]}
network=none
if [ "$cmd" = create ] && [ -f "$bundle/config.json" ]; then
  cfg=$bundle/config.json
  kind=$(jq -r '.annotations["io.kubernetes.cri.container-type"] // ""' "$cfg")
  sandbox=$(jq -r '.annotations["io.kubernetes.cri.sandbox-id"] // ""' "$cfg")
  netns=$(jq -r '[.linux.namespaces[]? | select(.type == "network") | .path // ""][0] // ""' "$cfg")
  mkdir -p "$known" "$here/specs"
  if [ "$kind" = sandbox ] && [ -n "$netns" ] && [ -n "$sandbox" ]; then
    echo "$netns" >"$known/$sandbox"
  elif [ "$kind" = container ] && [ -f "$known/$sandbox" ]; then
    jq --arg p "$(cat "$known/$sandbox")" '(.linux.namespaces[] | select(.type == "network")).path = $p' \
      "$cfg" >"$cfg.tmp" && mv "$cfg.tmp" "$cfg"
    network=host
    echo host >"$known/mode-$id"
  fi
  [ "$kind" = container ] && cp "$cfg" "$here/specs/$id.json"
  jq 'if .annotations then .annotations |= with_entries(select(.key | startswith("io.kubernetes.cri.") | not)) else . end' \
    "$cfg" >"$cfg.tmp" && mv "$cfg.tmp" "$cfg"
fi
[ -f "$known/mode-$id" ] && network=$(cat "$known/mode-$id")
if [ "$cmd" = delete ]; then
  rm -f "$known/mode-$id" "$known/$id"
fi
if [ "$cmd" = kill ]; then
  runsc --network=$network "$@" 2>/dev/null || true
  exit 0
fi
exec runsc --network=$network "$@"
EOF
  chmod +x "$1"
}

# The pod network: a bridge of its own (not Docker's), host-local addresses, masquerade for
# egress, and the CNI firewall plugin's FORWARD accepts (Docker sets FORWARD's policy to
# DROP). What keeps pods off the host's own services is the node's nftables guard.
POD_CIDR=10.88.0.0/16
write_cni_config() {
  mkdir -p "$1"
  cat >"$1/10-bulkhead.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "bulkhead",
  "plugins": [
    {"type": "bridge", "bridge": "bulkhead0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF
}

# An OCI image of busybox-static with `cmd` as its command, built with umoci.
build_images() {
  local dir=$1 oci=$1/oci bundle=$1/bundle
  rm -rf "$oci" "$bundle"
  umoci init --layout "$oci"
  umoci new --image "$oci:base"
  umoci unpack --image "$oci:base" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/tmp" "$bundle/rootfs/proc" "$bundle/rootfs/dev" "$bundle/rootfs/sys"
  cp /bin/busybox "$bundle/rootfs/bin/busybox"
  for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$a"
  done
  umoci repack --image "$oci:base" "$bundle"
  umoci config --image "$oci:base" --tag busybox --config.env PATH=/bin --config.cmd /bin/sh
  umoci config --image "$oci:base" --tag pause --config.env PATH=/bin \
    --config.cmd /bin/sleep --config.cmd 2147483647
  rm -rf "$bundle"
}

# Adds tag `<tag>-zstd` to an OCI layout: image `<tag>` with its gzip layers recompressed
# with zstd (umoci writes gzip only; skopeo 1.9 keeps blobs as they are).
zstd_variant() {
  local oci=$1 tag=$2 m manifest layers=()
  m=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$oci/index.json")
  manifest=$(cat "$oci/blobs/sha256/${m#sha256:}")
  local n i digest blob
  n=$(jq '.layers | length' <<<"$manifest")
  for ((i = 0; i < n; i++)); do
    digest=$(jq -r ".layers[$i].digest" <<<"$manifest")
    blob=$(mktemp "$oci/zst.XXXXXX")
    gzip -dc "$oci/blobs/sha256/${digest#sha256:}" | zstd -q -c >"$blob"
    local sum size
    sum=$(sha256sum "$blob" | cut -d' ' -f1)
    size=$(stat -c %s "$blob")
    mv "$blob" "$oci/blobs/sha256/$sum"
    manifest=$(jq -c --argjson i "$i" --arg d "sha256:$sum" --argjson s "$size" \
      '.layers[$i].digest = $d | .layers[$i].size = $s | .layers[$i].mediaType = "application/vnd.oci.image.layer.v1.tar+zstd"' <<<"$manifest")
  done
  printf '%s' "$manifest" >"$oci/manifest.tmp"
  tag_blob "$oci" "$oci/manifest.tmp" application/vnd.oci.image.manifest.v1+json "$tag-zstd"
}

# Moves file `<file>` into an OCI layout's blobs and tags it `<tag>` (media type `<type>`).
tag_blob() {
  local oci=$1 file=$2 type=$3 tag=$4 sum size
  sum=$(sha256sum "$file" | cut -d' ' -f1)
  size=$(stat -c %s "$file")
  mv "$file" "$oci/blobs/sha256/$sum"
  jq --arg d "sha256:$sum" --argjson s "$size" --arg t "$tag" --arg m "$type" \
    '.manifests += [{"mediaType": $m, "digest": $d, "size": $s, "annotations": {"org.opencontainers.image.ref.name": $t}}]' \
    "$oci/index.json" >"$oci/index.tmp" && mv "$oci/index.tmp" "$oci/index.json"
}

# Adds tag `<tag>-multi` to an OCI layout: an image index whose entry for this machine's
# platform is image `<tag>` and whose entry for linux/s390x is image `<other>`.
index_variant() {
  local oci=$1 tag=$2 other=$3 arch entry
  case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
  esac
  entry() {
    jq -c --arg t "$1" --arg a "$2" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)
      | {mediaType, digest, size, platform: {os: "linux", architecture: $a}}' "$oci/index.json"
  }
  jq -n -c --argjson a "$(entry "$other" s390x)" --argjson b "$(entry "$tag" "$arch")" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [$a, $b]}' >"$oci/multi.tmp"
  tag_blob "$oci" "$oci/multi.tmp" application/vnd.oci.image.index.v1+json "$tag-multi"
}

# Images for the scanner: real Debian and Alpine package databases in layers, where a
# later layer removes packages (a rewritten status file, a whiteout), pushed to the
# loopback registry (gzip, and zstd for Debian).
build_scan_images() {
  local dir=$1 port=$2 oci=$1/oci-scan b=$1/bundle-scan
  rm -rf "$oci" "$b"
  umoci init --layout "$oci"
  local deb_status='Package: libssl3
Status: install ok installed
Source: openssl
Version: 3.0.11-1~deb12u2

Package: openssl
Status: install ok installed
Version: 3.0.11-1~deb12u2

Package: libc6
Status: install ok installed
Source: glibc
Version: 2.36-9+deb12u3'
  umoci new --image "$oci:deb"
  umoci unpack --image "$oci:deb" "$b" >/dev/null
  mkdir -p "$b/rootfs/usr/lib" "$b/rootfs/etc" "$b/rootfs/var/lib/dpkg/status.d"
  printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' >"$b/rootfs/usr/lib/os-release"
  ln -s ../usr/lib/os-release "$b/rootfs/etc/os-release"
  printf '%s\n\nPackage: zlib1g\nStatus: install ok installed\nSource: zlib (1:1.2.13.dfsg-1)\nVersion: 1:1.2.13.dfsg-1\n' "$deb_status" >"$b/rootfs/var/lib/dpkg/status"
  printf 'Package: curl\nVersion: 7.88.1-10\n' >"$b/rootfs/var/lib/dpkg/status.d/curl"
  umoci repack --image "$oci:deb" "$b"
  rm -rf "$b" && umoci unpack --image "$oci:deb" "$b" >/dev/null
  printf '%s\n' "$deb_status" >"$b/rootfs/var/lib/dpkg/status" # zlib1g removed
  rm "$b/rootfs/var/lib/dpkg/status.d/curl"                     # a whiteout
  umoci repack --image "$oci:deb" "$b"
  rm -rf "$b"
  # Another image on the same two base layers, with an application layer on top.
  umoci unpack --image "$oci:deb" "$b" >/dev/null
  mkdir -p "$b/rootfs/srv/app"
  echo "app 1.0" >"$b/rootfs/srv/app/VERSION"
  umoci repack --image "$oci:deb-app" "$b"
  rm -rf "$b"

  umoci new --image "$oci:apk"
  umoci unpack --image "$oci:apk" "$b" >/dev/null
  mkdir -p "$b/rootfs/etc" "$b/rootfs/lib/apk/db"
  printf 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n' >"$b/rootfs/etc/os-release"
  local apk_base='P:busybox
V:1.36.1-r15
o:busybox

P:musl
V:1.2.4_git20230717-r4
o:musl'
  printf '%s\n\nP:libcrypto3\nV:3.1.4-r1\no:openssl\n' "$apk_base" >"$b/rootfs/lib/apk/db/installed"
  umoci repack --image "$oci:apk" "$b"
  rm -rf "$b" && umoci unpack --image "$oci:apk" "$b" >/dev/null
  printf '%s\n' "$apk_base" >"$b/rootfs/lib/apk/db/installed" # libcrypto3 removed
  umoci repack --image "$oci:apk" "$b"
  rm -rf "$b"

  zstd_variant "$oci" deb
  index_variant "$oci" deb apk
  local to="docker://127.0.0.1:$port/bulkhead"
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$oci:deb" "$to/debian-vuln:1"
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$oci:deb-zstd" "$to/debian-vuln:zstd"
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$oci:deb-app" "$to/debian-app:1"
  skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$oci:apk" "$to/alpine-vuln:1"
  skopeo --insecure-policy copy -q --all --dest-tls-verify=false "oci:$oci:deb-multi" "$to/debian-multi:1"
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  install
  if [ -f "$dir/containerd.pid" ] && kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
    echo "cri-env: already running in $dir" >&2
    cat "$dir/env"
    return 0
  fi
  mkdir -p "$dir/root" "$dir/state" "$dir/logs" "$dir/registry"
  local port sock=$dir/containerd.sock
  # The pod network namespaces there before this containerd: `stop` leaves them alone.
  ls /run/netns 2>/dev/null | grep '^cni-' >"$dir/netns-before" || true
  shared_netns_dir
  port=$(free_port)
  write_runsc_wrapper "$dir/runsc-wrapper"
  write_cni_config "$dir/net.d"

  mkdir -p "$dir/certs.d/127.0.0.1:$port"
  cat >"$dir/certs.d/127.0.0.1:$port/hosts.toml" <<EOF
server = "http://127.0.0.1:$port"
[host."http://127.0.0.1:$port"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        BinaryName = "$dir/runsc-wrapper"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
EOF
  containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"

  cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"

  # A second registry that asks for a user and password (Basic auth).
  local auth_port
  auth_port=$(free_port)
  mkdir -p "$dir/registry-auth"
  htpasswd -Bbn scanuser s3cret >"$dir/htpasswd"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\nauth:\n  htpasswd:\n    realm: bulkhead-test\n    path: %s\n' \
    "$dir/registry-auth" "$auth_port" "$dir/htpasswd" >"$dir/registry-auth.yml"
  docker-registry serve "$dir/registry-auth.yml" >"$dir/registry-auth.log" 2>&1 &
  echo $! >"$dir/registry-auth.pid"

  # A third registry that sends clients to a token server (Bearer auth): the token server
  # (scripts/token-server.py) checks the same user and password and signs RS256 tokens
  # with a throwaway key whose certificate the registry trusts.
  local token_port tokreg_port
  token_port=$(free_port)
  tokreg_port=$(free_port)
  mkdir -p "$dir/registry-token"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bulkhead-test-token \
    -keyout "$dir/token.key" -out "$dir/token.crt" 2>/dev/null
  python3 "$HERE/token-server.py" "$token_port" "$dir/token.key" "$dir/token.crt" \
    scanuser:s3cret bulkhead-registry bulkhead-token-issuer "$dir/tokens.log" \
    >"$dir/token-server.log" 2>&1 &
  echo $! >"$dir/token-server.pid"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\nauth:\n  token:\n    realm: http://127.0.0.1:%s/token\n    service: bulkhead-registry\n    issuer: bulkhead-token-issuer\n    rootcertbundle: %s\n' \
    "$dir/registry-token" "$tokreg_port" "$token_port" "$dir/token.crt" >"$dir/registry-token.yml"
  docker-registry serve "$dir/registry-token.yml" >"$dir/registry-token.log" 2>&1 &
  echo $! >"$dir/registry-token.pid"

  build_images "$dir" >"$dir/images.log" 2>&1
  skopeo --insecure-policy copy -q "oci:$dir/oci:pause" "docker-archive:$dir/pause.tar:localhost/pause:1"
  skopeo --insecure-policy copy -q "oci:$dir/oci:busybox" "docker-archive:$dir/busybox.tar:localhost/bulkhead/busybox:1"

  wait_for 20 ctr -a "$sock" version
  ctr -a "$sock" -n k8s.io images import "$dir/pause.tar" >/dev/null
  ctr -a "$sock" -n k8s.io images import "$dir/busybox.tar" >/dev/null
  wait_for 20 curl -sf "http://127.0.0.1:$port/v2/"
  skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$dir/oci:busybox" "docker://127.0.0.1:$port/bulkhead/pulled:1"
  build_scan_images "$dir" "$port" >>"$dir/images.log" 2>&1
  wait_for 20 curl -s -o /dev/null "http://127.0.0.1:$auth_port/v2/"
  skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds scanuser:s3cret \
    "oci:$dir/oci-scan:apk" "docker://127.0.0.1:$auth_port/bulkhead/alpine-vuln:1"
  wait_for 20 curl -s -o /dev/null "http://127.0.0.1:$tokreg_port/v2/"
  wait_for 20 curl -s -o /dev/null "http://127.0.0.1:$token_port/token"
  skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds scanuser:s3cret \
    "oci:$dir/oci-scan:apk" "docker://127.0.0.1:$tokreg_port/bulkhead/alpine-vuln:1"

  cat >"$dir/env" <<EOF
export BULKHEAD_TEST_CRI_SOCKET=$sock
export BULKHEAD_TEST_IMAGE=localhost/bulkhead/busybox:1
export BULKHEAD_TEST_PULL_IMAGE=127.0.0.1:$port/bulkhead/pulled:1
export BULKHEAD_TEST_REGISTRY=127.0.0.1:$port
export BULKHEAD_TEST_AUTH_REGISTRY=127.0.0.1:$auth_port
export BULKHEAD_TEST_AUTH=scanuser:s3cret
export BULKHEAD_TEST_TOKEN_REGISTRY=127.0.0.1:$tokreg_port
export BULKHEAD_TEST_TOKEN_LOG=$dir/tokens.log
export BULKHEAD_TEST_CRI_DIR=$dir
export BULKHEAD_TEST_POD_CIDR=$POD_CIDR
EOF
  cat "$dir/env"
}

stop() {
  local dir=$1 sock=$1/containerd.sock
  [ -d "$dir" ] || return 0
  if [ -S "$sock" ]; then
    # Kill every task first so no shim outlives containerd.
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
  fi
  for p in containerd registry registry-auth registry-token token-server; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
  sleep 0.5
  pkill -f -- "-address $sock" 2>/dev/null || true
  grep " $dir/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  remove_left_netns "$dir"
}

# /run/netns made a shared mount of itself before containerd mounts pod namespaces in it, as
# `ip netns add` does on its first use: done later (a test's `ip netns add`), that bind mount
# hides the namespaces mounted before it, which can then be neither unmounted nor unlinked
# ("device or resource busy"), and containerd leaves them behind for good.
shared_netns_dir() {
  mkdir -p /run/netns
  mountpoint -q /run/netns || mount --bind /run/netns /run/netns
  mount --make-shared /run/netns
}

# containerd 1.6 does not try again to unlink a pod's network namespace it once could not
# ("device or resource busy"): the ones this containerd made and left, with no process in
# them any more, are removed (one another containerd still uses keeps its processes).
remove_left_netns() {
  local dir=$1 ns
  [ -f "$dir/netns-before" ] || return 0
  for ns in $(ls /run/netns 2>/dev/null | grep '^cni-'); do
    grep -qx "$ns" "$dir/netns-before" && continue
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || continue
    ip netns delete "$ns" 2>/dev/null || { umount -l "/run/netns/$ns" 2>/dev/null; rm -f "/run/netns/$ns"; } || true
  done
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: cri-env.sh start DIR}" ;;
  stop) stop "${2:?usage: cri-env.sh stop DIR}" ;;
  *) echo "usage: cri-env.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
