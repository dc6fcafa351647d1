"""What the bench scripts (and the proxy tests' stand-ins) share: ports, child processes, RSS,
and the base of every httptools upstream stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import httptools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts on 127.0.0.1:port; exits with a message when nothing does
    (or when proc, the process that should listen, has exited), with the end of what proc
    wrote to stderr when a Children started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(
                f"{proc.args!r} exited ({proc.returncode}) before listening{said(proc)}"
            )
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        time.sleep(0.05)
    who = f" ({proc.args!r}{said(proc)})" if proc is not None else ""
    raise SystemExit(f"bench: nothing listens on 127.0.0.1:{port} after {timeout}s{who}")


def said(proc: subprocess.Popen[bytes], limit: int = 2000) -> str:
    """The end of what a child Children started wrote to stderr, as ': ...', or ''."""
    log = getattr(proc, "stderr_log", None)
    if log is None:
        return ""
    log.seek(0)
    text = log.read()[-limit:].decode(errors="replace").strip()
    return f": {text}" if text else ""


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 15
) -> None:
    """Signal one child by its pid, then kill it if it has not exited within `wait` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Children:
    """Processes a script started, each stopped by its pid (stop_all on exit)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        # stderr kept in a file (said() reads its end): why a child did not start
        log = None if "stderr" in kw else tempfile.TemporaryFile()  # noqa: SIM115 - stop() closes it
        if log is not None:
            kw["stderr"] = log
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kw)
        proc.stderr_log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        stop_process(proc, sig)
        if proc in self.procs:
            self.procs.remove(proc)
        log = getattr(proc, "stderr_log", None)
        if log is not None:
            log.close()

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


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


class ParsingProtocol(asyncio.Protocol):
    """An HTTP server connection fed to httptools (on_* callbacks are the subclass's, so that a
    fast stand-in pays for none it does not use); a request it cannot parse closes it.

    The base of the bench's and the tests' upstream stand-ins (not the proxy's own admin
    protocol, which answers 400 to a bad request)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()
