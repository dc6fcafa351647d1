"""Test support: real upstream servers, HTTP clients, the proxy as a thread or a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httptools
import pytest
import uvloop
import yaml
from quorum_proxy.server import ProxyRuntime

from bench.nginx import nginx_binary as nginx_on_path
from bench.nginx import nginx_conf, running_nginx
from bench.support import ParsingProtocol

T = TypeVar("T")
PROXY_DIR = Path(__file__).resolve().parents[2] / "proxy_image"
PROXY_COMMAND = [sys.executable, "-m", "quorum_proxy"]
TIMEOUT = 5.0


class LoopThread:
    """An event loop (uvloop) running in a thread; tests call into it with run()."""

    def __init__(self, name: str) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@dataclass
class Seen:
    """A request as an upstream received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    """What an upstream answers; the special fields make it misbehave."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    chunked: bool = False
    garbage: bool = False
    close: bool = False
    stall_body: bool = False
    interim: bool = False


class _UpstreamProtocol(ParsingProtocol):
    def __init__(self, server: UpstreamServer) -> None:
        super().__init__()
        self.server = server
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.conns.add(self)
        self.server.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        seen = Seen(
            self.parser.get_method().decode(),
            self.url.decode(),
            self.headers,
            b"".join(self.body),
        )
        self.server.seen.append(seen)
        reply = self.server.handler(seen)
        if reply.delay:
            asyncio.get_running_loop().call_later(reply.delay, self._reply, reply, seen)
        else:
            self._reply(reply, seen)

    def _reply(self, reply: Reply, seen: Seen) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if reply.close:
            t.abort()
            return
        if reply.interim:
            t.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        if reply.garbage:
            t.write(b"NOT HTTP AT ALL\r\n\r\n")
            t.close()
            return
        body = (
            reply.body
            or json.dumps(
                {"server": self.server.name, "path": seen.path, "body_len": len(seen.body)}
            ).encode()
        )
        head = [f"HTTP/1.1 {reply.status} X"]
        head += [f"{k}: {v}" for k, v in reply.headers]
        head.append("Content-Type: application/json")
        if reply.chunked:
            head.append("Transfer-Encoding: chunked")
            mid = len(body) // 2
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:mid], body[mid:]) if part
            )
            t.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload + b"0\r\n\r\n")
        elif reply.stall_body:
            # announce the whole body, send half of it, then go silent with the socket open
            head.append(f"Content-Length: {len(body)}")
            t.write(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
        else:
            head.append(f"Content-Length: {len(body)}")
            # a HEAD answer announces the body GET would get, and sends none (RFC 9110 9.3.2)
            payload = b"" if seen.method == "HEAD" else body
            t.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)


class UpstreamServer:
    """A small HTTP server standing in for Tessera or Quorum; killed and restarted by tests."""

    def __init__(self, loop: LoopThread, name: str, port: int = 0) -> None:
        self.loop = loop
        self.name = name
        self.port = port
        self.seen: list[Seen] = []
        self.conns: set[_UpstreamProtocol] = set()
        self.accepted = 0
        self.handler: Callable[[Seen], Reply] = lambda seen: Reply()
        self.server: asyncio.AbstractServer | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        async def listen() -> asyncio.AbstractServer:
            loop = asyncio.get_running_loop()
            return await loop.create_server(
                lambda: _UpstreamProtocol(self), "127.0.0.1", self.port, reuse_address=True
            )

        self.server = self.loop.run(listen())
        self.port = self.server.sockets[0].getsockname()[1]

    def kill(self) -> None:
        """Stop listening and cut every open connection, like a crashed process."""

        def stop() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.abort()

        self.loop.call(stop)


@dataclass
class Proxy:
    runtime: ProxyRuntime
    loop: LoopThread

    def addr(self, listener: str) -> Any:
        return self.runtime.addresses[listener]

    def port(self, listener: str) -> int:
        return int(self.runtime.addresses[listener][1])

    def metric(self, name: str, **labels: str) -> float:
        """The value of one series from /metrics' families (0 when absent)."""

        def read() -> float:
            m = self.runtime.metrics
            for family in (
                m.requests,
                m.retries,
                m.upstream_failures,
                m.mirror,
                m.tcp_connections,
                m.bad_requests,
                m.dns_lookup_failures,
            ):
                if family.name == name:
                    key = tuple(labels[k] for k in family.labels)
                    return family.get(key)
            raise KeyError(name)

        return self.loop.call(read)

    def metric_sum(self, name: str, **labels: str) -> float:
        def read() -> float:
            m = self.runtime.metrics
            for family in (m.requests, m.retries, m.upstream_failures, m.mirror):
                if family.name == name:
                    idx = {k: family.labels.index(k) for k in labels}
                    return sum(
                        v
                        for key, v in family.values.items()
                        if all(key[idx[k]] == labels[k] for k in labels)
                    )
            raise KeyError(name)

        return self.loop.call(read)


class LogSink:
    """Collects access-log lines written by the proxy."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        return

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def http_config(
    servers: list[str],
    route: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    limits: dict[str, Any] | None = None,
    listen: str = "127.0.0.1:0",
    **extra: Any,
) -> dict[str, Any]:
    """A one-listener HTTP config named "p2p" over the upstream "tessera"."""
    default_route = {"prefix": "/", "upstream": "tessera", **(route or {})}
    data: dict[str, Any] = {
        "upstreams": {"tessera": {"servers": servers, **(upstream or {})}},
        "listeners": [
            {
                "name": "p2p",
                "listen": listen,
                "protocol": "http",
                "routes": routes or [default_route],
            }
        ],
        **extra,
    }
    if limits:
        data["limits"] = limits
    return data


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Collect:
    """Parser callbacks gathering every response on a connection, in order."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        self.headers = {}
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done.append(
            Response(self.parser.get_status_code(), self.headers, b"".join(self.body))
        )


class Client:
    """A keep-alive HTTP/1.1 client over one real socket (tcp or unix)."""

    def __init__(self, addr: Any, timeout: float = TIMEOUT) -> None:
        family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr if isinstance(addr, str) else tuple(addr))
        self.responses = _Collect()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        return self.read_head_response() if method == "HEAD" else self.read_response()

    def read_response(self) -> Response:
        """The next response; pipelined ones that arrived together are kept for later calls."""
        collect = self.responses
        while not collect.done:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before a complete response")
            with contextlib.suppress(httptools.HttpParserUpgrade):
                collect.parser.feed_data(data)
        return collect.done.pop(0)

    def read_head_response(self) -> Response:
        """An answer to HEAD: its Content-Length announces a body that never comes."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before a complete response")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert rest == b"", "a HEAD answer carried a body"
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        return Response(int(status_line.split()[1]), headers, b"")


def request(addr: Any, method: str, path: str, body: bytes | None = None, **kw: Any) -> Response:
    with Client(addr) as c:
        return c.request(method, path, body, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str:
    """nginx's path; under CI its absence fails (./dev installs nginx-light), locally skips."""
    path = nginx_on_path()
    if path:
        return path
    reason = "nginx is not installed (apt-get install nginx-light; apt-packages.txt lists it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason + "; CI is not set, so skipping locally")


@contextlib.contextmanager
def nginx_front(
    tmp: Path, http: str, port: int, worker_connections: int = 64
) -> Iterator[tuple[str, int]]:
    """Debian's nginx on a private config (bench/nginx.py) with `http` as its http block,
    listening on port (which http's server block names); its address."""
    conf = nginx_conf(tmp, http, worker_connections=worker_connections)
    with running_nginx(tmp, conf, port, binary=nginx_binary()):
        yield ("127.0.0.1", port)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (a reset ends it too), and when it closed
    (seconds from now)."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    """Poll until predicate holds; fail the test (not hang) when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class ProxyProcess:
    """`python -m quorum_proxy` as a child process (exit codes, signals, workers)."""

    def __init__(self, config: dict[str, Any], tmp_path: Path) -> None:
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [*PROXY_COMMAND, "--config", str(self.config_path)],
            cwd=PROXY_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(PROXY_DIR)},
        )

    def wait_ready(self, admin_port: int) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"proxy exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                return request(("127.0.0.1", admin_port), "GET", "/healthz").status == 200
            except OSError:
                return False

        wait_for(up, 10, "proxy admin port")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
