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
import statistics
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run_bench import Bench, WrkResult, cpu_seconds, rpc_wrk_script, wrk

CONNECTIONS = 16  # per side: the 32 of run_bench.py's RPC rows, shared
NGINX = "nginx"


def measure(trees: list[Path | str], seconds: float, rounds: int) -> list[list[float]]:
    """Each round's CPU per call, one list per side (a checkout, or NGINX)."""
    per_tree: list[list[float]] = [[] for _ in trees]
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), seconds, rounds, ("rpc",))
        try:
            script = Path(tmp) / "rpc.lua"
            script.write_text(rpc_wrk_script())
            nodes = bench.rpc_stand_ins()
            for n in range(rounds):
                order = list(range(len(trees)))[:: 1 if n % 2 == 0 else -1]
                with ExitStack() as served_now:
                    served: dict[int, tuple[int, int]] = {}  # side: (pid, port)
                    for i in order:
                        tree = trees[i]
                        server = (
                            bench.rpc_server(NGINX, *nodes)
                            if tree == NGINX
                            else bench.rpc_server("jsonrpc", *nodes, Path(tree) / "proxy_image")
                        )
                        port, pid, _ = served_now.enter_context(server)
                        served[i] = (pid, port)
                    for _, port in served.values():
                        wrk(f"http://127.0.0.1:{port}/", script, CONNECTIONS, 1)  # warm the pools
                    before = {i: cpu_seconds(pid) for i, (pid, _) in served.items()}
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
                    for i, (pid, _) in served.items():
                        used = cpu_seconds(pid) - before[i]
                        per_tree[i].append(round(used * 1e6 / max(1, results[i].requests), 2))
                cells = ", ".join(
                    f"{trees[i]}: {per_tree[i][-1]:5.1f} cpu-us/call ({results[i].rps:.0f} req/s)"
                    for i in range(len(trees))
                )
                print(f"round {n + 1}: {cells}", flush=True)
        finally:
            bench.stop_all()
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
