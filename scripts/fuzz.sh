#!/usr/bin/env bash
# Fuzzing what the control plane decodes (spec validation, events through the verifier,
# node ops, heartbeats, subjects) and what the image scanner parses (layer tars into
# inventories, dpkg/apk databases and os-release, OSV advisories and their matching,
# Debian/Alpine version ordering, manifests and image configs): each target for FUZZ_SECS (20) from the committed seed
# corpus in fuzz/corpus/. New inputs go to a temporary directory; a crash fails the run
# and leaves its input in fuzz/artifacts/<target>/ (make it a regression test).
# Only stable Rust is here: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
secs=${FUZZ_SECS:-20}
export RUSTC_BOOTSTRAP=1
out=$(mktemp -d /tmp/bulkhead-fuzz.XXXXXX)
trap 'rm -rf --one-file-system "$out"' EXIT
targets=(spec event ops heartbeat subjects layer_tar pkgdb osv version manifest)
cargo fuzz build --fuzz-dir fuzz
for t in "${targets[@]}"; do
  mkdir -p "$out/$t"
  log="$out/$t.log"
  if ! cargo fuzz run --fuzz-dir fuzz "$t" "$out/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t found a crash (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz $t: $runs executions in ${secs} s, no crash"
done
