"""The Quorum network this client node joins: its genesis, id and the other nodes' addresses
(what each machine's boot context renders Quorum's and Tessera's config from)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.validation import (
    ENODE_ALLOWED,
    IS_QUORUM_ALLOWED,
    SHELL_UNSAFE_TEXT,
    genesis_is_quorum,
    http_url_host,
    is_enode_url,
    is_shell_safe,
)

KEYS = ("genesis", "networkId", "quorumPeers", "tesseraPeers", "useWhiteList")


@dataclass(frozen=True, kw_only=True)
class QuorumNetworkSettings:
    genesis: Mapping[str, Any]
    network_id: int
    quorum_peers: tuple[str, ...] = ()  # enode URLs of the network's other nodes
    tessera_peers: tuple[str, ...] = ()  # the network's other Tessera P2P URLs


def parse(raw: Raw) -> QuorumNetworkSettings:
    genesis, network_id = _genesis(raw)
    if raw.bool_("useWhiteList", False):
        raise ConfigError(
            raw.key("useWhiteList"),
            True,
            "false: Tessera's whitelist compares exact caller IPs, and the proxy's Fargate "
            "tasks have no fixed addresses",
        )
    return QuorumNetworkSettings(
        genesis=genesis,
        network_id=network_id,
        quorum_peers=raw.list_("quorumPeers", _enode),
        tessera_peers=raw.list_("tesseraPeers", _peer_url),
    )


def _genesis(raw: Raw) -> tuple[Mapping[str, Any], int]:
    key = raw.key("genesis")
    value = raw.parsed("genesis")
    allowed = "the Quorum network's genesis.json as an object with config.chainId (integer)"
    if not isinstance(value, dict):
        raise ConfigError(key, value, allowed)
    config = value.get("config")
    chain_id = config.get("chainId") if isinstance(config, dict) else None
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise ConfigError(f"{key}.config.chainId", chain_id, "a positive integer")
    if not genesis_is_quorum(value):
        # Refused here, not at the machines' boot rendering halfway through `pulumi up`.
        is_quorum = config.get("isQuorum") if isinstance(config, dict) else None
        raise ConfigError(f"{key}.config.isQuorum", is_quorum, IS_QUORUM_ALLOWED)
    network_id = raw.int_("networkId", chain_id)
    if network_id <= 0:
        raise ConfigError(raw.key("networkId"), network_id, "a positive integer")
    return value, network_id


def _enode(key: str, value: str) -> str:
    if not is_enode_url(value):
        raise ConfigError(key, value, ENODE_ALLOWED)
    return value


def _peer_url(key: str, value: str) -> str:
    if not is_shell_safe(value):
        # The URL lands in the machines' boot files, which refuse these characters.
        raise ConfigError(key, value, f"a URL without {SHELL_UNSAFE_TEXT}")
    host = http_url_host(value)
    if host is None or host == "0.0.0.0":
        raise ConfigError(key, value, "an http(s) URL with host and port, e.g. http://t2:9001")
    return value.rstrip("/")
