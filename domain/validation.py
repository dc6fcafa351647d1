"""Rules a value must meet wherever it is checked: stack config (`components/settings`), a
machine's boot context (`node_bootstrap/context.py`). One home each, so the two never disagree.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

# --- characters the machines' boot files refuse ---------------------------------------------
# Values land in shell scripts and systemd environment files: nothing that could break quoting.
SHELL_UNSAFE = re.compile(r"[\"'$`\\\s]")
SHELL_UNSAFE_TEXT = "quotes, $, `, \\ or whitespace"


def is_shell_safe(value: str) -> bool:
    return not SHELL_UNSAFE.search(value)


def http_url_host(value: Any) -> str | None:
    """The host of a shell-safe http(s) URL with an explicit port, else None."""
    if not isinstance(value, str) or not is_shell_safe(value):
        return None
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.hostname


# --- AWS regions ----------------------------------------------------------------------------
# Regions of the aws and aws-us-gov partitions only: service endpoints (the machines' Tessera
# reaches secretsmanager.<region>.amazonaws.com) and kms:ViaService names are built with
# amazonaws.com, which China (amazonaws.com.cn) and the ISO partitions (c2s.ic.gov, ...) do not
# use (AWS SDK partitions.json: aws-iso `^us\-iso\-\w+\-\d+$`, aws-iso-b `us-isob-`, ...).
_REGION = re.compile(r"^(?!cn-)[a-z]{2}(-gov)?-[a-z]+-\d$")
REGION_ALLOWED = "an AWS region of the aws partition, e.g. us-east-1 (not cn-* or iso regions)"


def is_supported_region(region: Any) -> bool:
    return isinstance(region, str) and bool(_REGION.match(region))


def partition(region: str) -> str:
    """The ARN partition of a supported region."""
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


# --- DNS names ------------------------------------------------------------------------------
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)


def is_dns_name(value: str) -> bool:
    return bool(_DNS_NAME.match(value))


# --- enode URLs -----------------------------------------------------------------------------
# GoQuorum's parser (ConsenSys/quorum p2p/enode/urlv4.go parseComplete): the node id is 64 bytes
# of hex (hex.DecodeString: either case), the host an IP (IPv6 in brackets) or a DNS name it
# resolves, the port and the optional `discport` and `raftport` query values decimal uint16
# (strconv.ParseUint(..., 10, 16)); other query parameters are ignored.
_ENODE = re.compile(
    r"^enode://[0-9a-fA-F]{128}@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})"
    r"(\?(?P<query>[\w=&.-]*))?$"
)
_ENODE_PORT_PARAMS = ("discport", "raftport")
ENODE_ALLOWED = (
    "an enode URL: enode://<128 hex chars>@<host>:<port>[?discport=<port>][&raftport=<port>]"
)


def _is_port(text: str) -> bool:
    return text.isdigit() and int(text) <= 65535


def is_enode_url(value: Any) -> bool:
    """True when GoQuorum would parse `value` as a complete node URL (static/permissioned)."""
    match = _ENODE.match(value) if isinstance(value, str) else None
    if match is None or not _is_port(match["port"]):
        return False
    host = match["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
    elif not is_dns_name(host):
        return False
    query = parse_qs(match["query"] or "", keep_blank_values=True)
    return all(_is_port(query[name][0]) for name in _ENODE_PORT_PARAMS if query.get(name, [""])[0])


# --- the Quorum network's genesis -----------------------------------------------------------
# Without config.isQuorum true GoQuorum runs as plain geth: no private transactions.
IS_QUORUM_ALLOWED = "true: without it GoQuorum runs as plain geth, with no private transactions"


def genesis_is_quorum(genesis: Any) -> bool:
    """True when a genesis document (parsed JSON) says `"config": {"isQuorum": true}`."""
    config = genesis.get("config") if isinstance(genesis, dict) else None
    return isinstance(config, dict) and config.get("isQuorum") is True
