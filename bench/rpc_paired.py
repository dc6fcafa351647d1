"""CPU per JSON-RPC call of two proxy trees, served at the same time: paired under one load.

Usage: python bench/rpc_paired.py A B [--seconds S] [--rounds N]

This VM's speed swings by up to 2x within minutes, more than most changes to the proxy's
data path move its cost, so runs one after the other (run_bench.py's rounds) hide a 10%
change. Here both trees' JSON-RPC listeners run at once, pinned to core 0 (the two JSON-RPC
stand-ins and two wrk, 16 connections each, on core 1), so both see the same machine: each
round prints both trees' CPU per call (user + system, cpu-us) and B's over A's. Rounds swap
which starts first. A side is a checkout (its JSON-RPC mode; its C module built by
proxy_image/build_relay_scan.py) or `nginx` (Debian's, the seed's `stream` block, as in
run_bench.py's RPC rows: its worker's CPU). With --geth the upstreams are two real geth --dev
nodes (build/bin/geth) and the load is run_bench.py's own client (16 connections a side, the
same mix, one call at a time per connection): the node sets the pace, and each side's req/s
is paired too. Loopback only, every child stopped by its pid. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import uvloop

if __package__ in (None, ""):  # run as a script: import bench.* from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.geth import GETH
from bench.rpc_load import RawTransactions
from bench.rpc_load import run_load as rpc_load
from bench.run_bench import Bench, cpu_seconds, rpc_wrk_script, wrk

CONNECTIONS = 16  # per side: the 32 of run_bench.py's RPC rows, shared
NGINX = "nginx"


def measure(
    trees: list[Path | str], seconds: float, rounds: int, geth: bool = False
) -> tuple[list[list[float]], list[list[float]]]:
    """Each round's CPU per call and req/s, one list per side (a checkout, or NGINX)."""
    per_tree: list[list[float]] = [[] for _ in trees]
    rps: list[list[float]] = [[] for _ in trees]
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), seconds, rounds, ("rpc",))
        try:
            load: Callable[[dict[int, tuple[int, int]]], dict[int, tuple[int, float]]]
            if geth:
                labels = [f"paired {i}" for i in range(len(trees))]
                primary, backup, senders = bench.rpc_nodes(labels, warm_up=2 * seconds)
                nodes = (primary.port, backup.port)
                load = functools.partial(
                    load_through_geth, bench, senders=senders, seconds=seconds
                )
            else:
                script = Path(tmp) / "rpc.lua"
                script.write_text(rpc_wrk_script())
                nodes = bench.rpc_stand_ins()
                load = functools.partial(load_with_wrk, script=script, seconds=seconds)
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
                    if not geth:
                        for _, port in served.values():
                            wrk(f"http://127.0.0.1:{port}/", script, CONNECTIONS, 1)  # the pools
                    before = {i: cpu_seconds(pid) for i, (pid, _) in served.items()}
                    done = load(served)
                    for i, (pid, _) in served.items():
                        used = cpu_seconds(pid) - before[i]
                        calls, rate = done[i]
                        per_tree[i].append(round(used * 1e6 / max(1, calls), 2))
                        rps[i].append(round(rate))
                cells = ", ".join(
                    f"{trees[i]}: {per_tree[i][-1]:5.1f} cpu-us/call ({rps[i][-1]:.0f} req/s)"
                    for i in range(len(trees))
                )
                print(f"round {n + 1}: {cells}", flush=True)
        finally:
            bench.stop_all()
    return per_tree, rps


def load_with_wrk(
    served: dict[int, tuple[int, int]], script: Path, seconds: float
) -> dict[int, tuple[int, float]]:
    """Each side's calls and req/s: one wrk per side at once."""
    results: dict[int, tuple[int, float]] = {}

    def load(i: int, port: int) -> None:
        result = wrk(f"http://127.0.0.1:{port}/", script, CONNECTIONS, seconds)
        results[i] = (result.requests, result.rps)

    threads = [threading.Thread(target=load, args=(i, port)) for i, (_, port) in served.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def load_through_geth(
    bench: Bench,
    served: dict[int, tuple[int, int]],
    senders: dict[str, RawTransactions],
    seconds: float,
) -> dict[int, tuple[int, float]]:
    """Each side's calls and req/s: the load client on both sides at once, on core 1."""

    async def both() -> list[tuple[int, float]]:
        loads = [
            rpc_load(port, CONNECTIONS, seconds, senders[f"paired {i}"])
            for i, (_, port) in served.items()
        ]
        return [(r.requests, r.rps) for r in await asyncio.gather(*loads)]

    with bench.on_core_1():
        return dict(zip(served, uvloop.run(both()), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("a", help="a checkout, or nginx")
    parser.add_argument("b", help="a checkout, or nginx")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--geth", action="store_true", help="two real geth --dev nodes upstream, not stand-ins"
    )
    args = parser.parse_args()
    if args.geth and not GETH.exists():
        print(f"rpc_paired: --geth needs {GETH} (`./dev test` builds it)", file=sys.stderr)
        return 2
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
    (a, b), (a_rps, b_rps) = measure(trees, args.seconds, args.rounds, args.geth)
    ratios = [round(y / x, 3) for x, y in zip(a, b, strict=True)]
    rps_ratios = [round(y / x, 3) for x, y in zip(a_rps, b_rps, strict=True)]
    print(
        json.dumps(
            {
                "a_cpu_us": a,
                "b_cpu_us": b,
                "b_over_a": ratios,
                "b_over_a_median": statistics.median(ratios),
                "a_rps": a_rps,
                "b_rps": b_rps,
                "b_over_a_rps": rps_ratios,
                "b_over_a_rps_median": statistics.median(rps_ratios),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
