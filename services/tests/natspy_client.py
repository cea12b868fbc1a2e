"""A NATS client that is not ours (nats-py), standing in for the `nats` CLI in tests.

    natspy_client.py URL pub SUBJECT PAYLOAD_FILE [MSG_ID]   -> publishes raw bytes (like `nats pub`)
    natspy_client.py URL pubmany SUBJECT DIR                 -> publishes every file in DIR, in name order
    natspy_client.py URL req SUBJECT DATA                    -> prints the reply (like `nats req`)

With NATSPY_CREDS set to a bulkhead credential, it connects as that identity (its nkey,
its inbox prefix), as `nats --nkey … --inbox-prefix _INBOX.<role>.<name>` would.
"""
import asyncio
import os
import sys
import tomllib

import nats


async def report(e):
    # What the server refused (a permissions violation) goes to stderr.
    print(f"nats error: {e}", file=sys.stderr)


async def connect(url):
    creds = os.environ.get("NATSPY_CREDS")
    if not creds:
        return await nats.connect(url, error_cb=report)
    c = tomllib.load(open(creds, "rb"))
    return await nats.connect(
        url,
        nkeys_seed_str=c["seed"],
        inbox_prefix=f"_INBOX.{c['role']}.{c['name']}",
        error_cb=report,
    )


async def main():
    url, verb, subject = sys.argv[1], sys.argv[2], sys.argv[3]
    nc = await connect(url)
    if verb == "pub":
        data = open(sys.argv[4], "rb").read()
        headers = {"Nats-Msg-Id": sys.argv[5]} if len(sys.argv) > 5 else None
        await nc.publish(subject, data, headers=headers)
        await nc.flush()
    elif verb == "pubmany":
        import os
        d = sys.argv[4]
        for name in sorted(os.listdir(d)):
            await nc.publish(subject, open(os.path.join(d, name), "rb").read())
        await nc.flush()
    elif verb == "req":
        msg = await nc.request(subject, sys.argv[4].encode(), timeout=3)
        if msg.headers and "Nats-Service-Error" in msg.headers:
            print("ERROR", msg.headers["Nats-Service-Error"])
            sys.exit(3)
        sys.stdout.write(msg.data.decode())
    await nc.close()


asyncio.run(main())
