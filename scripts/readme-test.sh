#!/usr/bin/env bash
# The README is the front door: its run command, taken from the README itself, run in a
# fresh clone of this repository with no protoc and no nats-server on PATH, brings bulkhead
# up to where the walkthrough's submission runs. The release build shares this checkout's
# target directory (only a cold machine builds from scratch). Fails naming what broke.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

run_cmd=$(awk '/^```sh/{inblock=1; next} /^```/{inblock=0} inblock && /^cargo run/{print; exit}' README.md | sed 's/ *#.*$//')
spec=$(awk '/^\$ cat web.json/{getline; print; exit}' README.md)
[ -n "$run_cmd" ] || { echo "readme test: no 'cargo run' line in the README's first sh block" >&2; exit 1; }
[ -n "$spec" ] || { echo "readme test: no web.json in the README's walkthrough" >&2; exit 1; }
echo "readme test: running '$run_cmd' in a fresh clone"

work=$(mktemp -d /tmp/bulkhead-readme.XXXXXX)
up_pid=
cleanup() {
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
git clone --quiet --no-hardlinks "$root" "$work/clone"

# A PATH with cargo, rustc and python3 (for pip) but no nats-server and no protoc; PROTOC
# fails should any build script still look for one.
mkdir -p "$work/bin"
ln -s "$(python3 -c 'import sys; print(sys.executable)')" "$work/bin/python3"
for tool in cargo rustc; do
  ln -s "$(rustup which "$tool" 2>/dev/null || command -v "$tool")" "$work/bin/$tool"
done
clean_path="$work/bin:/usr/bin:/bin"
for tool in nats-server protoc; do
  if PATH=$clean_path command -v "$tool" >/dev/null; then
    hide="$work/hidden"
    mkdir -p "$hide"
    echo "readme test: $(PATH=$clean_path command -v "$tool") is on the system PATH; shadowing it with a failing one" >&2
    printf '#!/bin/sh\necho "%s is not to be used" >&2\nexit 127\n' "$tool" > "$hide/$tool"
    chmod +x "$hide/$tool"
    clean_path="$hide:$clean_path"
  fi
done

cd "$work/clone"
log="$work/up.log"
env -i HOME="$HOME" PATH="$clean_path" PROTOC=/bin/false CARGO_TARGET_DIR="$root/target" \
  RUST_LOG=info bash -c "exec $run_cmd" >"$log" 2>&1 &
up_pid=$!
for _ in $(seq 1 1800); do
  grep -q "bulkhead is up" "$log" && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    tail -n 40 "$log"
    echo "readme test: '$run_cmd' ended before bulkhead was up" >&2
    exit 1
  fi
  sleep 1
done
grep -q "bulkhead is up" "$log" || { tail -n 40 "$log"; echo "readme test: not up after 30 min" >&2; exit 1; }

echo "$spec" > web.json
if ! out=$(env -i HOME="$HOME" PATH="$clean_path" "$root/target/release/bulkhead" submit web.json 2>&1); then
  echo "$out"
  tail -n 40 "$log"
  echo "readme test: the walkthrough's submission did not run" >&2
  exit 1
fi
echo "$out" | tail -n 1
echo "readme test: the README's run command brought bulkhead up in a fresh clone and web runs"
