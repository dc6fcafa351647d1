"""Processes the drill starts: each one stopped by its own pid, ports on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class MissingPieceError(RuntimeError):
    """Something the drill needs is not on this machine; the message says what to install."""


class NotPublishedError(MissingPieceError):
    """The repository this machine reaches does not serve the artifact at all: nothing to
    install here, so the checks that need it are blocked, not failed (docs/cluster.md)."""


class DrillError(RuntimeError):
    """A step of the drill did not do what it must; the message names the step."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Poll check() until it is true; the seconds it took, or DrillError naming `what`."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError):
            if check():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise DrillError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class RunAs:
    """The account a process runs under (PostgreSQL refuses root)."""

    uid: int
    gid: int


@dataclass
class Proc:
    """One started process, its log file, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int | None = None, timeout: float = 20.0) -> None:
        """Signal this pid (never a name), wait; SIGKILL the same pid if it will not go."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig if sig is not None else self.stop_signal)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Every process of one drill; stop_all() stops them by pid, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        run_as: RunAs | None = None,
        stop_signal: int = signal.SIGTERM,
        pipe_stdout: bool = False,
    ) -> Proc:
        """Start argv; its output goes to the log (stderr only, with pipe_stdout)."""
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else out,
                stderr=out if pipe_stdout else subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                start_new_session=True,  # a Ctrl-C of the drill does not hit its children first
            )
        proc = Proc(name, popen, log, stop_signal)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                proc.stop()


def run(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    timeout: float = 60.0,
    input_text: str | None = None,
) -> str:
    """Run a short command to completion; its stdout, or DrillError with its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DrillError(f"{what}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise DrillError(f"{what}: exit {done.returncode}: {done.stderr.strip()[-600:]}")
    return done.stdout
