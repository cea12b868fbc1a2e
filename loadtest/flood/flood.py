"""Writes one node's heartbeat key as fast as the connection goes, for a while: a node that
ignores its pace. Valid beats (nothing free, so nothing is placed there) or junk.

usage: flood.py URL CREDS SECS [valid|junk]"""

import asyncio
import json
import sys
import time
import tomllib

import nats


async def main():
    url, creds, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    junk = len(sys.argv) > 4 and sys.argv[4] == "junk"
    c = tomllib.load(open(creds, "rb"))
    node = c["name"]
    nc = await nats.connect(
        url, nkeys_seed_str=c["seed"], inbox_prefix=f"_INBOX.{c['role']}.{node}"
    )
    beat = json.dumps(
        {
            "name": node,
            "capacity": {"memory_mb": 1024, "cpu_millicores": 1000, "slots": 4},
            "free": {"memory_mb": 0, "cpu_millicores": 0, "slots": 0},
            "runtime_classes": ["runc"],
            "runtime": "sim",
            "running": 0,
            "interval_ms": 10,
            "at": "now",
        }
    ).encode()
    if junk:
        beat = b"not a heartbeat " * 8
    subject = f"$KV.bulkhead-nodes.{node}"
    n = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        for _ in range(500):
            await nc.publish(subject, beat)
        n += 500
        await nc.flush()
    await nc.close()
    print(f"published {n} in {secs:.0f} s: {n / secs:.0f} a second")


asyncio.run(main())
