"""The configs a machine gets, rendered by node_bootstrap, and their local form for the drill.

Every difference between the two is a row of DIFFERENCES; tests/cluster checks that the
rendered and the localised configs differ exactly at those rows' paths and nowhere else.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.database import DB_NAME
from domain.database import jdbc_url as machine_jdbc_url
from domain.naming import log_group_name, zone_name
from domain.paths import TM_IPC_PATH
from domain.ports import (
    DB_PORT,
    LISTENERS,
    PROXY_ADMIN_PORT,
    PROXY_LISTENER_NAMES,
    QUORUM_P2P_PORT,
    QUORUM_RPC_PORT,
    TESSERA_P2P_PORT,
    TESSERA_Q2T_PORT,
    TESSERA_THIRD_PARTY_PORT,
)
from domain.setups import Setup
from domain.versions import DEFAULT_QUORUM_VERSION, DEFAULT_TESSERA_VERSION
from node_bootstrap import NodeBootContext
from node_bootstrap.context import jdbc_to_libpq_uri
from node_bootstrap.proxy import ipc_proxy_config, standalone_proxy_config
from node_bootstrap.tessera import tessera_config, validate_tessera_config
from tools.cluster.vault import REGION, StackSecrets

SETUP: Setup = "full"
TESSERA_COUNT = 3
ZONE = zone_name("drill")
NLB = "quorum-ha-drill-nlb.elb.eu-west-1.amazonaws.com"
PROXY_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quorum-ha-proxy:drill"
TESSERA_NAMES = tuple(f"tessera-{i}.{ZONE}" for i in range(TESSERA_COUNT))
QUORUM_NAMES = tuple(f"quorum-{i}.{ZONE}" for i in range(TESSERA_COUNT))
DB_PRIMARY = "quorum-ha-drill-tessera.abc.eu-west-1.rds.amazonaws.com"
DB_REPLICA = "quorum-ha-drill-tessera-replica.abc.eu-west-1.rds.amazonaws.com"
GENESIS = {"config": {"chainId": 1337, "isQuorum": True}, "alloc": {}, "gasLimit": "0xE0000000"}
ENODE_KEY = "ab" * 64


@dataclass(frozen=True)
class Difference:
    """One way the local run differs from a machine's boot, and why it must."""

    file: str  # tessera | standalone-proxy | ipc-proxy | run
    path: str  # the key in the file (dotted; list items by their app or name), or a topic
    machine: str
    local: str
    why: str


ONE_HOST = "all processes share 127.0.0.1, so each gets its own port"
DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "tessera",
        "jdbc.url",
        f"jdbc:postgresql://<rds primary>:{DB_PORT},<rds replica>:{DB_PORT}/{DB_NAME}?...",
        "jdbc:postgresql://127.0.0.1:<primary>,127.0.0.1:<standby>/tessera?...",
        "the two local PostgreSQL servers stand for RDS's primary and read replica; same "
        "database, parameters and host order (components.tessera_database.jdbc_url)",
    ),
    Difference(
        "tessera",
        "keys.keyVaultConfigs[AWS].properties.endpoint",
        "https://secretsmanager.<region>.amazonaws.com",
        "http://127.0.0.1:<moto>",
        "moto's server mode stands for Secrets Manager",
    ),
    Difference(
        "tessera",
        "serverConfigs[P2P].serverAddress",
        f"http://<nlb>:{TESSERA_P2P_PORT}",
        "http://127.0.0.1:<proxy p2p>",
        "our standalone proxy stands for the NLB plus its ECS tasks",
    ),
    Difference(
        "tessera",
        "serverConfigs[ThirdParty].serverAddress",
        f"http://<nlb>:{TESSERA_THIRD_PARTY_PORT}",
        "http://127.0.0.1:<proxy third-party>",
        "our standalone proxy stands for the NLB plus its ECS tasks",
    ),
    *(
        Difference(
            "tessera",
            f"serverConfigs[{app}].bindingAddress",
            f"http://0.0.0.0:{port}",
            "http://127.0.0.1:<own port>",
            ONE_HOST + "; loopback only",
        )
        for app, port in (
            ("P2P", TESSERA_P2P_PORT),
            ("Q2T", TESSERA_Q2T_PORT),
            ("ThirdParty", TESSERA_THIRD_PARTY_PORT),
        )
    ),
    Difference(
        "tessera",
        "serverConfigs[Q2T].serverAddress",
        f"http://tessera-<i>.<zone>:{TESSERA_Q2T_PORT}",
        "http://127.0.0.1:<own port>",
        ONE_HOST,
    ),
    Difference(
        "tessera",
        "peer",
        "the network's Tessera P2P URLs (tesseraPeers)",
        "http://127.0.0.1:<remote party>",
        "the remote party of the drill is the network's other organisation",
    ),
    Difference(
        "standalone-proxy",
        "admin.listen",
        f"0.0.0.0:{PROXY_ADMIN_PORT}",
        "127.0.0.1:<port>",
        ONE_HOST + "; loopback only",
    ),
    *(
        Difference(
            "standalone-proxy",
            f"listeners[{name}].listen",
            f"0.0.0.0:{port}",
            "127.0.0.1:<port>",
            ONE_HOST + "; loopback only",
        )
        for name, port in ((PROXY_LISTENER_NAMES[role], port) for role, port in LISTENERS.items())
    ),
    *(
        Difference(
            "standalone-proxy",
            f"upstreams.{name}.servers",
            f"<machine name>:{port}",
            "127.0.0.1:<port>",
            ONE_HOST + " (no private DNS zone locally)",
        )
        for name, port in (
            ("quorum", QUORUM_RPC_PORT),
            ("third_party", TESSERA_THIRD_PARTY_PORT),
            ("p2p", TESSERA_P2P_PORT),
        )
    ),
    Difference(
        "ipc-proxy",
        "admin.listen",
        f"127.0.0.1:{PROXY_ADMIN_PORT}",
        "127.0.0.1:<port>",
        ONE_HOST,
    ),
    Difference(
        "ipc-proxy",
        "listeners[q2t].listen",
        f"unix:{TM_IPC_PATH}",
        "unix:<temp dir>/tm.ipc",
        "the drill writes only inside its temp dir",
    ),
    Difference(
        "ipc-proxy",
        "upstreams.q2t.servers",
        f"tessera-<i>.<zone>:{TESSERA_Q2T_PORT}",
        "127.0.0.1:<port>",
        ONE_HOST + " (no private DNS zone locally)",
    ),
    Difference(
        "run",
        "processes",
        "docker run of the images (systemd units, start-*.sh)",
        "the same programs as plain processes started by the drill, stopped by pid",
        "no Docker engine here; the proxy runs as `python -m quorum_proxy` (its ENTRYPOINT)",
    ),
    Difference(
        "run",
        "credentials",
        "the instance role; DB credentials fetched into tmpfs by start-tessera.sh",
        "fake AWS keys for moto in the environment; DB credentials read from moto",
        "no AWS account here; the secrets have the names and shapes the program gives them",
    ),
    Difference(
        "run",
        "database",
        "RDS PostgreSQL Multi-AZ with an asynchronous read replica",
        "Debian's PostgreSQL primary + streaming standby (pg_basebackup -R), self-signed TLS",
        "the replica is promoted with pg_promote(), the local form of promote-read-replica",
    ),
    Difference(
        "run",
        "schema",
        "apply-tessera-schema.sh: psql on jdbc_to_libpq_uri(jdbc_url) with TESSERA_SCHEMA_SQL",
        "the same SQL through the same URI function, three psql at once (three machines)",
        "fsync is off on the local primary: a throwaway cluster on a shared disk",
    ),
)


@dataclass(frozen=True)
class Layout:
    """Local ports of every listener in the drill."""

    tessera_p2p: tuple[int, ...]
    tessera_q2t: tuple[int, ...]
    tessera_third_party: tuple[int, ...]
    proxy_p2p: int
    proxy_third_party: int
    proxy_rpc: int
    proxy_admin: int
    ipc_admin: int
    quorum_rpc: tuple[int, ...]  # nobody listens: no Quorum runs in the drill
    vault_endpoint: str
    jdbc_hosts: str  # 127.0.0.1:<primary>,127.0.0.1:<standby>
    remote_p2p_url: str
    ipc_socket: Path


def machine_context(secrets: StackSecrets, role: str, index: int) -> NodeBootContext:
    """The context the infrastructure would give machine `role`-`index` of a full setup."""
    names = TESSERA_NAMES if role == "tessera" else QUORUM_NAMES
    return NodeBootContext(
        setup=SETUP,
        role=role,  # type: ignore[arg-type]
        index=index,
        region=REGION,
        node_dns_name=names[index],
        quorum_dns_names=QUORUM_NAMES,
        tessera_dns_names=TESSERA_NAMES,
        p2p_url=f"http://{NLB}:{TESSERA_P2P_PORT}",
        third_party_url=f"http://{NLB}:{TESSERA_THIRD_PARTY_PORT}",
        tessera_key_id=secrets.tessera_key_id,
        quorum_account_secret_arn=secrets.quorum_account_secret_arn,
        quorum_node_key_secret_arn=secrets.quorum_node_key_secret_arn,
        db_secret_arn=secrets.db_secret_arn,
        jdbc_url=machine_jdbc_url(DB_PRIMARY, DB_REPLICA),
        quorum_version=DEFAULT_QUORUM_VERSION,
        tessera_version=DEFAULT_TESSERA_VERSION,
        proxy_image_uri=PROXY_IMAGE if role == "quorum" else None,
        genesis_json=json.dumps(GENESIS),
        ha_enodes=tuple(f"enode://{ENODE_KEY}@{name}:{QUORUM_P2P_PORT}" for name in QUORUM_NAMES),
        peer_enodes=(),
        tessera_peer_urls=(f"http://tessera.partner-a.example.net:{TESSERA_P2P_PORT}",),
        network_id=1337,
        log_group_name=log_group_name("drill", "nodes"),
    )


def local_jdbc_url(machine_url: str, hosts: str) -> str:
    """The machine's JDBC URL with the local hosts in place of RDS's (same order, same query)."""
    rest = machine_url.split("/", 3)[3]  # "tessera?targetServerType=..."
    return f"jdbc:postgresql://{hosts}/{rest}"


def schema_uri(secrets: StackSecrets, layout: Layout) -> str:
    """The psql URI the boot script derives from the JDBC URL (jdbc_to_libpq_uri)."""
    machine = machine_context(secrets, "tessera", 0)
    return jdbc_to_libpq_uri(local_jdbc_url(machine.jdbc_url, layout.jdbc_hosts))


def _server(cfg: dict[str, Any], app: str) -> dict[str, Any]:
    return next(s for s in cfg["serverConfigs"] if s["app"] == app)


def local_tessera_config(secrets: StackSecrets, layout: Layout, index: int) -> dict[str, Any]:
    """Tessera `index`'s config: rendered for the machine, then the DIFFERENCES applied."""
    machine = machine_context(secrets, "tessera", index)
    local_ctx = dataclasses.replace(
        machine,
        p2p_url=f"http://127.0.0.1:{layout.proxy_p2p}",
        third_party_url=f"http://127.0.0.1:{layout.proxy_third_party}",
        jdbc_url=local_jdbc_url(machine.jdbc_url, layout.jdbc_hosts),
        tessera_peer_urls=(layout.remote_p2p_url,),
    )
    cfg = tessera_config(local_ctx)
    ports = {
        "P2P": layout.tessera_p2p[index],
        "Q2T": layout.tessera_q2t[index],
        "ThirdParty": layout.tessera_third_party[index],
    }
    for app, port in ports.items():
        _server(cfg, app)["bindingAddress"] = f"http://127.0.0.1:{port}"
    _server(cfg, "Q2T")["serverAddress"] = f"http://127.0.0.1:{ports['Q2T']}"
    for vault in cfg["keys"]["keyVaultConfigs"]:
        if vault["keyVaultType"] == "AWS":
            vault["properties"]["endpoint"] = layout.vault_endpoint
    validate_tessera_config(cfg)
    return cfg


def machine_tessera_config(secrets: StackSecrets, index: int) -> dict[str, Any]:
    return tessera_config(machine_context(secrets, "tessera", index))


def _local_servers(ports: tuple[int, ...]) -> list[str]:
    return [f"127.0.0.1:{p}" for p in ports]


def machine_standalone_proxy_config() -> dict[str, Any]:
    return standalone_proxy_config(quorum_dns_names=QUORUM_NAMES, tessera_dns_names=TESSERA_NAMES)


def local_standalone_proxy_config(layout: Layout, *, mirror: bool = True) -> dict[str, Any]:
    """The ECS proxy's config on loopback; mirror=False drops the /partyinfo mirror (a drill
    switch that shows why the seed has it; never a machine's config)."""
    cfg = copy.deepcopy(machine_standalone_proxy_config())
    cfg["admin"]["listen"] = f"127.0.0.1:{layout.proxy_admin}"
    ups = cfg["upstreams"]
    ups["quorum"]["servers"] = _local_servers(layout.quorum_rpc)
    ups["third_party"]["servers"] = _local_servers(layout.tessera_third_party)
    ups["p2p"]["servers"] = _local_servers(layout.tessera_p2p)
    listen = {
        "quorum-rpc": layout.proxy_rpc,
        "third-party": layout.proxy_third_party,
        "p2p": layout.proxy_p2p,
    }
    for listener in cfg["listeners"]:
        listener["listen"] = f"127.0.0.1:{listen[listener['name']]}"
        if not mirror:
            for route in listener.get("routes", []):
                route.pop("mirror", None)
    return cfg


def machine_ipc_proxy_config(secrets: StackSecrets) -> dict[str, Any]:
    return ipc_proxy_config(machine_context(secrets, "quorum", 0))


def local_ipc_proxy_config(secrets: StackSecrets, layout: Layout) -> dict[str, Any]:
    cfg = copy.deepcopy(machine_ipc_proxy_config(secrets))
    cfg["admin"]["listen"] = f"127.0.0.1:{layout.ipc_admin}"
    cfg["upstreams"]["q2t"]["servers"] = _local_servers(layout.tessera_q2t)
    for listener in cfg["listeners"]:
        listener["listen"] = f"unix:{layout.ipc_socket}"
    return cfg


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaves; list items keyed by their app or name, so order does not count.

    A list without such keys (peer, upstream servers) is one leaf: it is replaced whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        label = next((k for k in ("app", "name", "prefix", "keyVaultType") if k in value[0]), None)
        if label is not None:
            out = {}
            for item in value:
                out |= flatten(item, f"{prefix}[{item[label]}]")
            return out
    return {prefix: value}


def differing_paths(machine: dict[str, Any], local: dict[str, Any]) -> set[str]:
    """Leaf paths whose value differs, or that only one side has."""
    a, b = flatten(machine), flatten(local)
    return {p for p in a.keys() | b.keys() if a.get(p, object()) != b.get(p, object())}


def documented_paths(file: str) -> set[str]:
    return {d.path for d in DIFFERENCES if d.file == file}


def differences_markdown() -> str:
    """The DIFFERENCES table for docs/cluster.md."""
    rows = ["| file | key | on a machine | in the drill | why |", "|---|---|---|---|---|"]
    for d in DIFFERENCES:
        cells = (d.file, f"`{d.path}`", d.machine, d.local, d.why)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
