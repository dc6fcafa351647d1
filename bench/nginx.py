"""Debian's nginx as the bench scripts and the proxy tests run it: found on PATH, configured in a
private temp dir (pid, logs, every temp path), one worker in the foreground, stopped by its pid."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.support import stop_process, wait_port

INSTALL = "apt-get install -y nginx-light"
TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    """nginx's path on PATH, or None."""
    return shutil.which("nginx")


def nginx_conf(
    tmp: Path, http: str, *, worker_connections: int = 64, main: str = "", log: str = "info"
) -> str:
    """A whole config around an `http {}` body: everything nginx writes goes under tmp."""
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in TEMP_KINDS)
    # as root, nginx's workers would be nobody, who cannot enter a private temp dir
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log {log};
{main}
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    {temp}
    {http}
}}
"""


@contextmanager
def running_nginx(
    tmp: Path, conf: str, port: int, prefix: Sequence[str] = (), binary: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx on conf (written to tmp/nginx.conf), once it listens on port; stopped on exit.

    prefix runs before it (e.g. `prlimit --nofile=N:N`)."""
    path = tmp / "nginx.conf"
    path.write_text(conf)
    argv = [*prefix, binary or nginx_binary() or "nginx", "-p", str(tmp), "-c", str(path)]
    with (tmp / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        try:
            wait_port(port, proc=proc)
        except SystemExit as exc:  # say why: a config error goes to stderr, the rest to the log
            logs = [tmp / "stderr.log", tmp / "error.log"]
            why = " ".join(f.read_text(errors="replace")[-1000:] for f in logs if f.exists())
            raise SystemExit(f"{exc}: {why.strip()}") from None
        yield proc
    finally:
        stop_process(proc, wait=10)


def upstream_errors(tmp: Path) -> int:
    """Failed upstream attempts nginx logged ("upstream timed out", ...: one [error] line each)."""
    log = tmp / "error.log"
    if not log.exists():
        return 0
    return sum("[error]" in line and "upstream" in line for line in log.read_text().splitlines())
