"""A minimal fast upstream for the benchmark: uvloop + httptools.

Usage: python bench/fast_upstream.py PORT NAME [jsonrpc]

Plain: every request gets the same 200 JSON. `jsonrpc`: a fast JSON-RPC stand-in for a Quorum
node, answering each call (or batch) with a result and the call's own id, so that the RPC
route's throughput is the proxy's and not a real node's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import Any

import uvloop

if __package__ in (None, ""):  # run as a script: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import ParsingProtocol

TX_HASH = "0x" + "ab" * 32
RESULTS = {"eth_sendRawTransaction": TX_HASH, "eth_sendTransaction": TX_HASH, "eth_call": "0x"}


def answer(name: str) -> bytes:
    body = b'{"status":"ok","server":"%s"}' % name.encode()
    return http_200(body)


def http_200(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


@functools.lru_cache(maxsize=1024)
def jsonrpc_answer(body: bytes) -> bytes:
    """The stand-in node's answer: a result per call, ids echoed, batches as batches.

    Cached by body: wrk repeats one cycle of bodies, and the stand-in must stay far faster
    than the proxy it measures.
    """

    def one(call: Any) -> dict[str, Any]:
        if not isinstance(call, dict) or not isinstance(call.get("method"), str):
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid"}}
        return {
            "jsonrpc": "2.0",
            "id": call.get("id"),
            "result": RESULTS.get(call["method"], "0x1"),
        }

    try:
        request = json.loads(body)
    except ValueError:
        reply: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}}
    else:
        reply = [one(c) for c in request] if isinstance(request, list) else one(request)
    return http_200(json.dumps(reply, separators=(",", ":")).encode())


class FastUpstream(ParsingProtocol):
    """Answers every request on a keep-alive connection with the same bytes."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(self.reply)


class JsonRpcUpstream(FastUpstream):
    """Reads each body and answers it as a node would (ids echoed)."""

    def __init__(self) -> None:
        super().__init__(b"")
        self.body: list[bytes] = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.transport is not None:
            self.transport.write(jsonrpc_answer(body))


async def serve(port: int, name: str, mode: str) -> None:
    reply = answer(name)
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.Protocol:
        return JsonRpcUpstream() if mode == "jsonrpc" else FastUpstream(reply)

    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
