"""A Python `websockets` server, an independent permessage-deflate implementation, for
tests/compression.rs: it accepts the extension (websockets' default), prints the port it listens
on, then each text message it receives as JSON, inflated by websockets itself, all on stderr
(where tests/common's `Daemon` reads lines)."""

import asyncio
import json
import sys

from websockets.asyncio.server import serve


async def record(connection):
    async for message in connection:
        print("received", json.dumps(message), file=sys.stderr, flush=True)


async def main():
    async with serve(record, "127.0.0.1", 0, compression="deflate") as server:
        print("listening on", server.sockets[0].getsockname()[1], file=sys.stderr, flush=True)
        await server.serve_forever()


asyncio.run(main())
