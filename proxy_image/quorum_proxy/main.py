"""Command line: load the config, bind, run one worker or supervise several."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from types import FrameType

import uvloop

from .config import Config, ConfigError, load_config
from .relay_scan import COMPILED
from .server import (
    LoopWatchdog,
    ProxyRuntime,
    StartupError,
    prepare_unix_sockets,
    raise_fd_limit,
    remove_unix_socket,
    unix_path_of,
)

log = logging.getLogger("quorum_proxy")
EXIT_CONFIG = 2
EXIT_STARTUP = 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="quorum_proxy", description="quorum-ha's HA proxy (config: proxy_image/README.md)"
    )
    parser.add_argument(
        "--config", help="YAML/JSON config file (default: $QUORUM_PROXY_CONFIG as text)"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config and exit (0 when valid)"
    )
    return parser.parse_args(argv)


async def serve(config: Config, unix_sockets: dict[str, socket.socket]) -> int:
    """Serve until SIGTERM/SIGINT, then drain; 0 on a clean stop."""
    runtime = ProxyRuntime(config)
    try:
        await runtime.start(unix_sockets)
    except StartupError as e:
        print(f"startup error: {e}", file=sys.stderr, flush=True)
        return EXIT_STARTUP
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watchdog = LoopWatchdog(loop)
    watchdog.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening: %s", runtime.addresses)
    if any(listener.protocol == "jsonrpc" for listener in config.listeners):
        if COMPILED:
            log.info("JSON-RPC relay: compiled scans")
        else:
            log.warning(
                "JSON-RPC relay: compiled scans not built (proxy_image/build_relay_scan.py): "
                "reading in Python, about twice the CPU per call"
            )
    await stop.wait()
    log.info("draining up to %ss", config.drain_timeout)
    await runtime.drain()
    watchdog.stop()
    return 0


def run_worker(config: Config, unix_sockets: dict[str, socket.socket]) -> int:
    return uvloop.run(serve(config, unix_sockets))


def _worker_main(config: Config, unix_sockets: dict[str, socket.socket]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM instead
    sys.exit(run_worker(config, unix_sockets))


def supervise(config: Config, unix_sockets: dict[str, socket.socket]) -> int:
    """Run config.workers processes sharing the listeners; forward SIGTERM; restart crashes."""
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def start_one() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_main, args=(config, unix_sockets), daemon=False)
        proc.start()
        return proc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    procs = [start_one() for _ in range(config.workers)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(procs):
            if proc.exitcode is not None and not stopping:
                log.warning("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
                if proc.exitcode == EXIT_STARTUP:
                    on_signal(signal.SIGTERM, None)
                    break
                procs[i] = start_one()
    deadline = time.monotonic() + config.drain_timeout + 5
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if args.check:
        return 0
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    # before the workers fork: they inherit it
    soft, hard, now = raise_fd_limit()
    log.info("open files limit: soft %d, hard %d; raised to %d", soft, hard, now)
    try:
        unix_sockets = prepare_unix_sockets(config)
    except StartupError as e:
        print(f"startup error: {e}", file=sys.stderr, flush=True)
        return EXIT_STARTUP
    try:
        if config.workers == 1:
            return run_worker(config, unix_sockets)
        return supervise(config, unix_sockets)
    finally:
        for name, sock in unix_sockets.items():
            remove_unix_socket(unix_path_of(config, name), sock)
            sock.close()
