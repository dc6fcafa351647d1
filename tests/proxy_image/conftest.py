"""Shared fixtures: real upstream servers, the proxy in-process or as a subprocess."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonrpc_standins import Chain, QuorumStandin, jsonrpc_config
from proxy_support import LogSink, LoopThread, Proxy, ProxyProcess, UpstreamServer
from quorum_proxy.config import parse_config
from quorum_proxy.server import ProxyRuntime

from bench.geth import GethNode


@pytest.fixture
def backend_loop() -> Iterator[LoopThread]:
    lt = LoopThread("upstreams")
    try:
        yield lt
    finally:
        lt.stop()


@pytest.fixture
def upstreams(backend_loop: LoopThread) -> Iterator[Callable[..., UpstreamServer]]:
    """A factory of upstream servers, all killed at teardown."""
    made: list[UpstreamServer] = []

    def make(name: str = "", port: int = 0) -> UpstreamServer:
        server = UpstreamServer(backend_loop, name or f"u{len(made)}", port)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.kill()


@pytest.fixture
def refused_address() -> Iterator[Callable[[], str]]:
    """host:port of a server that is down: each port is held by a bound socket that never
    listens, until the test ends, so connections are refused and no later bind (the proxy's
    own listeners on port 0) is given it."""
    held: list[socket.socket] = []

    def make() -> str:
        sock = socket.socket()
        held.append(sock)
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"

    yield make
    for sock in held:
        sock.close()


@pytest.fixture
def log_sink() -> LogSink:
    return LogSink()


@pytest.fixture
def start_proxy(log_sink: LogSink) -> Iterator[Callable[..., Proxy]]:
    """Start the proxy in-process on its own loop thread from a config dict."""
    started: list[Proxy] = []
    loops: list[LoopThread] = []

    def start(data: dict[str, Any], resolver: Any = None) -> Proxy:
        data = {"admin": {"listen": "127.0.0.1:0"}, **data}
        config = parse_config(data)
        lt = LoopThread("proxy")
        loops.append(lt)

        async def boot() -> ProxyRuntime:
            kwargs: dict[str, Any] = {"log_stream": log_sink}
            if resolver is not None:
                kwargs["resolver"] = resolver
            runtime = ProxyRuntime(config, **kwargs)
            await runtime.start()
            return runtime

        proxy = Proxy(lt.run(boot()), lt)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            # no suppression: a close that hangs would be a drain that hangs on SIGTERM
            proxy.loop.run(proxy.runtime.close())
        for lt in loops:
            lt.stop()


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], ProxyProcess]]:
    made: list[ProxyProcess] = []

    def start(config: dict[str, Any]) -> ProxyProcess:
        p = ProxyProcess(config, tmp_path)
        made.append(p)
        return p

    try:
        yield start
    finally:
        for p in made:
            p.stop()


@pytest.fixture(scope="module")
def geth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GethNode]:
    """Real geth --dev (HTTP and WS JSON-RPC on one loopback port), stopped at teardown.

    `./dev test` builds it into build/bin; without it the test fails (CI installs it).
    """
    node = GethNode(tmp_path_factory.mktemp("geth")).start()
    try:
        yield node
    finally:
        node.stop()


# the JSON-RPC listener's (test_proxy_jsonrpc*.py): two Quorum stand-ins on one chain, the
# proxy in front of them
@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def nodes(
    upstreams: Callable[..., UpstreamServer], chain: Chain
) -> tuple[QuorumStandin, QuorumStandin]:
    return (
        QuorumStandin(upstreams("quorum-0"), chain),
        QuorumStandin(upstreams("quorum-1"), chain),
    )


@pytest.fixture
def proxy(start_proxy: Callable[..., Proxy], nodes: tuple[QuorumStandin, QuorumStandin]) -> Proxy:
    return start_proxy(jsonrpc_config([nodes[0].address, nodes[1].address]))
