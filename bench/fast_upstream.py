"""A minimal fast upstream for the benchmark: uvloop + httptools, a fixed 200 JSON answer.

Usage: python bench/fast_upstream.py PORT NAME
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import uvloop


def answer(name: str) -> bytes:
    body = b'{"status":"ok","server":"%s"}' % name.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class FastUpstream(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same bytes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(self.reply)


async def serve(port: int, name: str) -> None:
    reply = answer(name)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FastUpstream(reply), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
