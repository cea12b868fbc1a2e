#!/bin/bash
# A node flooding its heartbeat key, against `bulkhead up --nodes 2`: the CPU seconds of
# bulkhead and nats-server, bulkhead's RSS and the lines it logged, before the flood, right
# after and 10 s later, and the `beat_flood` reports. Run by hand (loadtest/RESULTS.md).
#
# usage: loadtest/flood/run.sh BULKHEAD_BINARY DATA_DIR valid|junk SECS
set -euo pipefail
bin=$1 data=$2 mode=$3 secs=$4
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
rm -rf "$data"
"$bin" up --nodes 2 --data-dir "$data" > "$data.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 60); do grep -q "bulkhead is up" "$data.log" 2>/dev/null && break; sleep 0.5; done
"$bin" node add flood --classes runc --data-dir "$data" > /dev/null
sleep 2
server=$(pgrep -f "nats-server.*$data" | head -1 || pgrep nats-server | head -1)
tick=$(getconf CLK_TCK)
cpu() { awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
snap() {
  echo "$1: bulkhead $(cpu $up) CPU s, nats-server $(cpu "$server") CPU s," \
    "bulkhead RSS $(awk '/VmRSS/{print $2}' /proc/$up/status) KiB, $(wc -l < "$data.log") log lines"
}
snap before
python3 "$here/flood.py" nats://127.0.0.1:4222 "$data/keys/node-flood.creds" "$secs" "$mode"
snap after
sleep 10
snap "10 s later"
echo "beat_flood reports: $(grep -c beat_flood "$data.log" || true)"
