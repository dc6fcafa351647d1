"""Stress script: nginx and quorum_proxy under abuse, side by side, with the same limits.

Loopback only, bounded in connections and time, every child stopped by its pid. For each
scenario of SCENARIOS and each front end (nginx, the proxy, and optionally the proxy from another
checkout: --before DIR) it prints the peak RSS of the server, the success rate and p99 of a
legitimate client during the abuse, how the abusive connections ended and the upstream attempts
the server counted as failed. The last line is JSON. See bench/README.md, "Abuse".

Adding a scenario: write `async def my_case(run: Run) -> dict[str, object]` that starts the
abuse through run's helpers (run.front, run.opts, upstream_stats(run), abusive-connection
helpers below), waits for it to end (bounded by its own cap), and returns its extra figures
(always `abusive` and `closed_by_server`); then add a Scenario(...) row to SCENARIOS (with, where
it needs them, an open-files limit, an upstream read timeout, a legitimate client that opens a
connection per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import uvloop
import yaml

if __package__ in (None, ""):  # run as `python bench/abuse.py`: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.nginx import INSTALL, nginx_binary, nginx_conf, running_nginx, upstream_errors
from bench.support import Children, ParsingProtocol, RssSampler, free_port, wait_port

REPO = Path(__file__).resolve().parents[1]
PROXY_DIR = REPO / "proxy_image"
# the same limits for both servers: (nginx directive, proxy limits key, value in seconds)
TIMEOUTS = (
    ("client_header_timeout", "header_timeout", 10),
    ("client_body_timeout", "body_timeout", 10),
    ("send_timeout", "send_timeout", 10),
)
KEEPALIVE_TIMEOUT = 75  # nginx's default; the proxy's is fixed at the same value
MAX_BODY = 2 << 20  # client_max_body_size = limits.max_retry_body_bytes
BIG_ANSWER = 4 << 20  # what GET /big answers: more than the socket buffers hold
MID_ANSWER = 32 << 10  # what GET /32k answers (pipeline_flood)
LEGIT_BODY = b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":1}'
# keys an older proxy may not know: dropped from the config of --before
NEW_LIMIT_KEYS = ("body_timeout", "send_timeout", "max_buffered_body_bytes")
READ_TIMEOUT = 30  # proxy_read_timeout = upstreams.*.read_timeout, unless a scenario sets one
# under a scenario's open-files limit nginx needs worker_connections below it (a proxied request
# takes two); the proxy derives its own cap: (256 - 32 - 4) // 2 = 110 (server.connection_budget)
NGINX_WORKER_CONNECTIONS = {None: 8192, 256: 110}


# ---------------------------------------------------------------- the upstream (a child process)


def serve_upstream(port: int) -> None:
    """A small upstream: GET /big answers BIG_ANSWER bytes, GET /32k MID_ANSWER, /_stats its open
    connections and the requests it answered, anything else a short JSON once the body is read."""
    stats = {"open": 0, "requests": 0}

    def answer(body: bytes, kind: bytes = b"application/json") -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
        return head % (kind, len(body)) + body

    answers = {
        b"/big": answer(b"x" * BIG_ANSWER, b"text/plain"),
        b"/32k": answer(b"x" * MID_ANSWER, b"text/plain"),
    }
    small = answer(b'{"jsonrpc":"2.0","id":1,"result":"0x1"}')

    class Upstream(ParsingProtocol):
        url = b""

        def on_message_begin(self) -> None:
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            stats["open"] += 1

        def connection_lost(self, exc: Exception | None) -> None:
            stats["open"] -= 1

        def on_message_complete(self) -> None:
            assert self.transport is not None
            if self.url == b"/_stats":  # the asking connection and request are not counted
                figures = {**stats, "open": stats["open"] - 1}
                self.transport.write(answer(json.dumps(figures).encode()))
                return
            stats["requests"] += 1
            self.transport.write(answers.get(self.url, small))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- the two front ends


def front_nginx_conf(tmp: Path, port: int, upstreams: list[int], sc: Scenario) -> str:
    timeouts = " ".join(f"{d} {v}s;" for d, _, v in TIMEOUTS)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstreams)
    # under an open-files limit, worker_rlimit_nofile would lift it (nginx runs as root here)
    main = "" if sc.nofile else "worker_rlimit_nofile 16384;"
    http = f"""
    {timeouts} keepalive_timeout {KEEPALIVE_TIMEOUT}s;
    client_max_body_size {MAX_BODY};
    upstream up {{ {servers} keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{
            proxy_next_upstream error timeout non_idempotent;
            proxy_read_timeout {sc.read_timeout}s;
            proxy_pass http://up;
        }}
    }}"""
    wc = NGINX_WORKER_CONNECTIONS[sc.nofile]
    return nginx_conf(tmp, http, worker_connections=wc, main=main)


def proxy_conf(
    port: int, admin: int, upstreams: list[int], new_keys: bool, read_timeout: int = READ_TIMEOUT
) -> dict[str, Any]:
    limits: dict[str, Any] = {key: f"{v}s" for _, key, v in TIMEOUTS}
    limits["max_retry_body_bytes"] = MAX_BODY
    if not new_keys:
        limits = {k: v for k, v in limits.items() if k not in NEW_LIMIT_KEYS}
    return {
        "workers": 1,
        "access_log": False,
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "limits": limits,
        "upstreams": {
            "up": {
                "servers": [f"127.0.0.1:{p}" for p in upstreams],
                "read_timeout": f"{read_timeout}s",
            }
        },
        "listeners": [
            {
                "name": "front",
                "listen": f"127.0.0.1:{port}",
                "protocol": "http",
                # as nginx's proxy_next_upstream ... non_idempotent: every body kept for a retry
                "routes": [
                    {
                        "prefix": "/",
                        "upstream": "up",
                        "retry_on": ["error", "timeout"],
                        "retry_non_idempotent": True,
                    }
                ],
            }
        ],
    }


def proxy_upstream_failures(admin: int) -> int:
    """The proxy's quorum_proxy_upstream_failures_total, all labels summed, from /metrics."""
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    prefix = "quorum_proxy_upstream_failures_total{"
    return int(sum(float(line.split()[-1]) for line in lines if line.startswith(prefix)))


@dataclass
class Front:
    """One server under test: its name, pid and address."""

    name: str
    pid: int
    port: int
    upstream_ports: list[int]
    # failed upstream attempts the server counted (what takes a server out: max_fails)
    upstream_failures: Callable[[], int]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@dataclass
class Options:
    scale: float
    cap: float  # seconds an abusive connection is given beyond the limit that should end it
    hold: float  # seconds of abuse in the scenarios that hold it for a fixed time

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))


# ---------------------------------------------------------------- clients


@dataclass
class Legit:
    """A legitimate client during the abuse: 4 workers, paced requests, each worker on one
    keep-alive connection or (per_request) on a new connection for every request."""

    addr: tuple[str, int]
    per_request: bool = False
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    _stop: bool = False

    async def worker(self) -> None:
        request = (
            b"POST /rpc HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s"
            % (len(LEGIT_BODY), b"Connection: close\r\n" if self.per_request else b"", LEGIT_BODY)
        )
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not self._stop:
            start = time.monotonic()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(*self.addr), 5)
                reader, writer = conn
                writer.write(request)
                status = await asyncio.wait_for(_read_answer(reader), 5)
                ok = status == 200
                if self.per_request:
                    writer.close()
                    conn = None
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                ok = False
                if conn is not None:
                    conn[1].close()
                conn = None
            if ok:
                self.ok += 1
                self.latencies.append(time.monotonic() - start)
            else:
                self.failed += 1
            await asyncio.sleep(0.05)
        if conn is not None:
            conn[1].close()

    def figures(self) -> dict[str, object]:
        total = self.ok + self.failed
        p99 = (
            statistics.quantiles(self.latencies, n=100)[98] * 1000
            if len(self.latencies) >= 2
            else None
        )
        return {
            "legit_requests": total,
            "legit_ok_pct": round(100.0 * self.ok / total, 1) if total else None,
            "legit_p99_ms": round(p99, 1) if p99 is not None else None,
        }


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """Read one response with a Content-Length; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


class Abusive:
    """One abusive connection, watched: how and when the server ended it."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.answer = b""
        self.ended_by_server = False
        self.watch: asyncio.Task[None] | None = None

    async def open(self, addr: tuple[str, int], rcvbuf: int = 0) -> bool:
        try:
            sock = socket.socket()
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, addr)
            self.reader, self.writer = await asyncio.open_connection(sock=sock)
        except OSError:
            return False
        return True

    def watch_for_end(self) -> None:
        """Read what the server sends until it closes (for abusers that do read)."""
        self.watch = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        assert self.reader is not None
        try:
            while chunk := await self.reader.read(65536):
                if len(self.answer) < 64:
                    self.answer += chunk[:64]
        except OSError:
            pass
        self.ended_by_server = True

    def write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    @property
    def how(self) -> str:
        """The status the server answered before it closed, or "close" when it said nothing."""
        if self.answer.startswith(b"HTTP/1."):
            return self.answer.split(b" ", 2)[1].decode()
        return "close"

    def close(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.writer is not None:
            self.writer.transport.abort()


def ended(conns: list[Abusive]) -> dict[str, object]:
    by = Counter(c.how for c in conns if c.ended_by_server)
    return {
        "abusive": len(conns),
        "closed_by_server": sum(by.values()),
        "closed_how": dict(sorted(by.items())),
    }


async def open_many(
    addr: tuple[str, int], count: int, rcvbuf: int = 0, batch: int = 200
) -> list[Abusive]:
    """count connections, opened in batches (the accept queue is not what is measured)."""
    conns: list[Abusive] = []
    for start in range(0, count, batch):
        made = [Abusive() for _ in range(min(batch, count - start))]
        results = await asyncio.gather(*(c.open(addr, rcvbuf) for c in made))
        conns += [c for c, ok in zip(made, results, strict=True) if ok]
        await asyncio.sleep(0.05)
    return conns


async def wait_ended(conns: list[Abusive], cap: float) -> float:
    """Wait until the server ended every connection or cap seconds passed; the time waited."""
    start = time.monotonic()
    while time.monotonic() - start < cap and not all(c.ended_by_server for c in conns):
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def upstream_stats(run: Run) -> dict[str, int]:
    """The upstreams' /_stats summed: connections they hold open, requests they answered."""
    total: Counter[str] = Counter()
    for port in run.front.upstream_ports:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /_stats HTTP/1.1\r\nHost: s\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        total.update(json.loads(await reader.readexactly(length)))
        writer.close()
    return dict(total)


async def raw_connection(addr: tuple[str, int], timeout: float = 5) -> socket.socket | None:
    """A non-blocking socket connected to addr that nothing reads (None if it failed)."""
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed sock (what it sent meanwhile is read and dropped)."""
    try:
        while sock.recv(1 << 20):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


# ---------------------------------------------------------------- scenarios


@dataclass
class Run:
    """What a scenario gets: the front end, the options, the RSS sampler."""

    front: Front
    opts: Options
    rss: RssSampler
    legit: Legit


async def slow_bodies(run: Run) -> dict[str, object]:
    """500 connections announce a 1 MB body on the retry route, send 768 kB slowly, then stall;
    twice, with the RSS measured once each wave has ended (memory given back or not)."""
    figures: dict[str, object] = {}
    size, sent = 1 << 20, 768 << 10
    chunk = b"b" * (64 << 10)
    waves: list[dict[str, object]] = []
    all_conns: list[Abusive] = []
    for _ in range(2):
        conns = await open_many(run.front.addr, run.opts.n(500))
        all_conns += conns
        for c in conns:
            c.watch_for_end()
            c.write(b"POST /push HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(sent // len(chunk)):  # 64 kB per connection every 250 ms
            for c in conns:
                if not c.ended_by_server:
                    c.write(chunk)
            await asyncio.sleep(0.25)
        waited = await wait_ended(conns, _limit("body_timeout") + run.opts.cap)
        for c in conns:
            c.close()
        await asyncio.sleep(5)  # the load is gone: what does the server keep?
        waves.append({**ended(conns), "ended_after_s": round(waited, 1)})
        waves[-1]["rss_after_mb"] = round(run.rss.now(), 1)
    figures.update(ended(all_conns))
    figures["waves"] = waves
    return figures


async def idle_connections(run: Run) -> dict[str, object]:
    """5,000 connections that send nothing."""
    conns = await open_many(run.front.addr, run.opts.n(5000))
    for c in conns:
        c.watch_for_end()
    waited = await wait_ended(conns, _limit("header_timeout") + run.opts.cap)
    for c in conns:
        c.close()
    return {**ended(conns), "ended_after_s": round(waited, 1)}


async def stalled_readers(run: Run) -> dict[str, object]:
    """200 clients ask for a 4 MB answer and read nothing (4 kB receive buffers)."""
    conns = await open_many(run.front.addr, run.opts.n(200), rcvbuf=4096)
    for c in conns:
        c.write(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")
    await asyncio.sleep(2)
    held_before = (await upstream_stats(run))["open"]
    # the server closes the stalled ones at send_timeout; unread, the close shows when read
    await asyncio.sleep(_limit("send_timeout") + run.opts.cap)
    held_after = (await upstream_stats(run))["open"]
    for c in conns:
        assert c.reader is not None
        try:
            got = 0
            while chunk := await asyncio.wait_for(c.reader.read(1 << 20), 2):
                got += len(chunk)
                if len(c.answer) < 64:
                    c.answer += chunk[:64]
                if got > BIG_ANSWER:
                    break
            c.ended_by_server = got < BIG_ANSWER  # cut short: closed at the send timeout
        except OSError:
            c.ended_by_server = True  # reset
        except TimeoutError:
            c.ended_by_server = False  # still open, nothing more to read
        c.close()
    # the answer's head was sent before the stall: the close carries no status of its own
    for c in conns:
        c.answer = b""
    return {
        **ended(conns),
        "upstream_conns_during": held_before,
        "upstream_conns_after_send_timeout": held_after,
    }


async def pipeline_flood(run: Run) -> dict[str, object]:
    """One client pipelines 10,000 GETs of a 32 KiB answer and reads nothing, for --hold
    seconds: how many the server sends upstream (one with backpressure stops when the socket
    buffers are full)."""
    pipelined = run.opts.n(10_000)
    before = (await upstream_stats(run))["requests"]
    sock = await raw_connection(run.front.addr)
    if sock is None:
        return {"abusive": 0, "closed_by_server": 0}
    loop = asyncio.get_running_loop()
    send = asyncio.create_task(
        loop.sock_sendall(sock, b"GET /32k HTTP/1.1\r\nHost: b\r\n\r\n" * pipelined)
    )
    await asyncio.sleep(run.opts.hold)
    sent = (await upstream_stats(run))["requests"] - before - run.legit.ok - run.legit.failed
    closed = closed_by_peer(sock)
    send.cancel()
    with suppress(asyncio.CancelledError, OSError):
        await send
    sock.close()
    return {
        "pipelined": pipelined,
        "sent_upstream": sent,
        "abusive": 1,
        "closed_by_server": int(closed),
    }


async def fd_limit(run: Run) -> dict[str, object]:
    """Under `prlimit --nofile=256:256`, 400 connections that send nothing take every
    descriptor for --hold seconds (not scaled: the count is the limit's). Legitimate clients
    open a connection per request meanwhile."""
    hoard: list[socket.socket] = []
    for _ in range(400):
        sock = await raw_connection(run.front.addr, timeout=2)
        if sock is None:
            break
        hoard.append(sock)
    await asyncio.sleep(run.opts.hold)
    closed = sum(closed_by_peer(s) for s in hoard)
    for s in hoard:
        s.close()
    return {"abusive": len(hoard), "closed_by_server": closed}


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Run], Awaitable[dict[str, object]]]
    owner: str  # who maintains it (issue 13 split the work between two helpers)
    nofile: int | None = None  # both servers started under `prlimit --nofile=N:N`
    # upstream read timeout of both: 2 s, shorter than a run, shows a server that counts the
    # time an answer waits on its client as the upstream's (as a failure, within the run)
    read_timeout: int = READ_TIMEOUT
    legit: Literal["keepalive", "per_request"] = "keepalive"


SCENARIOS: list[Scenario] = [
    Scenario("slow_bodies", slow_bodies, "abusea"),
    Scenario("idle_connections", idle_connections, "abusea"),
    Scenario("stalled_readers", stalled_readers, "abusea"),
    Scenario("pipeline_flood", pipeline_flood, "abuseb", read_timeout=2),
    Scenario("fd_limit", fd_limit, "abuseb", nofile=256, read_timeout=2, legit="per_request"),
]


def _limit(key: str) -> float:
    return float(next(v for _, k, v in TIMEOUTS if k == key))


# ---------------------------------------------------------------- driver


class Bench:
    def __init__(self, tmp: Path, children: Children, opts: Options, before: Path | None) -> None:
        self.tmp = tmp
        self.children = children
        self.opts = opts
        self.fronts: dict[str, Callable[[list[int], Scenario], AbstractContextManager[Front]]]
        self.fronts = {"nginx": self.nginx, "proxy": self.proxy}
        self.before = before
        if before is not None:
            self.fronts["proxy_before"] = self.proxy_before

    @contextmanager
    def upstreams(self) -> Iterator[list[int]]:
        ports = [free_port(), free_port()]
        procs = [
            self.children.start([sys.executable, __file__, "--serve-upstream", str(p)])
            for p in ports
        ]
        try:
            for p, proc in zip(ports, procs, strict=True):
                wait_port(p, proc=proc)
            yield ports
        finally:
            for proc in procs:
                self.children.stop(proc)

    @staticmethod
    def limit(sc: Scenario) -> list[str]:
        return ["prlimit", f"--nofile={sc.nofile}:{sc.nofile}"] if sc.nofile else []

    @contextmanager
    def nginx(self, ups: list[int], sc: Scenario) -> Iterator[Front]:
        port = free_port()
        tmp = Path(tempfile.mkdtemp(prefix="nginx-", dir=self.tmp))  # a fresh error log
        conf = front_nginx_conf(tmp, port, ups, sc)
        with running_nginx(tmp, conf, port, prefix=self.limit(sc)) as proc:
            yield Front("nginx", proc.pid, port, ups, partial(upstream_errors, tmp))

    @contextmanager
    def _proxy(
        self, name: str, proxy_dir: Path, ups: list[int], sc: Scenario, new_keys: bool
    ) -> Iterator[Front]:
        port, admin = free_port(), free_port()
        conf = self.tmp / f"{name}.yaml"
        conf.write_text(yaml.safe_dump(proxy_conf(port, admin, ups, new_keys, sc.read_timeout)))
        proc = self.children.start(
            [*self.limit(sc), sys.executable, "-m", "quorum_proxy", "--config", str(conf)],
            cwd=proxy_dir,
            env={**os.environ, "PYTHONPATH": str(proxy_dir)},
        )
        try:
            wait_port(port, proc=proc)
            yield Front(name, proc.pid, port, ups, partial(proxy_upstream_failures, admin))
        finally:
            self.children.stop(proc)

    def proxy(self, ups: list[int], sc: Scenario) -> AbstractContextManager[Front]:
        return self._proxy("proxy", PROXY_DIR, ups, sc, True)

    def proxy_before(self, ups: list[int], sc: Scenario) -> AbstractContextManager[Front]:
        assert self.before is not None
        return self._proxy("proxy_before", self.before, ups, sc, False)

    def scenario(self, sc: Scenario, front_name: str) -> dict[str, object]:
        with self.upstreams() as ups, self.fronts[front_name](ups, sc) as front:
            rss = RssSampler(front.pid)
            idle_rss = rss.now()

            async def go() -> dict[str, object]:
                legit = Legit(front.addr, per_request=sc.legit == "per_request")
                workers = [asyncio.create_task(legit.worker()) for _ in range(4)]
                try:
                    extra = await sc.run(Run(front, self.opts, rss, legit))
                finally:
                    legit._stop = True
                    await asyncio.gather(*workers, return_exceptions=True)
                return {**legit.figures(), **extra}

            figures = asyncio.run(go())
            peak = rss.stop()
            return {
                "rss_idle_mb": round(idle_rss, 1),
                "peak_rss_mb": round(peak, 1),
                **figures,
                "upstream_failures": front.upstream_failures(),
            }


def raise_fd_limit() -> None:
    """Thousands of sockets: the soft limit up to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="connection counts times this (0.1: quick look)"
    )
    parser.add_argument(
        "--cap", type=float, default=8.0, help="seconds allowed past the limit that should act"
    )
    parser.add_argument(
        "--hold", type=float, default=8.0, help="seconds of abuse in pipeline_flood and fd_limit"
    )
    parser.add_argument(
        "--before", type=Path, help="a proxy_image dir of another checkout, run as proxy_before"
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    chosen = [sc for sc in SCENARIOS if not args.only or sc.name in args.only]
    needs = ["nginx"] + (["prlimit"] if any(sc.nofile for sc in chosen) else [])
    missing = [tool for tool in needs if shutil.which(tool) is None]
    if nginx_binary() is None or missing:
        print(f"abuse: needs {', '.join(missing)} on PATH (Debian: {INSTALL} util-linux)")
        return 2
    raise_fd_limit()
    opts = Options(scale=args.scale, cap=args.cap, hold=args.hold)
    children = Children()
    results: dict[str, dict[str, object]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
            bench = Bench(Path(tmp), children, opts, args.before)
            for sc in chosen:
                results[sc.name] = {}
                for front in bench.fronts:
                    row = bench.scenario(sc, front)
                    results[sc.name][front] = row
                    print(f"{sc.name:<18} {front:<13} {json.dumps(row)}", flush=True)
    finally:
        children.stop_all()
    print(json.dumps({"abuse": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
