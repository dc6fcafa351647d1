"""Items 1 and 2: TCP and unix listeners; the TCP stream with primary/backup and half-close."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from proxy_support import (
    Client,
    LoopThread,
    Proxy,
    Reply,
    Seen,
    UpstreamServer,
    free_port,
    http_config,
    request,
    wait_for,
)
from quorum_proxy.server import StartupError


class _Echo(asyncio.Protocol):
    """Echoes with the server's name first; says "bye" and closes after the client's EOF."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.accepted += 1
        self.transport.write(self.server.name.encode() + b":")

    def data_received(self, data: bytes) -> None:
        self.server.received += len(data)
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.write(b":bye")
        self.transport.close()
        return True

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


class EchoServer:
    def __init__(self, loop: LoopThread, name: str) -> None:
        self.name = name
        self.accepted = 0
        self.received = 0

        async def listen() -> asyncio.AbstractServer:
            return await asyncio.get_running_loop().create_server(
                lambda: _Echo(self), "127.0.0.1", 0
            )

        self.loop = loop
        self.server = loop.run(listen())
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        self.loop.call(self.server.close)


@pytest.fixture
def echo(backend_loop: LoopThread) -> Iterator[Callable[[str], EchoServer]]:
    made: list[EchoServer] = []

    def make(name: str) -> EchoServer:
        made.append(EchoServer(backend_loop, name))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            server.close()


def tcp_config(addresses: list[str], **upstream: Any) -> dict[str, Any]:
    return {
        "upstreams": {"quorum": {"servers": addresses, "connect_timeout": "1s", **upstream}},
        "listeners": [
            {
                "name": "quorum-rpc",
                "listen": "127.0.0.1:0",
                "protocol": "tcp",
                "upstream": "quorum",
            }
        ],
    }


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(262144):
        data += chunk
    return bytes(data)


def test_tcp_bytes_are_piped_both_ways_and_half_close_is_relayed(
    echo: Callable[[str], EchoServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = echo("a")
    proxy = start_proxy(tcp_config([a.address]))
    with socket.create_connection(proxy.addr("quorum-rpc"), timeout=5) as s:
        s.sendall(b'{"jsonrpc":"2.0","method":"eth_blockNumber"}')
        s.shutdown(socket.SHUT_WR)  # the server only answers "bye" once it sees our EOF
        assert read_all(s) == b'a:{"jsonrpc":"2.0","method":"eth_blockNumber"}:bye'


def test_tcp_first_healthy_server_is_primary_and_the_rest_are_backup(
    echo: Callable[[str], EchoServer], start_proxy: Callable[..., Proxy]
) -> None:
    primary, backup = echo("primary"), echo("backup")
    proxy = start_proxy(tcp_config([primary.address, backup.address]))
    for _ in range(4):
        with socket.create_connection(proxy.addr("quorum-rpc"), timeout=5) as s:
            assert s.recv(8) == b"primary:"
    assert (primary.accepted, backup.accepted) == (4, 0)


def test_tcp_connect_failure_moves_the_same_client_connection_to_the_backup(
    echo: Callable[[str], EchoServer], start_proxy: Callable[..., Proxy]
) -> None:
    backup = echo("backup")
    proxy = start_proxy(tcp_config([f"127.0.0.1:{free_port()}", backup.address], max_fails=0))
    with socket.create_connection(proxy.addr("quorum-rpc"), timeout=5) as s:
        s.sendall(b"sent before any upstream accepted")
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == b"backup:sent before any upstream accepted:bye"
    assert (
        proxy.metric("quorum_proxy_retries_total", listener="quorum-rpc", route="", reason="error")
        == 1
    )


def test_tcp_client_is_closed_when_no_server_accepts(start_proxy: Callable[..., Proxy]) -> None:
    proxy = start_proxy(tcp_config([f"127.0.0.1:{free_port()}"]))
    with socket.create_connection(proxy.addr("quorum-rpc"), timeout=5) as s:
        assert read_all(s) == b""
    wait_for(
        lambda: (
            proxy.metric(
                "quorum_proxy_tcp_connections_total", listener="quorum-rpc", result="no_upstream"
            )
            == 1
        )
    )


def test_tcp_backpressure_stops_reading_a_client_whose_answers_are_not_read(
    echo: Callable[[str], EchoServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = echo("a")
    proxy = start_proxy(tcp_config([a.address]))
    budget = 256 * 1024 * 1024
    block = b"q" * 65536
    with socket.create_connection(proxy.addr("quorum-rpc"), timeout=5) as s:
        s.setblocking(False)
        sent = 0
        while sent < budget:
            if not select.select([], [s], [], 0.5)[1]:
                break  # the proxy stopped reading us: nobody reads the echoes
            try:
                sent += s.send(block)
            except BlockingIOError:
                continue
        assert sent < budget
        s.setblocking(True)
        s.settimeout(10)
        s.shutdown(socket.SHUT_WR)
        got = len(read_all(s))
    assert got == len(b"a:") + sent + len(b":bye")


def unix_http_config(path: Path, servers: list[str], mode: str | None = "0660") -> dict[str, Any]:
    data = http_config(servers, listen=f"unix:{path}")
    if mode is not None:
        data["listeners"][0]["socket_mode"] = mode
    return data


@pytest.mark.parametrize("mode", ["0660", "0600", "0666"])
def test_unix_listener_serves_http_with_its_configured_mode(
    mode: str,
    tmp_path: Path,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    a = upstreams("tessera")
    path = tmp_path / "tm.ipc"
    proxy = start_proxy(unix_http_config(path, [a.address], mode))
    assert stat.S_IMODE(os.stat(path).st_mode) == int(mode, 8)
    r = request(str(path), "GET", "/upcheck")
    assert r.status == 200 and r.json()["server"] == "tessera"
    assert a.seen[0].headers["x-forwarded-for"] == "unix"
    proxy.loop.run(proxy.runtime.close())
    assert not path.exists()


def test_stale_unix_socket_file_left_by_a_crash_is_replaced(
    tmp_path: Path, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    path = tmp_path / "tm.ipc"
    crashed = socket.socket(socket.AF_UNIX)
    crashed.bind(str(path))
    crashed.close()  # the file stays, nobody listens
    a = upstreams()
    start_proxy(unix_http_config(path, [a.address]))
    assert request(str(path), "GET", "/upcheck").status == 200


def test_unix_socket_with_a_live_listener_is_refused(
    tmp_path: Path, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    path = tmp_path / "tm.ipc"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(StartupError, match="another process is listening on it"):
            start_proxy(unix_http_config(path, [upstreams().address]))
        assert path.exists()
    finally:
        live.close()


def test_unix_path_that_is_not_a_socket_is_refused(
    tmp_path: Path, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    path = tmp_path / "tm.ipc"
    path.write_text("not a socket")
    with pytest.raises(StartupError, match="is not a socket"):
        start_proxy(unix_http_config(path, [upstreams().address]))
    assert path.read_text() == "not a socket"


def test_several_listeners_tcp_http_and_unix_run_in_one_process(
    tmp_path: Path,
    echo: Callable[[str], EchoServer],
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    quorum, tessera = echo("quorum"), upstreams("tessera")
    path = tmp_path / "tm.ipc"
    route = [{"prefix": "/", "upstream": "tessera"}]
    proxy = start_proxy(
        {
            "upstreams": {
                "quorum": {"servers": [quorum.address]},
                "tessera": {"servers": [tessera.address]},
            },
            "listeners": [
                {"name": "rpc", "listen": "127.0.0.1:0", "protocol": "tcp", "upstream": "quorum"},
                {"name": "third-party", "listen": "127.0.0.1:0", "routes": route},
                {"name": "p2p", "listen": "127.0.0.1:0", "routes": route},
                {"name": "q2t", "listen": f"unix:{path}", "routes": route},
            ],
        }
    )
    with socket.create_connection(proxy.addr("rpc"), timeout=5) as s:
        assert s.recv(7) == b"quorum:"
    for name in ("third-party", "p2p"):
        assert request(proxy.addr(name), "GET", "/version").status == 200
    assert request(str(path), "GET", "/version").status == 200
    assert len(tessera.seen) == 3


def test_tcp_primary_that_stops_advancing_blocks_hands_new_connections_to_the_backup(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    primary, backup = upstreams("quorum-0"), upstreams("quorum-1")
    blocks = {"quorum-0": 1, "quorum-1": 1}

    def rpc(name: str) -> Callable[[Seen], Reply]:
        def answer(seen: Seen) -> Reply:
            if name == "quorum-1":
                blocks[name] += 1  # the backup keeps advancing; the primary is stuck
            body = {"jsonrpc": "2.0", "id": 1, "result": hex(blocks[name]), "node": name}
            return Reply(body=json.dumps(body).encode())

        return answer

    primary.handler, backup.handler = rpc("quorum-0"), rpc("quorum-1")
    check = {"type": "jsonrpc", "interval": "50ms", "stall_after": "200ms", "fall": 1, "rise": 1}
    proxy = start_proxy(tcp_config([primary.address, backup.address], health_check=check))

    def node() -> str:
        with Client(proxy.addr("quorum-rpc")) as client:
            r = client.request("POST", "/", b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}')
        return str(r.json()["node"])

    assert node() == "quorum-0"
    wait_for(lambda: node() == "quorum-1", what="the stalled primary skipped")
    assert node() == "quorum-1"
