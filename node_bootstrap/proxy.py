"""Our proxy's configs, the local IPC one and the standalone one.

Format: proxy_image/README.md#config-reference.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import yaml

from domain.paths import TM_IPC_PATH
from domain.ports import (
    PROXY_ADMIN_PORT,
    PROXY_LISTENER_NAMES,
    QUORUM_RPC_PORT,
    TESSERA_P2P_PORT,
    TESSERA_Q2T_PORT,
    TESSERA_THIRD_PARTY_PORT,
)
from node_bootstrap.context import (
    BootContextError,
    NodeBootContext,
    is_dns_name,
    validate_context,
)

# The proxy's listener modes that send everything to one upstream, its first healthy server
# (primary) first: `jsonrpc` (JSON-RPC aware failover, the stack's) and `tcp` (a byte stream,
# the seed's nginx `stream`). See proxy_image/README.md, "JSON-RPC mode".
RPC_PROTOCOLS = ("jsonrpc", "tcp")
RPC_PROTOCOL = "jsonrpc"

# Tessera answers POST /send for an unknown recipient with 404: the next Tessera may know it
# (nginx's proxy_next_upstream error timeout http_404 non_idempotent).
RETRY_404: dict[str, Any] = {
    "retry_on": ["error", "timeout", "http_404"],
    "retry_non_idempotent": True,
}
UPCHECK: dict[str, Any] = {
    "type": "http",
    "path": "/upcheck",
    "expect_status": 200,
    "interval": "5s",
    "timeout": "2s",
    "rise": 2,
    "fall": 3,
}


# Tessera's /upcheck touches neither database nor keys: the proxy's deep check asks what does
# (proxy_image/README.md, "Tessera deep check"). Timing as UPCHECK's.
DEEP_CHECK_TIMING: dict[str, Any] = {
    key: UPCHECK[key] for key in ("interval", "timeout", "rise", "fall")
}


def q2t_deep_check() -> dict[str, Any]:
    """The IPC proxy's check: GET /transaction/<random hash> on Q2T answers 404 once the
    database answered. Quorum machines reach only Tessera's Q2T port (components/network.py),
    so /keys (third party) is left to the standalone proxy's check."""
    # "server": the port each server is listed with (TESSERA_Q2T_PORT here)
    return {"type": "tessera", **DEEP_CHECK_TIMING, "q2t_port": "server"}


def standalone_deep_check(tessera_public_key: str) -> dict[str, Any]:
    """The standalone proxy's check, on the ports it reaches: GET /keys (third party) lists the
    shared key, POST /resend of a random hash (P2P) answers 404 once the database answered;
    GET /partyinfo/keys gives the party counts."""
    try:
        raw = base64.b64decode(tessera_public_key, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if not isinstance(tessera_public_key, str) or len(raw) != 32:
        raise BootContextError(
            "tessera_public_key", tessera_public_key, "a Tessera public key: base64 of 32 bytes"
        )
    return {
        "type": "tessera",
        **DEEP_CHECK_TIMING,
        "public_key": tessera_public_key,
        "third_party_port": TESSERA_THIRD_PARTY_PORT,
        "p2p_port": TESSERA_P2P_PORT,
    }


def _servers(field: str, names: Sequence[str], port: int) -> list[str]:
    names = tuple(names)
    if not names or any(not isinstance(n, str) or not is_dns_name(n) for n in names):
        raise BootContextError(field, names, "a non-empty list of DNS names")
    if len(set(names)) != len(names):
        raise BootContextError(field, names, "each name once")
    return [f"{name}:{port}" for name in names]


def _upstream(servers: list[str], health_check: dict[str, Any]) -> dict[str, Any]:
    return {
        "servers": servers,
        "resolve_interval": "30s",  # machines replaced by auto recovery keep their name
        "connect_timeout": "2s",
        "read_timeout": "30s",
        "max_fails": 1,
        "fail_timeout": "10s",
        "health_check": health_check,
    }


# The IPC proxy's one upstream: its name labels the proxy's metrics (domain/metrics.py).
Q2T_UPSTREAM = "q2t"


def q2t_servers(tessera_dns_names: Sequence[str]) -> list[str]:
    """The IPC proxy's servers: every Tessera's Q2T over HTTP."""
    return _servers("tessera_dns_names", tessera_dns_names, TESSERA_Q2T_PORT)


def ipc_proxy_config(ctx: NodeBootContext) -> dict[str, Any]:
    """The IPC proxy config as a dict (see render_ipc_proxy_config)."""
    validate_context(ctx)
    if not ctx.runs_ipc_proxy:
        raise BootContextError(
            "role", ctx.role, "quorum (the IPC proxy runs on Quorum machines of full and tessera)"
        )
    servers = q2t_servers(ctx.tessera_dns_names)
    return {
        "workers": 1,
        # Only this machine needs the admin endpoints: keep them off the network.
        "admin": {"listen": f"127.0.0.1:{PROXY_ADMIN_PORT}"},
        "access_log": True,
        "drain_timeout": "20s",
        "upstreams": {Q2T_UPSTREAM: _upstream(servers, q2t_deep_check())},
        "listeners": [
            {
                "name": "q2t",
                "listen": f"unix:{TM_IPC_PATH}",
                # Quorum runs as the same service user and group; nobody else may send.
                "socket_mode": "0660",
                "protocol": "http",
                "routes": [{"prefix": "/", "upstream": "q2t", **RETRY_404}],
            }
        ],
    }


def render_ipc_proxy_config(ctx: NodeBootContext) -> str:
    """YAML for the proxy on a Quorum machine (setups full and tessera): tm.ipc -> every Q2T."""
    return yaml.safe_dump(ipc_proxy_config(ctx), sort_keys=False)


def standalone_proxy_config(
    *,
    quorum_dns_names: Sequence[str],
    tessera_dns_names: Sequence[str],
    tessera_public_key: str | None = None,
    workers: int = 1,
    access_log: bool = True,
) -> dict[str, Any]:
    """The standalone proxy config as a dict (see render_standalone_proxy_config).

    With the node's Tessera public key, the Tessera upstreams use the deep check; without it
    (configs rendered before the key exists, the cluster drill) only /upcheck.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise BootContextError("workers", workers, "an integer 1..256")
    tessera_check = (
        dict(UPCHECK) if tessera_public_key is None else standalone_deep_check(tessera_public_key)
    )
    quorum = _servers("quorum_dns_names", quorum_dns_names, QUORUM_RPC_PORT)
    third_party = _servers("tessera_dns_names", tessera_dns_names, TESSERA_THIRD_PARTY_PORT)
    p2p = _servers("tessera_dns_names", tessera_dns_names, TESSERA_P2P_PORT)
    jsonrpc_check = {
        "type": "jsonrpc",
        "interval": "5s",
        "timeout": "2s",
        "rise": 2,
        "fall": 3,
        # A node whose head stops moving is behind the network: fail over from it.
        "stall_after": "60s",
    }
    plain = {"retry_on": ["error", "timeout"]}
    return {
        "workers": workers,
        # Each NLB target group asks /readyz/<listener> here (components/proxy_service.py).
        "admin": {"listen": f"0.0.0.0:{PROXY_ADMIN_PORT}"},
        "access_log": access_log,
        "drain_timeout": "20s",
        "upstreams": {
            "quorum": _upstream(quorum, jsonrpc_check),
            "third_party": _upstream(third_party, dict(tessera_check)),
            "p2p": _upstream(p2p, dict(tessera_check)),
        },
        "listeners": [
            {
                "name": PROXY_LISTENER_NAMES["rpc"],
                "listen": f"0.0.0.0:{QUORUM_RPC_PORT}",
                # The first healthy node is primary, the others backup: two nodes signing with
                # one account behind round robin would assign clashing nonces. jsonrpc: a call
                # the primary fails goes to the next node when it is safe to repeat (reads,
                # signed transactions); one that signs with the node's account is answered
                # "outcome unknown", never sent twice.
                "protocol": RPC_PROTOCOL,
                "upstream": "quorum",
            },
            {
                "name": PROXY_LISTENER_NAMES["third-party"],
                "listen": f"0.0.0.0:{TESSERA_THIRD_PARTY_PORT}",
                "protocol": "http",
                "routes": [{"prefix": "/", "upstream": "third_party", **RETRY_404}],
            },
            {
                "name": PROXY_LISTENER_NAMES["p2p"],
                "listen": f"0.0.0.0:{TESSERA_P2P_PORT}",
                "protocol": "http",
                "routes": [
                    {
                        # Party info lives in each Tessera's memory: every one must learn it.
                        "prefix": "/partyinfo",
                        "upstream": "p2p",
                        "retry_on": ["error", "timeout"],
                        "retry_non_idempotent": True,
                        "mirror": {"upstream": "p2p", "max_in_flight": 64, "timeout": "2s"},
                    },
                    # Longer prefixes win: validation is a question to one Tessera, no mirror.
                    {"prefix": "/partyinfo/validate", "upstream": "p2p", **plain},
                    {"prefix": "/resend", "upstream": "p2p", **plain},
                    {"prefix": "/push", "upstream": "p2p", **plain},
                    {"prefix": "/upcheck", "upstream": "p2p", **plain},
                    # /version, /metrics and whatever a newer Tessera adds.
                    {"prefix": "/", "upstream": "p2p", **plain},
                ],
            },
        ],
    }


def render_standalone_proxy_config(
    *,
    quorum_dns_names: Sequence[str],
    tessera_dns_names: Sequence[str],
    tessera_public_key: str | None = None,
) -> str:
    """JSON for the ECS proxy behind the NLB (env QUORUM_PROXY_CONFIG): RPC, 9081 and 9001."""
    config = standalone_proxy_config(
        quorum_dns_names=quorum_dns_names,
        tessera_dns_names=tessera_dns_names,
        tessera_public_key=tessera_public_key,
    )
    return json.dumps(config, separators=(",", ":"))
