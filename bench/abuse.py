"""Stress script: nginx and quorum_proxy under abuse, side by side, with the same limits.

Loopback only, bounded in connections and time, every child stopped by its pid. For each
scenario of SCENARIOS and each front end (nginx, the proxy, and optionally the proxy from another
checkout: --before DIR) it prints the peak RSS of the server, the success rate and p99 of a
legitimate client during the abuse, and how the abusive connections ended. The last line is JSON.
See bench/README.md, "Abuse".

Adding a scenario: write `async def my_case(run: Run) -> dict[str, object]` that starts the
abuse through run's helpers (run.front, run.opts, run.upstream_stats(), abusive-connection
helpers below), waits for it to end (bounded by its own cap), and returns its extra figures
(always `abusive` and `closed_by_server`); then add a Scenario(...) row to SCENARIOS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop
import yaml

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
LEGIT_BODY = b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":1}'
# keys an older proxy may not know: dropped from the config of --before
NEW_LIMIT_KEYS = ("body_timeout", "send_timeout", "max_buffered_body_bytes")


# ---------------------------------------------------------------- the upstream (a child process)


def serve_upstream(port: int) -> None:
    """A small upstream: GET /big answers BIG_ANSWER bytes, /_stats its open connections,
    anything else a short JSON once the request body is read."""
    open_conns = [0]
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_ANSWER + b"x" * BIG_ANSWER
    small_body = b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'
    small = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (
            len(small_body),
            small_body,
        )
    )

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            open_conns[0] += 1

        def connection_lost(self, exc: Exception | None) -> None:
            open_conns[0] -= 1

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                assert self.transport is not None
                self.transport.close()

        def on_message_begin(self) -> None:
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            assert self.transport is not None
            if self.url == b"/big":
                self.transport.write(big)
            elif self.url == b"/_stats":
                body = json.dumps({"open": open_conns[0] - 1}).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                self.transport.write(body)
            else:
                self.transport.write(small)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- the two front ends


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_conf(tmp: Path, port: int, upstreams: list[int]) -> str:
    timeouts = " ".join(f"{d} {v}s;" for d, _, v in TIMEOUTS)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstreams)
    temp = " ".join(f"{k}_temp_path {tmp}/{k};" for k in ("proxy", "fastcgi", "uwsgi", "scgi"))
    # as root, nginx's workers would be nobody, who cannot enter the private temp dir
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; {temp}
    {timeouts} keepalive_timeout {KEEPALIVE_TIMEOUT}s;
    client_max_body_size {MAX_BODY};
    upstream up {{ {servers} keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{
            proxy_next_upstream error timeout non_idempotent;
            proxy_read_timeout 30s;
            proxy_pass http://up;
        }}
    }}
}}
"""


def proxy_conf(port: int, admin: int, upstreams: list[int], new_keys: bool) -> dict[str, Any]:
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
                "read_timeout": "30s",
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


class Children:
    """Processes this script started, each stopped by its pid on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.05)
    raise SystemExit(f"abuse: nothing listens on 127.0.0.1:{port} after {timeout}s")


def tree_rss_mb(pid: int) -> float:
    """RSS of pid and its children (nginx's master and worker), in MB."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


class RssSampler:
    """Samples a process tree's RSS every 100 ms in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, tree_rss_mb(self.pid))

    def now(self) -> float:
        return tree_rss_mb(self.pid)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(2)
        return self.peak


@dataclass
class Front:
    """One server under test: its name, pid and address."""

    name: str
    pid: int
    port: int
    upstream_ports: list[int]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@dataclass
class Options:
    scale: float
    cap: float  # seconds an abusive connection is given beyond the limit that should end it

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))


# ---------------------------------------------------------------- clients


@dataclass
class Legit:
    """A legitimate client during the abuse: 4 keep-alive connections, paced requests."""

    addr: tuple[str, int]
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    _stop: bool = False

    async def worker(self) -> None:
        request = (
            b"POST /rpc HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(LEGIT_BODY), LEGIT_BODY)
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


async def upstream_open(run: Run) -> int:
    """Connections the upstreams hold open (from their /_stats)."""
    total = 0
    for port in run.front.upstream_ports:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /_stats HTTP/1.1\r\nHost: s\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        total += json.loads(await reader.readexactly(length))["open"]
        writer.close()
    return total


# ---------------------------------------------------------------- scenarios


@dataclass
class Run:
    """What a scenario gets: the front end, the options, the RSS sampler."""

    front: Front
    opts: Options
    rss: RssSampler


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
    held_before = await upstream_open(run)
    # the server closes the stalled ones at send_timeout; unread, the close shows when read
    await asyncio.sleep(_limit("send_timeout") + run.opts.cap)
    held_after = await upstream_open(run)
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


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Run], Awaitable[dict[str, object]]]
    owner: str  # who maintains it (issue 13 split the work between two helpers)


SCENARIOS: list[Scenario] = [
    Scenario("slow_bodies", slow_bodies, "abusea"),
    Scenario("idle_connections", idle_connections, "abusea"),
    Scenario("stalled_readers", stalled_readers, "abusea"),
]


def _limit(key: str) -> float:
    return float(next(v for _, k, v in TIMEOUTS if k == key))


# ---------------------------------------------------------------- driver


class Bench:
    def __init__(self, tmp: Path, children: Children, opts: Options, before: Path | None) -> None:
        self.tmp = tmp
        self.children = children
        self.opts = opts
        self.fronts: dict[str, Callable[[list[int]], contextlib.AbstractContextManager[Front]]]
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
            for p in ports:
                wait_port(p)
            yield ports
        finally:
            for proc in procs:
                self.children.stop(proc)

    @contextmanager
    def nginx(self, ups: list[int]) -> Iterator[Front]:
        port = free_port()
        conf = self.tmp / "nginx.conf"
        conf.write_text(nginx_conf(self.tmp, port, ups))
        proc = self.children.start(["nginx", "-p", str(self.tmp), "-c", str(conf)])
        try:
            wait_port(port)
            yield Front("nginx", proc.pid, port, ups)
        finally:
            self.children.stop(proc)

    @contextmanager
    def _proxy(
        self, name: str, proxy_dir: Path, ups: list[int], new_keys: bool
    ) -> Iterator[Front]:
        port, admin = free_port(), free_port()
        conf = self.tmp / f"{name}.yaml"
        conf.write_text(yaml.safe_dump(proxy_conf(port, admin, ups, new_keys)))
        proc = self.children.start(
            [sys.executable, "-m", "quorum_proxy", "--config", str(conf)],
            cwd=proxy_dir,
            env={**os.environ, "PYTHONPATH": str(proxy_dir)},
        )
        try:
            wait_port(port)
            yield Front(name, proc.pid, port, ups)
        finally:
            self.children.stop(proc)

    def proxy(self, ups: list[int]) -> contextlib.AbstractContextManager[Front]:
        return self._proxy("proxy", PROXY_DIR, ups, True)

    def proxy_before(self, ups: list[int]) -> contextlib.AbstractContextManager[Front]:
        assert self.before is not None
        return self._proxy("proxy_before", self.before, ups, False)

    def scenario(self, sc: Scenario, front_name: str) -> dict[str, object]:
        with self.upstreams() as ups, self.fronts[front_name](ups) as front:
            rss = RssSampler(front.pid)
            idle_rss = rss.now()

            async def go() -> dict[str, object]:
                legit = Legit(front.addr)
                workers = [asyncio.create_task(legit.worker()) for _ in range(4)]
                try:
                    extra = await sc.run(Run(front, self.opts, rss))
                finally:
                    legit._stop = True
                    await asyncio.gather(*workers, return_exceptions=True)
                return {**legit.figures(), **extra}

            figures = asyncio.run(go())
            peak = rss.stop()
            return {"rss_idle_mb": round(idle_rss, 1), "peak_rss_mb": round(peak, 1), **figures}


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
        "--before", type=Path, help="a proxy_image dir of another checkout, run as proxy_before"
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    if shutil.which("nginx") is None:
        print("abuse: needs nginx on PATH (Debian: apt-get install -y nginx-light)")
        return 2
    raise_fd_limit()
    opts = Options(scale=args.scale, cap=args.cap)
    children = Children()
    results: dict[str, dict[str, object]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
            bench = Bench(Path(tmp), children, opts, args.before)
            for sc in SCENARIOS:
                if args.only and sc.name not in args.only:
                    continue
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
