"""The RPC benchmark's load client against real geth: its mix alone causes no error.

So the errors that the failover run counts come from the kills, not from calls that geth
would refuse anyway (bench/rpc_load.py, bench/README.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.geth import GethNode, free_port
from bench.rpc_load import RawTransactions, run_load
from bench.rpc_paired import NGINX, measure
from bench.run_bench import REPO, RPC_MODES, Bench

GETH_NONCE_RACE = "replacement transaction underpriced"
# the benchmark pins its servers to core 0, its load client and nodes to core 1
NEEDS_CORES_0_AND_1 = pytest.mark.skipif(
    not {0, 1} <= os.sched_getaffinity(0),
    reason="the benchmark pins servers to core 0 and its load and nodes to core 1",
)


def test_the_benchmark_mix_is_answered_without_error_by_real_geth(geth: GethNode) -> None:
    raw = RawTransactions("test load", 4)
    geth.fund(raw.senders, 10**18)
    result = asyncio.run(run_load(geth.port, 4, 2.0, raw))
    assert result.safe.errors == 0, result.safe.describe()
    # geth's own race, not the mix's: concurrent eth_sendTransaction from the one dev account
    # now and then get a nonce another call already holds in the pool (seen 2 in ~95 calls on a
    # loaded machine). The failover figures count safe calls only (bench/README.md).
    others = result.unsafe.errors - result.unsafe.rpc[GETH_NONCE_RACE]
    assert others == 0, result.unsafe.describe()
    assert result.safe.ok > 0 and result.unsafe.ok > 0
    # every connection's raw transfers were accepted in nonce order
    assert sum(raw.nonces) > 0


def test_the_load_client_counts_a_closed_port_as_transport_errors() -> None:
    raw = RawTransactions("test dead", 2)
    result = asyncio.run(run_load(free_port(), 2, 0.5, raw))
    assert result.safe.ok == 0 and result.safe.transport > 0
    assert result.safe.errors == result.safe.transport


@NEEDS_CORES_0_AND_1
def test_the_benchmarks_run_through_real_geth_carries_the_mix_in_every_mode(
    geth: GethNode, tmp_path: Path, refused_address: Callable[[], str]
) -> None:
    # bench/run_bench.py's "rpc geth" rows, shortened: nginx `stream`, the L4 and JSON-RPC
    # modes in front of real geth, its backup down
    bench = Bench(tmp_path, 1, 1, ("rpc",), rpc_seconds=2)
    senders = {
        label: RawTransactions(f"test {label}", 32)
        for label in (f"geth {mode}" for mode in RPC_MODES)
    }
    geth.fund([a for raw in senders.values() for a in raw.senders], 10**18)
    try:
        backup = int(refused_address().rsplit(":", 1)[1])
        runs = bench.rpc_through_geth(RPC_MODES, geth.port, backup, senders)
    finally:
        bench.stop_all()
    assert list(runs) == list(RPC_MODES)
    for mode, results in runs.items():
        assert len(results) == 2, mode  # two rounds
        for result, cpu_per_call in results:
            assert result.safe.ok > 0 and result.safe.errors == 0, (mode, result.safe.describe())
            assert cpu_per_call > 0, mode  # the server's own CPU, read from /proc


@NEEDS_CORES_0_AND_1
def test_the_paired_benchmark_through_real_geth_measures_both_sides_every_round() -> None:
    # bench/rpc_paired.py --geth, shortened: nginx `stream` and this checkout served at once
    # in front of two real geth nodes
    (cpu_nginx, cpu_proxy), (rps_nginx, rps_proxy) = measure(
        [NGINX, REPO], seconds=0.5, rounds=2, geth=True
    )
    for figures in (cpu_nginx, cpu_proxy, rps_nginx, rps_proxy):
        assert len(figures) == 2 and all(f > 0 for f in figures), figures
