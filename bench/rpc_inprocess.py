"""The proxy's own Python per JSON-RPC call, without sockets: the relay and the engine.

Usage: python bench/rpc_inprocess.py [--calls N] [--repeats R]

Drives one JSON-RPC listener's client protocol and one pooled upstream connection with fake
transports on a uvloop loop: each call is a plain request handed to data_received, then the
node's answer handed to the upstream connection's data_received. No syscalls, no peer: what is
left is the interpreter's share of a call (what the RPC rows of run_bench.py pay on top of the
kernel's), steadier than req/s on a shared machine. Three rows: the relay as built (its
compiled lane, _relay_scan.c, when the module is built), the relay's Python path (the lane
off), and the engine (every request through the HTTP engine: the relay declines it). The best
of R repeats of N calls; a client connection is replaced every 500 calls (under
limits.keepalive_requests). Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

if __package__ in (None, ""):  # run as a script: import bench.* and the proxy from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy_image"))

from quorum_proxy import jsonrpc_relay
from quorum_proxy.config import parse_config
from quorum_proxy.jsonrpc_relay import RelayClientProtocol
from quorum_proxy.relay_scan import Lane
from quorum_proxy.server import ProxyRuntime
from quorum_proxy.upstream import UpstreamConnection

from bench.run_bench import proxy_rpc_conf

BODY = (
    b'{"jsonrpc":"2.0","method":"eth_getBalance",'
    b'"params":["0x5b38da6a701c568545dcfcb03fcb875f56beddc4","latest"],"id":3}'
)
REQUEST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:22000\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
RESULT = b'{"jsonrpc":"2.0","id":3,"result":"0x1"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Origin\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(RESULT), RESULT)
)


class FakeTransport(asyncio.Transport):
    """Takes writes and drops them; says it is open."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


async def measure(calls: int, repeats: int) -> float:
    """Best microseconds per call over the repeats."""
    runtime = ProxyRuntime(parse_config(proxy_rpc_conf("jsonrpc", 1, 2, 3, 4)))
    listener = runtime.listeners["quorum-rpc"]
    server = listener.route.group.servers[0]  # type: ignore[union-attr]
    conn = UpstreamConnection(server)
    conn.connection_made(FakeTransport())
    server.idle.append(conn)
    client_transport = FakeTransport()
    state: dict[str, Any] = {}

    def fresh() -> None:
        old = state.get("client")
        if old is not None:
            old.connection_lost(None)
        client = listener.protocol()
        client.connection_made(client_transport)
        state["client"] = client

    fresh()
    best = float("inf")
    for repeat in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        for i in range(calls):
            state["client"].data_received(REQUEST)
            conn.data_received(ANSWER)
            if i % 32 == 31:
                await asyncio.sleep(0)  # the write batch is flushed as the loop turns
            if i % 500 == 499:
                fresh()
        await asyncio.sleep(0)
        if repeat:
            best = min(best, time.perf_counter() - start)
    if client_transport.written < calls:
        raise SystemExit(f"only {client_transport.written} answers for {calls} calls")
    return best * 1e6 / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    relay = uvloop.run(measure(args.calls, args.repeats))
    lane = Lane is not None
    print(f"relay:        {relay:6.2f} us per call (compiled lane: {lane})", flush=True)
    jsonrpc_relay.Lane = None  # the relay's Python path (_read, _relay)
    python = uvloop.run(measure(args.calls, args.repeats))
    print(f"relay, Python: {python:6.2f} us per call", flush=True)
    RelayClientProtocol._relay = lambda self, data: False  # type: ignore[method-assign]
    engine = uvloop.run(measure(args.calls, args.repeats))
    print(f"engine:       {engine:6.2f} us per call", flush=True)
    print(
        json.dumps(
            {
                "relay_us": round(relay, 2),
                "relay_python_us": round(python, 2),
                "engine_us": round(engine, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
