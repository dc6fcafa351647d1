"""The cluster drill: start the pieces, render and localise the configs, fail things, measure.

`./dev cluster` runs it and prints figures, then one JSON line (the last line). Figures that
need the real Tessera are null, with the reason in `tessera_missing`, while it cannot be had.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from domain.naming import tessera_key_id, tessera_key_secret_names
from node_bootstrap.scripts import TESSERA_SCHEMA_SQL
from tools.cluster import configs, tessera_dist
from tools.cluster.configs import Layout
from tools.cluster.failover import promote_under_load
from tools.cluster.postgres import PgPair
from tools.cluster.procs import (
    DrillError,
    MissingPieceError,
    NotPublishedError,
    Procs,
    free_port,
    run,
    wait_until,
)
from tools.cluster.vault import StackSecrets, Vault, put_stack_secrets, start_vault

REPO = Path(__file__).resolve().parents[2]
TESSERA_KEY_ID = tessera_key_id("quorum-ha-drill")  # as the stack names it from its prefix
SCHEMA_TABLES = 5  # TESSERA_SCHEMA_SQL creates five tables
# What the issue asks for; null until the real Tessera runs here.
TESSERA_FIGURES = (
    "sent",
    "read_back",
    "lost",
    "client_errors_on_tessera_kill",
    "db_failover_seconds",
    "client_errors_on_db_failover",
    "partyinfo_converged_seconds",
    "recipient_not_found_without_mirror",
    "recipient_not_found_with_mirror",
)


@dataclass
class Drill:
    """One run: its temp dir, processes and figures."""

    writes: int = 60
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="quorum-ha-cluster-")))
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.notes.append(line)
        print(f"cluster: {line}", flush=True)


def _app_env(user: str, password: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PGUSER": user,
        "PGPASSWORD": password,
        "PGCONNECT_TIMEOUT": "2",
        "LC_ALL": "C",
    }


def apply_schema(drill: Drill, pg: PgPair, uri: str, env: dict[str, str]) -> int:
    """The boot script's psql call, three at once as three machines booting together."""
    sql = drill.work / "tessera-schema.sql"
    sql.write_text(TESSERA_SCHEMA_SQL)
    psql = str(pg.bin / "psql")

    def one(_: int) -> str:
        return run(
            [psql, uri, "-v", "ON_ERROR_STOP=1", "-q", "-X", "-f", str(sql)],
            what="apply-tessera-schema (psql)",
            env=env,
        )

    with ThreadPoolExecutor(configs.TESSERA_COUNT) as pool:
        list(pool.map(one, range(configs.TESSERA_COUNT)))
    count_sql = (
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name LIKE ANY (ARRAY['encrypted_%', 'privacy_group', 'st_%'])"
    )
    wait_until(
        "schema replicated to the standby",
        lambda: pg.psql(pg.standby, count_sql) == str(SCHEMA_TABLES),
        30,
    )
    return configs.TESSERA_COUNT


def _healthy(url: str) -> bool:
    return _get(url) == 200


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback URL)
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def start_proxies(drill: Drill, procs: Procs, secrets: StackSecrets, layout: Layout) -> int:
    """Our proxy twice, as the ECS task and as a Quorum machine's IPC proxy; both healthy."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "proxy_image"))
    started = 0
    for name, cfg, admin in (
        ("standalone-proxy", configs.local_standalone_proxy_config(layout), layout.proxy_admin),
        ("ipc-proxy", configs.local_ipc_proxy_config(secrets, layout), layout.ipc_admin),
    ):
        path = drill.work / f"{name}.json"
        path.write_text(json.dumps(cfg, indent=2))
        proc = procs.start(
            name, [sys.executable, "-m", "quorum_proxy", "--config", str(path)], env=env
        )
        url = f"http://127.0.0.1:{admin}/healthz"
        try:
            wait_until(f"{name} /healthz", partial(_healthy, url), 30)
        except DrillError as e:
            raise DrillError(f"{e}\n{proc.tail()}") from None
        started += 1
    mode = layout.ipc_socket.stat().st_mode
    if not stat.S_ISSOCK(mode) or stat.S_IMODE(mode) != 0o660:
        raise DrillError(f"ipc-proxy: {layout.ipc_socket} is not a 0660 unix socket ({oct(mode)})")
    return started


def make_layout(vault: Vault, pg: PgPair, work: Path) -> Layout:
    """Free loopback ports for every listener of the drill."""
    n = configs.TESSERA_COUNT
    return Layout(
        tessera_p2p=tuple(free_port() for _ in range(n)),
        tessera_q2t=tuple(free_port() for _ in range(n)),
        tessera_third_party=tuple(free_port() for _ in range(n)),
        proxy_p2p=free_port(),
        proxy_third_party=free_port(),
        proxy_rpc=free_port(),
        proxy_admin=free_port(),
        ipc_admin=free_port(),
        quorum_rpc=tuple(free_port() for _ in range(n)),
        vault_endpoint=vault.endpoint,
        jdbc_hosts=pg.jdbc_hosts(),
        remote_p2p_url=f"http://127.0.0.1:{free_port()}",
        ipc_socket=work / "tm.ipc",
    )


def start_data_pieces(
    drill: Drill, procs: Procs
) -> tuple[Vault, StackSecrets, PgPair, dict[str, str]]:
    """moto with the stack's secrets, then PostgreSQL primary + standby with Tessera's role."""
    vault = start_vault(procs)
    secrets = put_stack_secrets(vault, TESSERA_KEY_ID)
    names = sorted(vault.arns)
    drill.say(f"moto Secrets Manager at {vault.endpoint} holds {', '.join(names)}")
    if vault.get(tessera_key_secret_names(TESSERA_KEY_ID)[0]) != secrets.public_key:
        raise DrillError("vault: the public key read back differs")

    # PostgreSQL runs as its own account: it must reach its dirs inside the temp dir.
    drill.work.chmod(0o711)
    (drill.work / "pg").mkdir()
    pg = PgPair(drill.work / "pg", procs)
    t = time.monotonic()
    pg.start_primary()
    db = json.loads(vault.get(secrets.db_secret_arn))  # as start-tessera.sh reads it (jq)
    pg.create_database(db["username"], db["password"])
    pg.start_standby()
    drill.say(
        f"PostgreSQL primary :{pg.primary.port} + streaming standby :{pg.standby.port} "
        f"up in {time.monotonic() - t:.1f} s"
    )
    return vault, secrets, pg, db


def run_drill(writes: int = 60) -> dict[str, Any]:
    """The whole drill; every process stopped by pid and the temp dir removed at the end."""
    start = time.monotonic()
    drill = Drill(writes=writes)
    procs = Procs(drill.work / "logs")
    (drill.work / "logs").mkdir()
    result: dict[str, Any] = {"tessera_version": None}
    try:
        try:
            release = tessera_dist.resolve()
            result["tessera_version"] = release.version
            result["tessera_missing"] = None
            result["tessera_not_published"] = False
        except MissingPieceError as e:
            result["tessera_missing"] = str(e)
            result["tessera_not_published"] = isinstance(e, NotPublishedError)
            drill.say(f"real Tessera: MISSING: {e}")

        vault, secrets, pg, db = start_data_pieces(drill, procs)
        result["secrets_in_vault"] = sorted(vault.arns)
        n = configs.TESSERA_COUNT
        layout = make_layout(vault, pg, drill.work)
        uri = configs.schema_uri(secrets, layout)
        env = _app_env(db["username"], db["password"])
        result["schema_applied_by"] = apply_schema(drill, pg, uri, env)
        drill.say(f"schema: {result['schema_applied_by']} psql at once via {uri}, all succeeded")

        for i in range(n):
            cfg = configs.local_tessera_config(secrets, layout, i)
            (drill.work / f"tessera-{i}.json").write_text(json.dumps(cfg, indent=2))
        result["tessera_configs_rendered"] = n
        result["proxies_healthy"] = start_proxies(drill, procs, secrets, layout)
        drill.say(f"{n} Tessera configs rendered and valid; standalone + IPC proxy healthy")

        fo = promote_under_load(
            pg,
            procs,
            uri=uri,
            jdbc_url=configs.local_tessera_config(secrets, layout, 0)["jdbc"]["url"],
            db_user=db["username"],
            db_password=db["password"],
            writes=drill.writes,
        )
        result["db_promotion"] = fo
        for name in ("jdbc", "libpq"):
            f = fo[name]
            drill.say(
                f"standby promoted under load, {name}: {f['acked']}/{f['writes']} writes acked, "
                f"{f['lost']} lost, {f['client_errors']} failed attempts, "
                f"{f['failover_seconds']} s from primary stop to the next write"
            )
    finally:
        procs.stop_all()
        leftovers = [p.name for p in procs.started if p.alive()]
        shutil.rmtree(drill.work, ignore_errors=True)
        if leftovers:
            raise DrillError(f"still running after stop: {leftovers}")
    for key in TESSERA_FIGURES:
        result.setdefault(key, None)
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    writes = int(args[0]) if args else 60
    try:
        result = run_drill(writes)
    except MissingPieceError as e:
        print(f"cluster: missing piece: {e}", file=sys.stderr)
        return 2
    except DrillError as e:
        print(f"cluster: FAILED: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    # Incomplete until the real Tessera runs: say so in the exit status too.
    return 3 if result["tessera_version"] is None else 0
