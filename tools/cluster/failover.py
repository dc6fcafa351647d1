"""The DR runbook's step under load: the primary goes, the standby is promoted, clients write on.

Two clients write at once through the two-host address of the one database: psql with the
boot script's libpq URI (target_session_attrs=read-write) and the PostgreSQL JDBC driver Tessera
runs with, on the Tessera configs' JDBC URL (targetServerType=primary). Each retries a failed
write until it succeeds; every acknowledged write must be in the promoted database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from domain.versions import POSTGRES_JDBC_VERSION
from tools.cluster import jdbc
from tools.cluster.postgres import PgPair
from tools.cluster.procs import DrillError, Procs, run

PACE = 0.1  # seconds between writes of one client
DEADLINE = 120.0  # a write still failing after this ends the drill
TABLES = {"libpq": "cluster_drill_libpq", "jdbc": "cluster_drill_jdbc"}


@dataclass
class Stream:
    """One client's writes: what was acknowledged, how many attempts failed, and when."""

    name: str
    acked: list[int] = field(default_factory=list)
    errors: int = 0
    errors_after_stop: int = 0
    recovered_at: float | None = None  # first success after a failure seen after the stop
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, k: int, stopped_at: float | None) -> None:
        with self.lock:
            self.acked.append(k)
            if stopped_at is not None and self.errors_after_stop and self.recovered_at is None:
                self.recovered_at = time.monotonic()

    def err(self, stopped_at: float | None) -> None:
        with self.lock:
            self.errors += 1
            if stopped_at is not None:
                self.errors_after_stop += 1


class Failover:
    """Stops the primary (fast shutdown) then promotes the standby, in its own thread."""

    def __init__(self, pg: PgPair) -> None:
        self.pg = pg
        self.stopped_at: float | None = None
        self.promoted_at: float | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="fail-over", daemon=True)

    def _run(self) -> None:
        proc = self.pg.primary.proc
        if proc is None:
            self.error = "the primary was never started"
            return
        # From the signal on: a primary shutting down already refuses new sessions.
        self.stopped_at = time.monotonic()
        proc.stop()
        try:
            self.pg.promote()
            self.promoted_at = time.monotonic()
        except DrillError as e:
            self.error = str(e)


def _libpq_writes(
    pg: PgPair, uri: str, env: dict[str, str], n: int, stream: Stream, failover: Failover
) -> None:
    psql = str(pg.bin / "psql")
    deadline = time.monotonic() + DEADLINE
    for k in range(n):
        while True:
            try:
                run(
                    [
                        psql,
                        uri,
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-qAtX",
                        "-c",
                        # k is the int this loop counts: nothing from outside reaches the SQL
                        f"INSERT INTO {TABLES['libpq']} VALUES ({k}) ON CONFLICT DO NOTHING",  # noqa: S608
                    ],
                    what="write",
                    env=env,
                    timeout=10,
                )
            except DrillError:
                stream.err(failover.stopped_at)
                if time.monotonic() > deadline:
                    return
                time.sleep(PACE)
                continue
            stream.ok(k, failover.stopped_at)
            break
        time.sleep(PACE)


def _figures(
    stream: Stream, present: set[int], n: int, stopped_at: float | None
) -> dict[str, Any]:
    recovered = stream.recovered_at
    return {
        "writes": n,
        "acked": len(stream.acked),
        "lost": len(set(stream.acked) - present),
        "client_errors": stream.errors,
        # null when no write failed after the stop: the client never saw the failover
        "failover_seconds": (
            round(recovered - stopped_at, 2)
            if recovered is not None and stopped_at is not None
            else None
        ),
    }


def promote_under_load(
    pg: PgPair,
    procs: Procs,
    *,
    uri: str,
    jdbc_url: str,
    db_user: str,
    db_password: str,
    writes: int,
) -> dict[str, Any]:
    """Both clients write `writes` rows; the failover starts after a third of the JDBC ones."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PGUSER": db_user,
        "PGPASSWORD": db_password,
        "PGCONNECT_TIMEOUT": "2",
        "LC_ALL": "C",
    }
    psql = str(pg.bin / "psql")
    for table in TABLES.values():
        run(
            [psql, uri, "-qAtX", "-c", f"CREATE TABLE {table} (id int PRIMARY KEY)"],
            what=f"create {table}",
            env=env,
        )
    java, jar = jdbc.java(), jdbc.driver_jar()
    writer = procs.start(
        "jdbc-writer",
        [java, "-cp", str(jar), str(jdbc.WRITER), jdbc_url, str(writes), str(int(PACE * 1000))],
        env={"PATH": "/usr/bin:/bin", "DRILL_DB_USER": db_user, "DRILL_DB_PASSWORD": db_password},
        pipe_stdout=True,
    )
    failover = Failover(pg)
    streams = {"libpq": Stream("libpq"), "jdbc": Stream("jdbc")}
    libpq = threading.Thread(
        target=_libpq_writes,
        args=(pg, uri, env, writes, streams["libpq"], failover),
        name="libpq-writes",
        daemon=True,
    )
    out: IO[bytes] | None = writer.popen.stdout
    assert out is not None
    for raw in out:
        word, _, rest = raw.decode().strip().partition(" ")
        if word == "ok":
            streams["jdbc"].ok(int(rest), failover.stopped_at)
            if not libpq.is_alive() and len(streams["jdbc"].acked) == 1:
                libpq.start()  # both clients write through the same window
            if len(streams["jdbc"].acked) == max(1, writes // 3):
                failover.thread.start()
        elif word == "err":
            streams["jdbc"].err(failover.stopped_at)
    code = writer.popen.wait(DEADLINE)
    if code != 0:
        raise DrillError(f"jdbc-writer: exit {code}\n{writer.tail()}")
    libpq.join(DEADLINE)
    failover.thread.join(DEADLINE)
    if failover.error is not None:
        raise DrillError(f"failover: {failover.error}")
    result: dict[str, Any] = {}
    for name, table in TABLES.items():
        select = f"SELECT id FROM {table}"  # noqa: S608 (table names are the constants above)
        rows = run([psql, uri, "-qAtX", "-c", select], what="read back", env=env)
        present = {int(x) for x in rows.split()}
        result[name] = _figures(streams[name], present, writes, failover.stopped_at)
    result["jdbc"]["driver"] = f"org.postgresql:postgresql:{POSTGRES_JDBC_VERSION}"
    result["promote_seconds"] = (
        round(failover.promoted_at - failover.stopped_at, 2)
        if failover.promoted_at is not None and failover.stopped_at is not None
        else None
    )
    result["standby_now_primary"] = pg.psql(pg.standby, "SELECT pg_is_in_recovery()") == "f"
    return result
