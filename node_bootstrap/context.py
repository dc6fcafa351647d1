"""What a machine's boot needs to know, resolved from the infrastructure (no Pulumi types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Setup = Literal["pair", "full", "tessera"]
MachineRole = Literal["pair", "quorum", "tessera"]

# Ports the whole project agrees on (seed and domain.md).
QUORUM_RPC_PORT = 22000  # the seed's client-facing JSON-RPC port, on the NLB and on each node
QUORUM_WS_PORT = 8546
QUORUM_P2P_PORT = 30303
TESSERA_P2P_PORT = 9001
TESSERA_THIRD_PARTY_PORT = 9081
TESSERA_Q2T_PORT = 9101  # Q2T over HTTP, for the IPC proxy on Quorum machines (setups 2 and 3)
PROXY_ADMIN_PORT = 9900  # /healthz, /readyz, /metrics of our proxy
TM_IPC_PATH = "/run/quorum-ha/tm.ipc"


@dataclass(frozen=True, kw_only=True)
class NodeBootContext:
    """Everything one machine's boot renders from: names, addresses and secret ARNs, never secrets."""

    setup: Setup
    role: MachineRole
    index: int
    region: str
    node_dns_name: str
    quorum_dns_names: tuple[str, ...]
    tessera_dns_names: tuple[str, ...]
    # Public URLs Tessera advertises (serverAddress): the NLB, e.g. http://nlb.example:9001
    p2p_url: str
    third_party_url: str
    # Tessera keys in Secrets Manager: secrets named f"{tessera_key_id}Pub" and f"{tessera_key_id}Key"
    tessera_key_id: str
    quorum_account_secret_arn: str  # JSON {"keystore": {...}, "password": "..."}
    quorum_node_key_secret_arn: str  # this node's devp2p key (hex), one secret per Quorum node
    db_secret_arn: str  # JSON {"username": "...", "password": "..."}
    jdbc_url: str  # jdbc:postgresql://primary:5432,replica:5432/tessera?targetServerType=primary
    quorum_version: str
    tessera_version: str
    proxy_image_uri: str | None  # our proxy from ECR; needed on Quorum machines of setups 2 and 3
    genesis_json: str
    ha_enodes: tuple[str, ...]  # enode URLs of this client node's own Quorum nodes
    peer_enodes: tuple[str, ...]  # the Quorum network's other nodes
    tessera_peer_urls: tuple[str, ...]  # the network's other Tessera P2P URLs
    network_id: int
    use_white_list: bool
    proxy_addresses: tuple[str, ...]  # CIDRs or hosts the proxy connects from (for useWhiteList)
    log_group_name: str
