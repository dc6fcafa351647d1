"""Abuse scenarios on connections (issue 13): nginx and quorum_proxy side by side, same limits.

Scenarios (loopback only, bounded in time, every child process stopped on exit):
- pipeline_flood: one client pipelines 10,000 GETs whose answers are 32 KiB and reads nothing;
  how many the front sends upstream, its peak RSS, and legitimate clients meanwhile.
- fd_limit: both fronts run under `prlimit --nofile=256:256`; 400 connections that send nothing
  take every descriptor; legitimate clients (a new connection per request) meanwhile.

Per scenario and front, in bench/abuse.py's shape (one line per row, `{"abuse": ...}` last):
peak RSS (MB, the process and its children), legitimate-client success rate and p99 (ms) during
the abuse, abusive connections and those the front closed, upstream attempts it counted as
failed, and for the flood the requests it sent upstream. Needs `nginx` and `prlimit` on PATH.

Usage: python bench/abuse_connections.py [--only SCENARIO] [--before DIR] [--hold SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httptools
import uvloop
import yaml

REPO = Path(__file__).resolve().parents[1]
PROXY_DIR = REPO / "proxy_image"
ANSWER_BYTES = 32768
PIPELINED = 10_000
FD_LIMIT = 256
# nginx needs worker_connections under its descriptors (each proxied request takes two); the
# proxy's own cap under the same limit is (256 - 32 - 4) // 2 = 110 (server.connection_budget)
NGINX_WORKER_CONNECTIONS = 110
IDLE_ABUSERS = 400
LEGIT_CLIENTS = 4
GET = b"GET /p HTTP/1.1\r\nHost: bench\r\n\r\n"
# both fronts' upstream read timeout, shorter than a run: a front that counts the time an answer
# waits on the client as the upstream's shows it within the run (the default 30 s/60 s would not)
READ_TIMEOUT = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"abuse bench: nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- the upstream: answers ANSWER_BYTES, counts requests (GET /__count tells) ----------------


class _Upstream(asyncio.Protocol):
    count = 0

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.url == b"/__count":
            body = str(_Upstream.count).encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.transport.write(head + body)
            return
        _Upstream.count += 1
        self.transport.write(self.reply)


async def _serve_upstream(port: int, size: int) -> None:
    body = b"x" * size
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Upstream(reply), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def upstream_count(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /__count HTTP/1.1\r\nHost: b\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
            data += s.recv(4096)
    return int(data.split(b"\r\n\r\n", 1)[1])


# --- processes -------------------------------------------------------------------------------


class Children:
    """Processes this script started, each stopped by its pid on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its direct children (nginx's worker), in MB."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class PeakRss:
    """Samples a process tree's RSS every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak, 1)


@dataclass
class Front:
    name: str
    pid: int
    port: int
    # failed upstream attempts the front counted (what takes a server out: max_fails)
    upstream_failures: Callable[[], int]


def nginx_failures(log: Path) -> int:
    """nginx logs each failed upstream attempt at [error] ("upstream timed out", ...)."""
    if not log.exists():
        return 0
    return sum("[error]" in line and "upstream" in line for line in log.read_text().splitlines())


def proxy_failures(admin: int) -> int:
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(
        sum(
            float(line.split()[-1])
            for line in data.decode().splitlines()
            if line.startswith("quorum_proxy_upstream_failures_total{")
        )
    )


def nginx_conf(tmp: Path, port: int, upstream: int) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    temp = " ".join(f"{k}_temp_path {tmp}/{k};" for k in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; {temp}
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout {READ_TIMEOUT}s;
            proxy_pass http://up;
        }}
    }}
}}
"""


def proxy_conf(port: int, upstream: int, admin: int) -> dict[str, Any]:
    return {
        "workers": 1,
        "access_log": False,
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "upstreams": {
            "up": {"servers": [f"127.0.0.1:{upstream}"], "read_timeout": f"{READ_TIMEOUT}s"}
        },
        "listeners": [
            {
                "name": "http",
                "listen": f"127.0.0.1:{port}",
                "routes": [{"prefix": "/", "upstream": "up"}],
            }
        ],
    }


@contextmanager
def front(
    kind: str, tmp: Path, children: Children, upstream: int, proxy_dir: Path, nofile: int | None
) -> Iterator[Front]:
    """nginx or the proxy on a fresh port, optionally under an open-files limit."""
    port = free_port()
    limit = ["prlimit", f"--nofile={nofile}:{nofile}"] if nofile else []
    if kind == "nginx":
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_conf(tmp, port, upstream))
        argv = ["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]
        proc = children.start([*limit, *argv], stderr=subprocess.DEVNULL)
        failures = partial(nginx_failures, tmp / "nginx-error.log")
    else:
        admin = free_port()
        conf = tmp / "proxy.yaml"
        conf.write_text(yaml.safe_dump(proxy_conf(port, upstream, admin)))
        failures = partial(proxy_failures, admin)
        argv = [sys.executable, "-m", "quorum_proxy", "--config", str(conf)]
        env = {**os.environ, "PYTHONPATH": str(proxy_dir)}
        proc = children.start([*limit, *argv], cwd=proxy_dir, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield Front(kind, proc.pid, port, failures)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- clients ---------------------------------------------------------------------------------


@dataclass
class Legit:
    """Clients making one request per new connection, as long as the abuse lasts."""

    port: int
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(LEGIT_CLIENTS):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)

    def _one(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /legit HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"x" * 64)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                good = self._one()
            except OSError:
                good = False
            self.latencies.append(time.monotonic() - start)
            if good:
                self.ok += 1
            else:
                self.failed += 1
                self._stop.wait(0.05)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        total = self.ok + self.failed
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else 0.0
        return {
            "legit_requests": total,
            "legit_ok_pct": round(100 * self.ok / total, 1) if total else 0.0,
            "legit_p99_ms": round(p99, 1),
        }


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def pipeline_flood(f: Front, upstream: int, hold: float) -> dict[str, Any]:
    before = upstream_count(upstream)
    peak = PeakRss(f.pid)
    sock = socket.create_connection(("127.0.0.1", f.port))
    payload = GET * PIPELINED
    threading.Thread(target=_sendall, args=(sock, payload), daemon=True).start()
    legit = Legit(f.port)
    legit.start()
    time.sleep(hold)
    figures = legit.stop()
    sent_upstream = upstream_count(upstream) - before - figures["legit_requests"]
    closed = closed_by_peer(sock)
    sock.close()
    return {
        "peak_rss_mb": peak.stop(),
        **figures,
        "pipelined": PIPELINED,
        "sent_upstream": int(sent_upstream),
        "abusive": 1,
        "closed_by_server": int(closed),
        "upstream_failures": f.upstream_failures(),
    }


def _sendall(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def fd_limit(f: Front, upstream: int, hold: float) -> dict[str, Any]:
    peak = PeakRss(f.pid)
    hoard: list[socket.socket] = []
    for _ in range(IDLE_ABUSERS):
        try:
            hoard.append(socket.create_connection(("127.0.0.1", f.port), timeout=2))
        except OSError:
            break
    legit = Legit(f.port)
    legit.start()
    time.sleep(hold)
    figures = legit.stop()
    closed = sum(closed_by_peer(s) for s in hoard)
    for s in hoard:
        s.close()
    return {
        "peak_rss_mb": peak.stop(),
        **figures,
        "abusive": len(hoard),
        "closed_by_server": closed,
        "upstream_failures": f.upstream_failures(),
    }


SCENARIOS: dict[str, tuple[Callable[[Front, int, float], dict[str, Any]], int | None]] = {
    "pipeline_flood": (pipeline_flood, None),
    "fd_limit": (fd_limit, FD_LIMIT),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument(
        "--before", type=Path, help="a proxy_image dir of another checkout, run as proxy_before"
    )
    parser.add_argument("--hold", type=float, default=8.0, help="seconds of abuse per run")
    args = parser.parse_args()
    missing = [t for t in ("nginx", "prlimit") if shutil.which(t) is None]
    if missing:
        print(
            f"abuse bench: missing {', '.join(missing)} (apt-get install nginx-light util-linux)"
        )
        return 2
    children = Children()
    results: dict[str, dict[str, Any]] = {}
    try:
        up_port = free_port()
        children.start(
            [sys.executable, __file__, "--upstream", str(up_port)], stderr=subprocess.DEVNULL
        )
        wait_port(up_port)
        for name in args.only or list(SCENARIOS):
            run, nofile = SCENARIOS[name]
            results[name] = {}
            fronts = {"nginx": PROXY_DIR, "proxy": PROXY_DIR}
            if args.before is not None:
                fronts["proxy_before"] = args.before
            for kind, proxy_dir in fronts.items():
                with (
                    tempfile.TemporaryDirectory(prefix="abuse-") as tmp,
                    front(kind, Path(tmp), children, up_port, proxy_dir, nofile) as f,
                ):
                    figures = run(f, up_port, args.hold)
                results[name][kind] = figures
                print(f"{name:<18} {kind:<13} {json.dumps(figures)}", flush=True)
    finally:
        children.stop_all()
    print(json.dumps({"abuse": results}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream":
        uvloop.run(_serve_upstream(int(sys.argv[2]), ANSWER_BYTES))
    else:
        sys.exit(main())
