#!/usr/bin/env bash
# The CRI test environment: a containerd on a private socket, root and state directory
# (runc, and gVisor's runsc through the runc shim), offline-built busybox images imported
# into it, and a loopback OCI registry (Debian's docker-registry) serving a pull-only image.
#
#   scripts/cri-env.sh install        apt packages (containerd, runc, runsc, umoci, skopeo, …)
#   scripts/cri-env.sh start DIR      starts everything under DIR, prints `export …` lines
#   scripts/cri-env.sh stop DIR       stops it and removes what containerd left behind
#
# Everything here is for tests; bulkhead itself only speaks CRI. The configuration is the
# one ../shared/CRI-ON-THIS-MACHINE.md verified on this kind of machine.
set -euo pipefail

PACKAGES=(containerd runc runsc umoci skopeo busybox-static docker-registry jq protobuf-compiler)

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

# gVisor through the runc shim (Debian ships runsc without its containerd shim): no host
# network, every CRI container its own gVisor sandbox, `kill` after exit is not an error.
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
if [ "$cmd" = create ] && [ -f "$bundle/config.json" ]; then
  jq 'if .annotations then .annotations |= with_entries(select(.key | startswith("io.kubernetes.cri.") | not)) else . end' \
    "$bundle/config.json" >"$bundle/config.json.tmp" && mv "$bundle/config.json.tmp" "$bundle/config.json"
fi
if [ "$cmd" = kill ]; then
  runsc --network=none "$@" 2>/dev/null || true
  exit 0
fi
exec runsc --network=none "$@"
EOF
  chmod +x "$1"
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
  port=$(free_port)
  write_runsc_wrapper "$dir/runsc-wrapper"

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

  build_images "$dir" >"$dir/images.log" 2>&1
  skopeo --insecure-policy copy -q "oci:$dir/oci:pause" "docker-archive:$dir/pause.tar:localhost/pause:1"
  skopeo --insecure-policy copy -q "oci:$dir/oci:busybox" "docker-archive:$dir/busybox.tar:localhost/bulkhead/busybox:1"

  wait_for 20 ctr -a "$sock" version
  ctr -a "$sock" -n k8s.io images import "$dir/pause.tar" >/dev/null
  ctr -a "$sock" -n k8s.io images import "$dir/busybox.tar" >/dev/null
  wait_for 20 curl -sf "http://127.0.0.1:$port/v2/"
  skopeo --insecure-policy copy -q --dest-tls-verify=false \
    "oci:$dir/oci:busybox" "docker://127.0.0.1:$port/bulkhead/pulled:1"

  cat >"$dir/env" <<EOF
export BULKHEAD_TEST_CRI_SOCKET=$sock
export BULKHEAD_TEST_IMAGE=localhost/bulkhead/busybox:1
export BULKHEAD_TEST_PULL_IMAGE=127.0.0.1:$port/bulkhead/pulled:1
export BULKHEAD_TEST_REGISTRY=127.0.0.1:$port
export BULKHEAD_TEST_CRI_DIR=$dir
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
  for p in containerd registry; do
    if [ -f "$dir/$p.pid" ]; then
      kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
  sleep 0.5
  pkill -f -- "-address $sock" 2>/dev/null || true
  grep " $dir/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: cri-env.sh start DIR}" ;;
  stop) stop "${2:?usage: cri-env.sh stop DIR}" ;;
  *) echo "usage: cri-env.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
