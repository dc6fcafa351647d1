"""Benchmark: quorum_proxy against nginx, each pinned to core 0, wrk on core 1.

Installs nothing: needs `nginx` (with the stream module), `wrk` and `taskset` on PATH
(Debian: `apt-get install -y nginx-light libnginx-mod-stream wrk`), and for the RPC failover
run the geth that `./dev` installs in build/bin. See bench/README.md.
The last line printed is the JSON summary of issues 3 and 13.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
import yaml

if __package__ in (None, ""):  # run as `python bench/run_bench.py`: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.geth import GETH, GethNode
from bench.rpc_load import (
    MIX,
    PARAMS,
    RAW,
    SINK,
    UNSAFE,
    LoadResult,
    RawTransactions,
    call_body,
)
from bench.rpc_load import run_load as rpc_load
from bench.support import Children, free_port, wait_port
from node_bootstrap.proxy import standalone_proxy_config

REPO = Path(__file__).resolve().parents[1]
PROXY_DIR = REPO / "proxy_image"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
KINDS = ("http", "tcp", "mirror")
ROUTES = (*KINDS, "rpc")
# The RPC route (22000) three ways: the seed's nginx `stream`, the proxy's L4 and JSON-RPC modes
RPC_MODES = ("nginx", "l4", "jsonrpc")
RPC_PROTOCOL = {"l4": "tcp", "jsonrpc": "jsonrpc"}
# ~200 bytes of JSON, like a Tessera third-party /storeraw call
BODY = json.dumps(
    {
        "payload": "Zm9vYmFyYmF6cXV4IGEgcHJpdmF0ZSB0cmFuc2FjdGlvbiBwYXlsb2FkIGZvciB0ZXN0aW5n",
        "from": "BULeR8JyUWhiuuCMU/HLA0Q5pzkYT+cHII3ZKBey3Bo=",
        "privateFor": ["QfeDAys9MPDs2XHExtc84jKGHxZg/aj52DTh0vtA3Xc="],
    }
)
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = {json.dumps(BODY)}
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Ports:
    up_a: int
    up_b: int
    tcp: int
    third_party: int
    p2p: int

    @classmethod
    def fresh(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))


class Processes(Children):
    """Children of this script, each pinned to a core, all stopped (by pid) on exit."""

    def start(self, argv: list[str], core: int, **kw: Any) -> subprocess.Popen[bytes]:  # type: ignore[override]
        return super().start(["taskset", "-c", str(core), *argv], **kw)


def stream_block(primary: str, backup: str, port: int) -> str:
    """The seed's L4 block for Quorum's RPC: one primary, the other `backup`."""
    return f"""stream {{
    upstream quorum {{ server {primary}; server {backup} backup; }}
    server {{ listen 127.0.0.1:{port}; proxy_pass quorum; }}
}}"""


def nginx_head(tmp: Path) -> str:
    """The main context of both nginx configs: the stream module, one worker, files in tmp."""
    return f"""
load_module {STREAM_MODULE};
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}"""


def nginx_rpc_conf(tmp: Path, primary: int, backup: int, port: int) -> str:
    """nginx for the RPC route only: the seed's `stream` block in front of two nodes."""
    return f"""{nginx_head(tmp)}
{stream_block(f"127.0.0.1:{primary}", f"127.0.0.1:{backup}", port)}
"""


def proxy_rpc_conf(mode: str, primary: int, backup: int, port: int, admin: int) -> dict[str, Any]:
    """The proxy for the RPC route only, its Quorum upstream checked as the stack does."""
    stack = standalone_proxy_config(quorum_dns_names=["a"], tessera_dns_names=["t"])
    return {
        "workers": 1,
        "access_log": False,
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "upstreams": {
            "quorum": {
                "servers": [f"127.0.0.1:{primary}", f"127.0.0.1:{backup}"],
                "health_check": stack["upstreams"]["quorum"]["health_check"],
            }
        },
        "listeners": [
            {
                "name": "quorum-rpc",
                "listen": f"127.0.0.1:{port}",
                "protocol": RPC_PROTOCOL[mode],
                "upstream": "quorum",
            }
        ],
    }


def rpc_wrk_script() -> str:
    """wrk: POST the RPC mix in order (the raw transaction is one signed transfer)."""
    raw = RawTransactions("wrk", 1).next(0).raw
    bodies = []
    for n, method in enumerate(MIX):
        if method == RAW:
            params: list[Any] = [raw]
        elif method == UNSAFE:
            params = [{"from": SINK, "to": SINK, "value": "0x1"}]
        else:
            params = PARAMS[method]
        bodies.append(json.dumps(call_body(method, params, n).decode()))
    return f"""
local bodies = {{ {", ".join(bodies)} }}
local requests = {{}}
local i = 0
init = function(args)
  for n, body in ipairs(bodies) do
    requests[n] = wrk.format("POST", "/", {{["Content-Type"] = "application/json"}}, body)
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"""


def nginx_conf(tmp: Path, up: Ports, own: Ports) -> str:
    """The seed's standalone nginx config made valid, with upstream keep-alive (fairest nginx)."""
    a, b = f"127.0.0.1:{up.up_a}", f"127.0.0.1:{up.up_b}"
    proxy_http = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    return f"""{nginx_head(tmp)}
{stream_block(a, b, own.tcp)}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream thirdparty {{ server {a}; server {b}; keepalive 64; }}
    upstream p2p {{ server {a}; server {b}; keepalive 64; }}
    upstream p2p-mirror {{ server {a}; server {b} backup; keepalive 64; }}
    upstream p2p-copy {{ server {b}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{own.third_party};
        location / {{
            proxy_next_upstream error timeout http_404 non_idempotent;
            {proxy_http}
            proxy_pass http://thirdparty;
        }}
    }}
    server {{
        listen 127.0.0.1:{own.p2p};
        {proxy_http}
        location /resend {{ proxy_pass http://p2p/resend; }}
        location /push {{ proxy_pass http://p2p/push; }}
        location /partyinfo {{
            mirror /partyinfo-mirror;
            proxy_pass http://p2p-mirror/partyinfo;
        }}
        location = /partyinfo-mirror {{ internal; proxy_pass http://p2p-copy/partyinfo; }}
        location /partyinfo/validate {{ proxy_pass http://p2p/partyinfo/validate; }}
        location /upcheck {{ proxy_pass http://p2p/upcheck; }}
        location / {{ proxy_pass http://p2p; }}
    }}
}}
"""


def proxy_conf(up: Ports, own: Ports, admin: int) -> dict[str, object]:
    """The same routes for quorum_proxy (README's standalone config, loopback ports)."""
    servers = [f"127.0.0.1:{up.up_a}", f"127.0.0.1:{up.up_b}"]
    retry_all = {"retry_on": ["error", "timeout", "http_404"], "retry_non_idempotent": True}
    return {
        "workers": 1,
        "access_log": False,
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "upstreams": {
            "quorum": {"servers": servers},
            "third_party": {"servers": servers},
            "p2p": {"servers": servers},
        },
        "listeners": [
            {
                "name": "quorum-rpc",
                "listen": f"127.0.0.1:{own.tcp}",
                "protocol": "tcp",
                "upstream": "quorum",
            },
            {
                "name": "third-party",
                "listen": f"127.0.0.1:{own.third_party}",
                "routes": [{"prefix": "/", "upstream": "third_party", **retry_all}],
            },
            {
                "name": "p2p",
                "listen": f"127.0.0.1:{own.p2p}",
                "routes": [
                    {"prefix": "/resend", "upstream": "p2p"},
                    {"prefix": "/push", "upstream": "p2p"},
                    {
                        "prefix": "/partyinfo",
                        "upstream": "p2p",
                        **retry_all,
                        # above wrk's 32 connections: no copy is dropped for lack of room
                        "mirror": {"upstream": "p2p", "max_in_flight": 1024},
                    },
                    {"prefix": "/partyinfo/validate", "upstream": "p2p"},
                    {"prefix": "/upcheck", "upstream": "p2p"},
                    {"prefix": "/", "upstream": "p2p"},
                ],
            },
        ],
    }


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    errors: int
    requests: int


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its direct children (nginx's worker): the scheduler's run
    time of each of their threads (/proc/PID/task/TID/schedstat, in ns; user + system ticks of
    10 ms would round a short run's share away)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if int(entry.name) != pid and parent != pid:
                continue
            for task in (entry / "task").iterdir():
                total += int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise SystemExit(f"bench: cannot read wrk's output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if sockets:
        errors += sum(int(x) for x in sockets.groups())
    requests = re.search(r"(\d+) requests in", out)
    return WrkResult(
        float(rps.group(1)),
        float(p99.group(1)) * _UNITS[p99.group(2)],
        errors,
        int(requests.group(1)) if requests else 0,
    )


class Bench:
    def __init__(
        self,
        tmp: Path,
        seconds: float,
        rounds: int,
        only: tuple[str, ...] = ROUTES,
        rpc_seconds: float = 20.0,
    ) -> None:
        self.tmp = tmp
        self.only = only
        self.seconds = seconds
        self.rounds = rounds
        self.rpc_seconds = rpc_seconds
        self.procs = Processes()
        self.geth: list[GethNode] = []
        self.up = Ports.fresh()
        self.nginx_ports = Ports.fresh()
        self.proxy_ports = Ports.fresh()
        self.script = tmp / "post.lua"
        self.script.write_text(WRK_SCRIPT)
        self.upstreams: dict[str, subprocess.Popen[bytes]] = {}
        self.admin = 0

    def start_upstream(self, name: str) -> None:
        port = self.up.up_a if name == "a" else self.up.up_b
        proc = self.upstreams[name] = self.procs.start(
            [sys.executable, str(REPO / "bench" / "fast_upstream.py"), str(port), name], core=1
        )
        wait_port(port, proc=proc)

    def kill_upstream(self, name: str) -> None:
        self.procs.stop(self.upstreams[name], signal.SIGKILL)

    @contextmanager
    def nginx(self) -> Iterator[tuple[Ports, int]]:
        conf = self.tmp / "nginx.conf"
        conf.write_text(nginx_conf(self.tmp, self.up, self.nginx_ports))
        proc = self.procs.start(
            ["nginx", "-p", str(self.tmp), "-c", str(conf), "-g", "daemon off;"], core=0
        )
        try:
            wait_port(self.nginx_ports.p2p, proc=proc)
            yield self.nginx_ports, proc.pid
        finally:
            self.procs.stop(proc, signal.SIGQUIT)

    @contextmanager
    def proxy(self) -> Iterator[tuple[Ports, int]]:
        admin = self.admin = free_port()
        conf = self.tmp / "proxy.yaml"
        conf.write_text(yaml.safe_dump(proxy_conf(self.up, self.proxy_ports, admin)))
        proc = self.procs.start(
            [sys.executable, "-m", "quorum_proxy", "--config", str(conf)],
            core=0,
            cwd=PROXY_DIR,
            env={**os.environ, "PYTHONPATH": str(PROXY_DIR)},
        )
        try:
            wait_port(admin, proc=proc)
            yield self.proxy_ports, proc.pid
        finally:
            self.procs.stop(proc)

    def metric_sums(self, admin: int, prefix: str) -> dict[str, int]:
        """Each of the proxy's metrics named `prefix...`, summed over its labels."""
        with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = bytearray()
            while chunk := s.recv(65536):
                data += chunk
        sums: dict[str, int] = {}
        pattern = rb"^" + re.escape(prefix.encode()) + rb"(\w+?)(?:_total)?(?:\{[^}]*\})? (\S+)$"
        for m in re.finditer(pattern, data, re.MULTILINE):
            name = m.group(1).decode()
            sums[name] = sums.get(name, 0) + int(float(m.group(2)))
        return sums

    def mirror_results(self) -> dict[str, int]:
        """Mirror outcomes from the proxy's /metrics: copies must not be dropped to win."""
        with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = bytearray()
            while chunk := s.recv(65536):
                data += chunk
        results: dict[str, int] = {}
        for m in re.finditer(
            rb'quorum_proxy_mirror_requests_total\{[^}]*result="(\w+)"\} (\S+)', data
        ):
            results[m.group(1).decode()] = results.get(m.group(1).decode(), 0) + int(
                float(m.group(2))
            )
        return results

    def url(self, ports: Ports, kind: str) -> str:
        if kind == "tcp":
            return f"http://127.0.0.1:{ports.tcp}/"
        if kind == "mirror":
            return f"http://127.0.0.1:{ports.p2p}/partyinfo"
        return f"http://127.0.0.1:{ports.third_party}/storeraw"

    def throughput(self, kinds: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
        rps: dict[str, dict[str, list[float]]] = {k: {"proxy": [], "nginx": []} for k in kinds}
        for n in range(self.rounds):
            for name, server in (("nginx", self.nginx), ("proxy", self.proxy)):
                with server() as (ports, pid):
                    for kind in kinds:
                        wrk(self.url(ports, kind), self.script, 32, 1)  # warm the pools
                        cpu = cpu_seconds(pid)
                        result = wrk(self.url(ports, kind), self.script, 32, self.seconds)
                        cpu = cpu_seconds(pid) - cpu
                        rps[kind][name].append(result.rps)
                        # CPU per request is steadier than req/s on a machine others share
                        per_request = cpu * 1e6 / max(1, result.requests)
                        print(
                            f"round {n + 1} {name:5} {kind:6} {result.rps:9.0f} req/s "
                            f"{per_request:6.1f} cpu-us/req, {result.errors} errors",
                            flush=True,
                        )
                    if name == "proxy" and "mirror" in kinds:
                        print(f"  proxy mirror copies: {self.mirror_results()}", flush=True)
        return rps

    def latency(self) -> dict[str, float]:
        """p99 over one connection (no queueing): what each hop adds to one request.

        Direct, nginx and proxy runs alternate three times and the median p99 of each counts,
        so that a burst of load from elsewhere on the machine does not decide the figure.
        """
        seconds = max(2.0, self.seconds / 3)
        runs: dict[str, list[float]] = {"direct": [], "nginx": [], "proxy": []}
        direct = f"http://127.0.0.1:{self.up.up_a}/storeraw"
        for _ in range(3):
            runs["direct"].append(wrk(direct, self.script, 1, seconds).p99_ms)
            for name, server in (("nginx", self.nginx), ("proxy", self.proxy)):
                with server() as (ports, _):
                    wrk(self.url(ports, "http"), self.script, 1, 1)
                    runs[name].append(wrk(self.url(ports, "http"), self.script, 1, seconds).p99_ms)
        p99 = {name: statistics.median(values) for name, values in runs.items()}
        print(f"p99 over one connection, ms (runs {runs}): {p99}", flush=True)
        return p99

    def failover(self) -> dict[str, int]:
        """Errors seen by clients when one upstream is killed mid-run on the 9081 route."""
        errors: dict[str, int] = {}
        for name, server in (("nginx", self.nginx), ("proxy", self.proxy)):
            with server() as (ports, _):
                wrk(self.url(ports, "http"), self.script, 32, 1)
                run = subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        "1",
                        "wrk",
                        "-t1",
                        "-c32",
                        f"-d{max(1, round(self.seconds))}s",
                        "--latency",
                        "-s",
                        str(self.script),
                        self.url(ports, "http"),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(self.seconds / 3)
                self.kill_upstream("b")
                out, _ = run.communicate(timeout=self.seconds + 60)
                result = parse_wrk(out)
                errors[name] = result.errors
                print(
                    f"failover {name:5} {result.rps:9.0f} req/s, {result.errors} errors",
                    flush=True,
                )
            self.start_upstream("b")
        return errors

    # --- the RPC route (issue 13): nginx stream, the proxy's L4 mode, its JSON-RPC mode ---

    @contextmanager
    def rpc_server(
        self, mode: str, primary: int, backup: int, proxy_dir: Path = PROXY_DIR
    ) -> Iterator[tuple[int, int, int]]:
        """nginx or the proxy (from proxy_dir) in front of two nodes; yields (port, pid, admin
        port or 0)."""
        port = free_port()
        if mode == "nginx":
            conf = self.tmp / "nginx-rpc.conf"
            conf.write_text(nginx_rpc_conf(self.tmp, primary, backup, port))
            argv = ["nginx", "-p", str(self.tmp), "-c", str(conf), "-g", "daemon off;"]
            proc = self.procs.start(argv, core=0)
            try:
                wait_port(port, proc=proc)
                yield port, proc.pid, 0
            finally:
                self.procs.stop(proc, signal.SIGQUIT)
            return
        admin = free_port()
        conf = self.tmp / f"proxy-{mode}-{port}.yaml"
        conf.write_text(yaml.safe_dump(proxy_rpc_conf(mode, primary, backup, port, admin)))
        argv = [sys.executable, "-m", "quorum_proxy", "--config", str(conf)]
        env = {**os.environ, "PYTHONPATH": str(proxy_dir)}
        proc = self.procs.start(argv, core=0, cwd=proxy_dir, env=env)
        try:
            wait_port(port, proc=proc)
            wait_port(admin, proc=proc)
            yield port, proc.pid, admin
        finally:
            self.procs.stop(proc)

    def rpc_unavailable(self, mode: str) -> str | None:
        """Why the proxy refuses this mode's config (`--check`), or None when it accepts it."""
        if mode == "nginx":
            return None
        conf = self.tmp / f"proxy-{mode}-check.yaml"
        conf.write_text(yaml.safe_dump(proxy_rpc_conf(mode, 1, 2, 3, 4)))
        check = subprocess.run(
            [sys.executable, "-m", "quorum_proxy", "--check", "--config", str(conf)],
            cwd=PROXY_DIR,
            env={**os.environ, "PYTHONPATH": str(PROXY_DIR)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check.returncode == 0:
            return None
        return (check.stderr.strip() or check.stdout.strip()).splitlines()[-1]

    def rpc_stand_ins(self) -> tuple[int, int]:
        """Two fast JSON-RPC stand-ins (not geth) on core 1: their ports."""
        ports = (free_port(), free_port())
        for port, name in zip(ports, "ab", strict=True):
            proc = self.procs.start(
                [
                    sys.executable,
                    str(REPO / "bench" / "fast_upstream.py"),
                    str(port),
                    name,
                    "jsonrpc",
                ],
                core=1,
            )
            wait_port(port, proc=proc)
        return ports

    def rpc_throughput(self, modes: tuple[str, ...]) -> dict[str, list[float]]:
        """req/s of the RPC mix through each mode, to two fast JSON-RPC stand-ins (not geth)."""
        script = self.tmp / "rpc.lua"
        script.write_text(rpc_wrk_script())
        ports = self.rpc_stand_ins()
        direct = wrk(f"http://127.0.0.1:{ports[0]}/", script, 32, min(self.seconds, 3))
        # the ceiling of every row: a row near it measures the stand-in, not the proxy
        print(f"direct to one JSON-RPC stand-in: {direct.rps:.0f} req/s", flush=True)
        rps: dict[str, list[float]] = {mode: [] for mode in modes}
        for n in range(self.rounds):
            for mode in modes:
                with self.rpc_server(mode, *ports) as (port, pid, _):
                    url = f"http://127.0.0.1:{port}/"
                    wrk(url, script, 32, 1)  # warm the pools
                    cpu = cpu_seconds(pid)
                    # a third of --seconds: with the failover run, the full run stays near 6 min
                    result = wrk(url, script, 32, self.seconds / 3)
                    cpu = cpu_seconds(pid) - cpu
                rps[mode].append(result.rps)
                per_request = cpu * 1e6 / max(1, result.requests)
                print(
                    f"round {n + 1} rpc {mode:7} {result.rps:9.0f} req/s "
                    f"{per_request:6.1f} cpu-us/req, {result.errors} errors "
                    "(wrk, JSON-RPC stand-in upstreams)",
                    flush=True,
                )
        return rps

    def rpc_nodes(
        self, labels: list[str], warm_up: float
    ) -> tuple[GethNode, GethNode, dict[str, RawTransactions]]:
        """Two real geth --dev nodes on core 1 (primary, backup), 32 raw senders per label
        funded on both; the primary given warm_up seconds of the mix first (a node is slow at
        first)."""
        primary = GethNode(self.tmp / "geth-a", core=1, period=1)
        backup = GethNode(self.tmp / "geth-b", core=1, period=1)
        senders = {label: RawTransactions(label, 32) for label in [*labels, "warm-up"]}
        for node in (primary, backup):
            node.start()
            self.geth.append(node)
            node.fund([a for raw in senders.values() for a in raw.senders], 10**18)
        with self.on_core_1():
            uvloop.run(rpc_load(primary.port, 32, warm_up, senders.pop("warm-up")))
        return primary, backup, senders

    @contextmanager
    def on_core_1(self) -> Iterator[None]:
        """This process (the load client) on core 1, with the nodes, as wrk is."""
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {1})
        try:
            yield
        finally:
            os.sched_setaffinity(0, affinity)

    def rpc_through_geth(
        self,
        modes: tuple[str, ...],
        primary: int,
        backup: int,
        senders: dict[str, RawTransactions],
    ) -> dict[str, list[tuple[LoadResult, float]]]:
        """Each mode in front of the real nodes, no kill: the RPC route when the node, not the
        proxy, sets the pace. Two rounds, the second in reverse order (a node's pace drifts as
        its chain and pool grow); per mode, each run's result and the server's CPU per call
        (us)."""
        seconds = self.rpc_seconds / 4
        runs: dict[str, list[tuple[LoadResult, float]]] = {mode: [] for mode in modes}
        with self.on_core_1():
            for n in range(2):
                for mode in modes[:: 1 if n == 0 else -1]:
                    with self.rpc_server(mode, primary, backup) as (port, pid, _):
                        cpu = cpu_seconds(pid)
                        result = uvloop.run(rpc_load(port, 32, seconds, senders[f"geth {mode}"]))
                        cpu = cpu_seconds(pid) - cpu
                    per_call = cpu * 1e6 / max(1, result.requests)
                    runs[mode].append((result, per_call))
                    print(
                        f"round {n + 1} rpc geth {mode:7} {result.rps:7.0f} req/s "
                        f"{per_call:6.1f} cpu-us/req, {cpu / result.seconds * 100:4.1f}% of a "
                        f"core; safe calls: {result.safe.describe()}",
                        flush=True,
                    )
        return runs

    def rpc_failover(
        self,
        modes: tuple[str, ...],
        primary: GethNode,
        backup: GethNode,
        senders: dict[str, RawTransactions],
    ) -> dict[str, LoadResult]:
        """Client-visible errors while the primary geth is killed and restarted twice."""
        seconds = self.rpc_seconds
        # The second kill comes once the restarted primary serves again: after nginx's and
        # the proxy's fail_timeout (10 s) and the stack's health check (rise 2 x 5 s).
        kills = (0.1 * seconds, 0.75 * seconds)
        print(
            f"rpc failover: real geth --dev (primary :{primary.port}, backup :{backup.port}), "
            f"32 connections for {seconds:.0f} s, primary killed (SIGKILL) and restarted at "
            f"{kills[0]:.0f} s and {kills[1]:.0f} s",
            flush=True,
        )

        def kill_and_restart() -> None:
            primary.kill()
            primary.start()

        results: dict[str, LoadResult] = {}
        with self.on_core_1():
            for mode in modes:
                with self.rpc_server(mode, primary.port, backup.port) as (port, _, admin):
                    events = [(at, kill_and_restart) for at in kills]
                    load = rpc_load(port, 32, seconds, senders[f"failover {mode}"], events)
                    result = uvloop.run(load)
                    counters = self.metric_sums(admin, "quorum_proxy_jsonrpc_") if admin else {}
                results[mode] = result
                per_kill = [
                    sum(1 for t in result.error_times if at <= t < end)
                    for at, end in zip(kills, (*kills[1:], seconds + 60), strict=True)
                ]
                print(
                    f"rpc failover {mode:7} {result.rps:7.0f} req/s; safe calls: "
                    f"{result.safe.describe()}; unsafe calls: {result.unsafe.describe()}; "
                    f"errors after kill 1, kill 2: {per_kill}",
                    flush=True,
                )
                if counters:
                    print(f"  proxy JSON-RPC counters: {counters}", flush=True)
        return results

    def rpc(self) -> dict[str, object]:
        refused = {m: self.rpc_unavailable(m) for m in RPC_MODES}
        modes = tuple(m for m in RPC_MODES if refused[m] is None)
        for mode in RPC_MODES:
            if refused[mode] is not None:
                print(
                    f"rpc {mode}: unavailable: the proxy refuses it: {refused[mode]}", flush=True
                )
        rps = self.rpc_throughput(modes)
        labels = [f"{kind} {mode}" for kind in ("geth", "failover") for mode in modes]
        primary, backup, senders = self.rpc_nodes(labels, warm_up=0.3 * self.rpc_seconds)
        through_geth = self.rpc_through_geth(modes, primary.port, backup.port, senders)
        failover = self.rpc_failover(modes, primary, backup, senders)
        geth_rps = {
            mode: statistics.median(result.rps for result, _ in runs)
            for mode, runs in through_geth.items()
        }
        nginx = statistics.median(rps["nginx"])
        return {
            "rpc_failover_errors": {
                mode: failover[mode].safe.errors if mode in failover else None
                for mode in RPC_MODES
            },
            "rpc_rps_ratio": (
                round(statistics.median(rps["jsonrpc"]) / nginx, 3) if "jsonrpc" in rps else None
            ),
            "rpc_l4_rps_ratio": round(statistics.median(rps["l4"]) / nginx, 3),
            "rpc_geth_rps_ratio": (
                round(geth_rps["jsonrpc"] / geth_rps["nginx"], 3)
                if "jsonrpc" in geth_rps
                else None
            ),
            "rpc_geth_cpu_us": {
                mode: (
                    round(statistics.median(cpu for _, cpu in through_geth[mode]), 1)
                    if mode in through_geth
                    else None
                )
                for mode in RPC_MODES
            },
        }

    def stop_all(self) -> None:
        for node in self.geth:
            node.stop()
        self.procs.stop_all()

    def run(self) -> dict[str, object]:
        kinds = tuple(k for k in KINDS if k in self.only)
        summary: dict[str, object] = {}
        if kinds:
            summary.update(self.run_routes(kinds))
        if "rpc" in self.only:
            summary.update(self.rpc())
        return summary

    def run_routes(self, kinds: tuple[str, ...]) -> dict[str, object]:
        self.start_upstream("a")
        self.start_upstream("b")
        direct = wrk(
            f"http://127.0.0.1:{self.up.up_a}/storeraw", self.script, 32, min(self.seconds, 3)
        )
        print(f"direct to one upstream: {direct.rps:.0f} req/s", flush=True)
        rps = self.throughput(kinds)

        def ratio(kind: str) -> float:
            return round(
                statistics.median(rps[kind]["proxy"]) / statistics.median(rps[kind]["nginx"]), 3
            )

        if self.only != ROUTES:
            # a quick look at some routes: throughput only, no latency or failover runs
            return {f"{kind}_rps_ratio": ratio(kind) for kind in kinds}
        p99 = self.latency()
        failover = self.failover()
        return {
            "http_rps_ratio": ratio("http"),
            "tcp_rps_ratio": ratio("tcp"),
            "mirror_rps_ratio": ratio("mirror"),
            "p99_added_ms": {
                "proxy": round(p99["proxy"] - p99["direct"], 3),
                "nginx": round(p99["nginx"] - p99["direct"], 3),
            },
            "failover_errors": failover,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument(
        "--rpc-seconds", type=float, default=20.0, help="length of each RPC failover run"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=ROUTES,
        help="these routes only (repeatable); http/tcp/mirror skip the latency and failover "
        "runs; rpc is the RPC route's throughput and failover run",
    )
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk", "taskset") if shutil.which(tool) is None]
    if not os.path.exists(STREAM_MODULE):
        missing.append(STREAM_MODULE)
    if (args.only is None or "rpc" in args.only) and not GETH.exists():
        missing.append(str(GETH))
    if missing:
        print(
            f"bench: missing {', '.join(missing)}; nginx and wrk come with "
            "`apt-get install -y nginx-light libnginx-mod-stream wrk`, geth with `./dev test` "
            "(this script installs nothing)",
            file=sys.stderr,
        )
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench: needs 2 cores (server on core 0, wrk on core 1)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="quorum-proxy-bench-") as tmp:
        only = tuple(k for k in ROUTES if k in args.only) if args.only else ROUTES
        bench = Bench(Path(tmp), args.seconds, args.rounds, only, args.rpc_seconds)
        try:
            summary = bench.run()
        finally:
            bench.stop_all()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
