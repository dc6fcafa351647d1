"""A PostgreSQL primary and its streaming-replication standby from Debian's packages.

Both listen on 127.0.0.1 only, with TLS (a self-signed certificate: the boot script's psql URL
says sslmode=require, as RDS does), in a temp dir, as a non-root account when run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from tools.cluster.procs import (
    DrillError,
    MissingPieceError,
    Proc,
    Procs,
    RunAs,
    free_port,
    port_open,
    run,
    wait_until,
)

# Debian's postgresql package creates this account; elsewhere the drill makes its own.
DEBIAN_ACCOUNT = "postgres"
DRILL_ACCOUNT = "quorum-ha-drill"
SUPERUSER = "postgres"
DATABASE = "tessera"


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<v>/bin with initdb, or MissingPieceError."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise MissingPieceError(
            "PostgreSQL server binaries not found in /usr/lib/postgresql/<v>/bin: "
            "apt-get install postgresql (listed in apt-packages.txt)"
        )
    return found[-1]


def run_as_account() -> RunAs | None:
    """None when not root; else the postgres account, created (useradd) if missing."""
    if os.geteuid() != 0:
        return None
    for name in (DEBIAN_ACCOUNT, DRILL_ACCOUNT):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(entry.pw_uid, entry.pw_gid)
    run(
        ["useradd", "--system", "--user-group", "--no-create-home", DRILL_ACCOUNT],
        what="useradd (initdb refuses root)",
    )
    entry = pwd.getpwnam(DRILL_ACCOUNT)
    return RunAs(entry.pw_uid, entry.pw_gid)


@dataclass
class PgServer:
    name: str
    data_dir: Path
    port: int
    proc: Proc | None = None


class PgPair:
    """Primary plus standby (pg_basebackup -R); promote() is the DR runbook's step."""

    def __init__(self, root: Path, procs: Procs) -> None:
        self.bin = postgres_bin_dir()
        if shutil.which("openssl") is None:
            raise MissingPieceError("openssl not found: apt-get install openssl")
        self.root = root
        self.procs = procs
        self.run_as = run_as_account()
        self.superuser_password = secrets.token_urlsafe(18)
        self.primary = PgServer("pg-primary", root / "primary", free_port())
        self.standby = PgServer("pg-standby", root / "standby", free_port())
        self.socket_dir = root / "sockets"

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "PGPASSWORD": self.superuser_password,
            "PGCONNECT_TIMEOUT": "5",
            "LC_ALL": "C",
        }

    def _tool(self, name: str) -> str:
        return str(self.bin / name)

    def _run_tool(self, name: str, *args: str) -> None:
        """One of PostgreSQL's own programs, run as the cluster's user until it exits."""
        run(
            [self._tool(name), *args],
            what=name,
            env=self._env(),
            run_as=self.run_as,
            timeout=120,
        )

    def start_primary(self) -> None:
        self.root.chmod(0o755)
        self._own(self.root)
        for d in (self.socket_dir,):
            d.mkdir()
            self._own(d)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        self._run_tool(
            "initdb",
            "-D",
            str(self.primary.data_dir),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        data = self.primary.data_dir
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(data / "server.key"),
                "-out",
                str(data / "server.crt"),
            ],
            what="openssl (the server's TLS certificate)",
        )
        for f in ("server.key", "server.crt"):
            (data / f).chmod(0o600)
            self._own(data / f)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# cluster drill\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "ssl = on\n"
                "wal_level = replica\n"
                "max_wal_senders = 5\n"
                "hot_standby = on\n"
                "fsync = off\n"  # a throwaway cluster on a shared CI disk
            )
        self._start(self.primary)

    def _start(self, server: PgServer) -> None:
        server.proc = self.procs.start(
            server.name,
            [self._tool("postgres"), "-D", str(server.data_dir), "-p", str(server.port)],
            env=self._env(),
            run_as=self.run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown
        )
        proc = server.proc
        try:
            wait_until(f"{server.name} listening", lambda: port_open(server.port), 60)
        except DrillError as e:
            raise DrillError(f"{e}\n{proc.tail()}") from None
        wait_until(
            f"{server.name} accepting connections",
            lambda: self.psql(server, "SELECT 1", database="postgres", quiet_fail=True) == "1",
            60,
        )

    def psql(
        self,
        server: PgServer,
        sql: str,
        *,
        database: str = DATABASE,
        quiet_fail: bool = False,
    ) -> str:
        """One statement as the superuser over TLS; its single-value answer."""
        uri = (
            f"postgresql://{SUPERUSER}@127.0.0.1:{server.port}/{database}"
            "?sslmode=require&connect_timeout=5"
        )
        try:
            out = run(
                [self._tool("psql"), uri, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
                what=f"psql on {server.name}",
                env=self._env(),
            )
        except DrillError:
            if quiet_fail:
                return ""
            raise
        return out.strip()

    def create_database(self, username: str, password: str) -> None:
        """Tessera's role and database, as the RDS master user and database name would be."""
        quoted = password.replace("'", "''")
        self.psql(
            self.primary,
            f"CREATE ROLE {username} LOGIN PASSWORD '{quoted}'",
            database="postgres",
        )
        self.psql(
            self.primary, f"CREATE DATABASE {DATABASE} OWNER {username}", database="postgres"
        )

    def start_standby(self) -> None:
        self._run_tool(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            SUPERUSER,
            "-D",
            str(self.standby.data_dir),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
        )
        self._start(self.standby)
        answer = self.psql(self.standby, "SELECT pg_is_in_recovery()")
        if answer != "t":
            raise DrillError(f"pg-standby: pg_is_in_recovery() is {answer!r}, expected t")

    def promote(self) -> None:
        """pg_promote(): the local form of aws rds promote-read-replica."""
        answer = self.psql(self.standby, "SELECT pg_promote(true, 60)")
        if answer != "t":
            raise DrillError(f"pg-standby: pg_promote() answered {answer!r}")

    def jdbc_hosts(self) -> str:
        """host:port,host:port as the program's JDBC URL lists primary then replica."""
        return f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
