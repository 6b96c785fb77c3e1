"""A Python `websockets` wss client for tests/wss/run.sh.

Usage: client.py WSS_ADDRESS CA_FILE. Opens wss://WSS_ADDRESS/ with tags {"room":"py"} trusting
CA_FILE, waits until the server routes to it (a probe sent to its own tags comes back), prints
"ready", then prints the next message it receives and sends {"room":"cli"} a request with it.
"""

import asyncio
import json
import ssl
import sys
import urllib.parse

from websockets.asyncio.client import connect

ADDRESS, CA_FILE = sys.argv[1], sys.argv[2]


async def main():
    context = ssl.create_default_context(cafile=CA_FILE)
    tags = urllib.parse.quote(json.dumps({"room": "py"}))
    async with connect(f"wss://{ADDRESS}/?tags={tags}", ssl=context) as socket:
        probe = {"message": "probe", "tags": {"room": "py"}, "metadata": {}}
        await socket.send(json.dumps(probe))
        assert await socket.recv() == '"probe"'
        print("ready", flush=True)
        received = await socket.recv()
        print(received, flush=True)
        reply = {"message": "python got " + json.loads(received), "tags": {"room": "cli"}, "metadata": {}}
        await socket.send(json.dumps(reply))


asyncio.run(asyncio.wait_for(main(), timeout=20))
