"""CPU per JSON-RPC call of two proxy trees, served at the same time: paired under one load.

Usage: python bench/rpc_paired.py A B [--seconds S] [--rounds N]

This VM's speed swings by up to 2x within minutes, more than most changes to the proxy's
data path move its cost, so runs one after the other (run_bench.py's rounds) hide a 10%
change. Here both trees' JSON-RPC listeners run at once, pinned to core 0 (the two JSON-RPC
stand-ins and two wrk, 16 connections each, on core 1), so both see the same machine: each
round prints both trees' CPU per call (user + system, cpu-us) and B's over A's. Rounds swap
which starts first. A side is a checkout (its JSON-RPC mode; its C module built by
proxy_image/build_relay_scan.py) or `nginx` (Debian's, the seed's `stream` block, as in
run_bench.py's RPC rows: its worker's CPU). Loopback only, every child stopped by its pid.
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run_bench import (
    REPO,
    Processes,
    WrkResult,
    cpu_seconds,
    nginx_rpc_conf,
    proxy_rpc_conf,
    rpc_wrk_script,
    wrk,
)
from bench.support import free_port, wait_port

CONNECTIONS = 16  # per side: the 32 of run_bench.py's RPC rows, shared
NGINX = "nginx"


def measure(trees: list[Path | str], seconds: float, rounds: int) -> list[list[float]]:
    """Each round's CPU per call, one list per side (a checkout, or NGINX)."""
    procs = Processes()
    per_tree: list[list[float]] = [[] for _ in trees]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "rpc.lua"
            script.write_text(rpc_wrk_script())
            nodes = (free_port(), free_port())
            for port, name in zip(nodes, "ab", strict=True):
                node = [sys.executable, str(REPO / "bench" / "fast_upstream.py"), str(port)]
                wait_port(port, proc=procs.start([*node, name, "jsonrpc"], core=1))
            for n in range(rounds):
                order = list(range(len(trees)))[:: 1 if n % 2 == 0 else -1]
                served = {}
                for i in order:
                    port, admin = free_port(), free_port()
                    tree = trees[i]
                    if tree == NGINX:
                        conf = Path(tmp) / f"nginx-{i}.conf"
                        conf.write_text(nginx_rpc_conf(Path(tmp), *nodes, port))
                        argv = ["nginx", "-p", tmp, "-c", str(conf), "-g", "daemon off;"]
                        proc = procs.start(argv, core=0)
                    else:
                        conf = Path(tmp) / f"proxy-{i}.yaml"
                        conf.write_text(
                            yaml.safe_dump(proxy_rpc_conf("jsonrpc", *nodes, port, admin))
                        )
                        proxy_dir = Path(tree) / "proxy_image"
                        proc = procs.start(
                            [sys.executable, "-m", "quorum_proxy", "--config", str(conf)],
                            core=0,
                            cwd=proxy_dir,
                            env={**os.environ, "PYTHONPATH": str(proxy_dir)},
                        )
                    served[i] = (proc, port)
                for proc, port in served.values():
                    wait_port(port, proc=proc)
                    wrk(f"http://127.0.0.1:{port}/", script, CONNECTIONS, 1)  # warm the pools
                before = {i: cpu_seconds(proc.pid) for i, (proc, _) in served.items()}
                results: dict[int, WrkResult] = {}

                def load(i: int, port: int, results: dict[int, WrkResult] = results) -> None:
                    results[i] = wrk(f"http://127.0.0.1:{port}/", script, CONNECTIONS, seconds)

                loads = [
                    threading.Thread(target=load, args=(i, port))
                    for i, (_, port) in served.items()
                ]
                for thread in loads:
                    thread.start()
                for thread in loads:
                    thread.join()
                for i, (proc, _) in served.items():
                    used = cpu_seconds(proc.pid) - before[i]
                    per_tree[i].append(round(used * 1e6 / max(1, results[i].requests), 2))
                    procs.stop(proc)
                cells = ", ".join(
                    f"{trees[i]}: {per_tree[i][-1]:5.1f} cpu-us/call ({results[i].rps:.0f} req/s)"
                    for i in range(len(trees))
                )
                print(f"round {n + 1}: {cells}", flush=True)
    finally:
        procs.stop_all()
    return per_tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("a", help="a checkout, or nginx")
    parser.add_argument("b", help="a checkout, or nginx")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.a == args.b == NGINX:
        print("rpc_paired: nginx against itself shares one pid file", file=sys.stderr)
        return 2
    trees: list[Path | str] = []
    for side in (args.a, args.b):
        if side == NGINX:
            trees.append(NGINX)
            continue
        tree = Path(side).resolve()
        if not (tree / "proxy_image" / "quorum_proxy").is_dir():
            print(
                f"rpc_paired: {side} is not nginx nor a checkout with proxy_image/quorum_proxy",
                file=sys.stderr,
            )
            return 2
        trees.append(tree)
    a, b = measure(trees, args.seconds, args.rounds)
    ratios = [round(y / x, 3) for x, y in zip(a, b, strict=True)]
    print(
        json.dumps(
            {
                "a_cpu_us": a,
                "b_cpu_us": b,
                "b_over_a": ratios,
                "b_over_a_median": statistics.median(ratios),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
