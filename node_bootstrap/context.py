"""What a machine's boot needs to know, resolved from the infrastructure (no Pulumi types)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from domain import setups
from domain.errors import ConfigError
from domain.paths import DATA_DEVICE_NAME
from domain.setups import ROLES_BY_SETUP, MachineRole, Setup
from domain.validation import (
    ENODE_ALLOWED,
    IS_QUORUM_ALLOWED,
    REGION_ALLOWED,
    genesis_is_quorum,
    http_url_host,
    is_dns_name,
    is_enode_url,
    is_shell_safe,
    is_supported_region,
)


class BootContextError(ConfigError):
    """A NodeBootContext field is unusable; names the field, the value and what is allowed."""

    json_values = False

    def __init__(self, field: str, value: object, allowed: str) -> None:
        super().__init__(f"NodeBootContext.{field}", value, allowed)
        self.field = field


@dataclass(frozen=True, kw_only=True)
class NodeBootContext:
    """Everything one machine's boot renders from: names, addresses, secret ARNs; no secrets."""

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
    # Tessera keys in Secrets Manager: secrets f"{tessera_key_id}Pub" and f"{tessera_key_id}Key"
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
    log_group_name: str
    # The project's own choices, which the infrastructure does not vary:
    permissioned: bool = True  # render permissioned-nodes.json and start geth --permissioned
    data_device_name: str = DATA_DEVICE_NAME  # the device name the data volume is attached as
    # vol-..., lets the boot find the NVMe by-id link first; Nodes fills it in once the volume
    # exists (components/nodes.py).
    data_volume_id: str | None = None

    @property
    def runs_tessera(self) -> bool:
        return setups.runs_tessera(self.role)

    @property
    def runs_quorum(self) -> bool:
        return setups.runs_quorum(self.role)

    @property
    def runs_ipc_proxy(self) -> bool:
        return setups.runs_ipc_proxy(self.role)


_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+$")
_SECRET_NAME = re.compile(r"^[\w/+=.@-]{1,480}$")
_IMAGE = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[\w.-]+|@sha256:[0-9a-f]{64})$")
_LOG_GROUP = re.compile(r"^[\w/.#-]{1,512}$")
_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
_DEVICE = re.compile(r"^/dev/(sd|xvd)[b-z]$")
# And shell-safe as a whole: it lands in boot.env.
_JDBC = re.compile(r"^jdbc:postgresql://([A-Za-z0-9.:,\[\]-]+)/([\w.-]+)(\?.*)?$")


def jdbc_to_libpq_uri(jdbc_url: str) -> str:
    """The psql connection URI for the same hosts, trying them in order for the writable one."""
    m = _JDBC.match(jdbc_url)
    if not m or not is_shell_safe(jdbc_url):
        raise BootContextError(
            "jdbc_url", jdbc_url, "jdbc:postgresql://host:port[,host:port]/database[?params]"
        )
    hosts, database = m.group(1), m.group(2)
    # libpq's read-write is the PostgreSQL JDBC driver's targetServerType=primary; RDS forces TLS.
    return f"postgresql://{hosts}/{database}?target_session_attrs=read-write&sslmode=require"


def _check_names(field: str, values: tuple[str, ...]) -> None:
    if not values:
        raise BootContextError(field, values, "at least one DNS name")
    for v in values:
        if not isinstance(v, str) or not is_dns_name(v):
            raise BootContextError(field, values, "DNS names (letters, digits, '-', '.')")
    if len(set(values)) != len(values):
        raise BootContextError(field, values, "each name once")


def _check_identity(ctx: NodeBootContext) -> None:
    if ctx.setup not in ROLES_BY_SETUP:
        raise BootContextError("setup", ctx.setup, "pair | full | tessera")
    if ctx.role not in ROLES_BY_SETUP[ctx.setup]:
        allowed = " | ".join(ROLES_BY_SETUP[ctx.setup])
        raise BootContextError("role", ctx.role, f"{allowed} in setup {ctx.setup!r}")
    if not is_supported_region(ctx.region):
        raise BootContextError("region", ctx.region, REGION_ALLOWED)
    if not is_dns_name(ctx.node_dns_name):
        raise BootContextError("node_dns_name", ctx.node_dns_name, "a DNS name")
    _check_names("quorum_dns_names", ctx.quorum_dns_names)
    _check_names("tessera_dns_names", ctx.tessera_dns_names)
    own = ctx.tessera_dns_names if ctx.role == "tessera" else ctx.quorum_dns_names
    if isinstance(ctx.index, bool) or not isinstance(ctx.index, int):
        raise BootContextError("index", ctx.index, "an integer")
    if not 0 <= ctx.index < len(own):
        raise BootContextError("index", ctx.index, f"0..{len(own) - 1} for role {ctx.role!r}")


def _check_addresses_and_secrets(ctx: NodeBootContext) -> None:
    for field in ("p2p_url", "third_party_url"):
        value = getattr(ctx, field)
        host = http_url_host(value)
        if host is None or host == "0.0.0.0":
            raise BootContextError(field, value, "http(s)://host:port, host not 0.0.0.0")
    if not _SECRET_NAME.match(ctx.tessera_key_id):
        raise BootContextError("tessera_key_id", ctx.tessera_key_id, "a Secrets Manager name")
    for field in ("quorum_account_secret_arn", "quorum_node_key_secret_arn", "db_secret_arn"):
        value = getattr(ctx, field)
        if not isinstance(value, str) or not _SECRET_ARN.match(value):
            raise BootContextError(field, value, "a Secrets Manager secret ARN")
    jdbc_to_libpq_uri(ctx.jdbc_url)
    for field in ("quorum_version", "tessera_version"):
        value = getattr(ctx, field)
        if not isinstance(value, str) or not _VERSION.match(value):
            raise BootContextError(field, value, "a release number such as 24.4.1")
    if ctx.runs_ipc_proxy and (
        ctx.proxy_image_uri is None or not _IMAGE.match(ctx.proxy_image_uri)
    ):
        raise BootContextError(
            "proxy_image_uri",
            ctx.proxy_image_uri,
            "an ECR image URI with a tag or digest (Quorum machines of setups full and tessera)",
        )


def _check_quorum_network(ctx: NodeBootContext) -> None:
    try:
        genesis = json.loads(ctx.genesis_json)
    except (TypeError, ValueError):
        raise BootContextError("genesis_json", ctx.genesis_json, "a JSON document") from None
    if not isinstance(genesis, dict) or not isinstance(genesis.get("config"), dict):
        raise BootContextError("genesis_json", ctx.genesis_json, 'a JSON object with "config"')
    if not genesis_is_quorum(genesis):
        raise BootContextError(
            "genesis_json",
            ctx.genesis_json,
            f'a GoQuorum genesis, "config.isQuorum": {IS_QUORUM_ALLOWED}',
        )
    for field in ("ha_enodes", "peer_enodes"):
        for enode in getattr(ctx, field):
            if not is_enode_url(enode):
                raise BootContextError(field, enode, ENODE_ALLOWED)
    if ctx.runs_quorum and not ctx.ha_enodes:
        raise BootContextError("ha_enodes", ctx.ha_enodes, "this client node's enode URLs")
    for url in ctx.tessera_peer_urls:
        if http_url_host(url) is None:
            raise BootContextError("tessera_peer_urls", url, "http(s)://host:port URLs")
    if isinstance(ctx.network_id, bool) or not isinstance(ctx.network_id, int):
        raise BootContextError("network_id", ctx.network_id, "a positive integer")
    if ctx.network_id <= 0:
        raise BootContextError("network_id", ctx.network_id, "a positive integer")


def _check_machine(ctx: NodeBootContext) -> None:
    if not _LOG_GROUP.match(ctx.log_group_name):
        raise BootContextError("log_group_name", ctx.log_group_name, "a CloudWatch log group")
    if not _DEVICE.match(ctx.data_device_name):
        raise BootContextError("data_device_name", ctx.data_device_name, "/dev/sd[b-z]")
    if ctx.data_volume_id is not None and not _VOLUME_ID.match(ctx.data_volume_id):
        raise BootContextError("data_volume_id", ctx.data_volume_id, "vol-<hex> or None")


def validate_context(ctx: NodeBootContext) -> None:
    """Refuse a context the boot could not use, with one message naming the field."""
    _check_identity(ctx)
    _check_addresses_and_secrets(ctx)
    _check_quorum_network(ctx)
    _check_machine(ctx)
