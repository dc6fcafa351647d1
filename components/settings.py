"""Stack config -> one frozen, validated `Settings` object, before any resource is declared.

This is the only module that reads `pulumi.Config`. Every refusal is a `ConfigError` whose one-line
message names the key, the value and what is allowed; `__main__.py` turns it into a
`pulumi.RunError` so the operator sees that line and no traceback.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pulumi
from nacl.public import PrivateKey
from pulumi.runtime import config as runtime_config

from domain.keys import account_address
from domain.naming import PROJECT as NAMESPACE
from domain.naming import ecr_repository_arn, stack_name_prefix
from domain.ports import LISTENERS, TESSERA_P2P_PORT
from domain.setups import SETUPS, Setup
from domain.stacks import is_non_production
from domain.versions import DEFAULT_QUORUM_VERSION, DEFAULT_TESSERA_VERSION

DEFAULT_INSTANCE_TYPE = "m6i.large"
DEFAULT_DB_INSTANCE_CLASS = "db.m6i.large"
DEFAULT_DB_ENGINE_VERSION = "16"
DEFAULT_VPC_CIDR = "10.0.0.0/16"
# Fargate task sizes AWS accepts, cpu units -> allowed memory (MiB).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
MAX_NODES = 16  # one /20 subnet per AZ and one private zone hold far more; this bounds mistakes

# Graviton (arm64) families: a1, and any family whose generation digit is followed by "g"
# (m7g, t4g, c6gn, x2gd, im4gn, is4gen, g5g...). Tessera publishes no arm64 image since 23.4.
_GRAVITON = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)$")
_INSTANCE_TYPE = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_DB_CLASS = re.compile(r"^db\.([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_ENODE = re.compile(r"^enode://[0-9a-f]{128}@[A-Za-z0-9.-]+:\d{1,5}(\?discport=\d{1,5})?$")
# Regions of the `aws` partition only: service endpoints and kms:ViaService names are built
# with amazonaws.com, which China (amazonaws.com.cn) and the ISO partitions do not use.
_REGION = re.compile(r"^(?!cn-)[a-z]{2}(-gov)?-[a-z]+-\d$")
_REGION_ALLOWED = "an AWS region of the aws partition, e.g. us-east-1 (not cn-* or iso regions)"
# An SNS standard topic (CloudWatch alarm actions and RDS event subscriptions take no FIFO
# topic: SNS developer guide, "FIFO topic ... subscription protocols").
_SNS_TOPIC_ARN = re.compile(
    r"^arn:aws(-us-gov)?:sns:(?P<region>[a-z0-9-]+):\d{12}:(?P<name>[A-Za-z0-9_-]{1,256})$"
)
_EMAIL = re.compile(r"^[^@\s\"'$`\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
_QUORUM_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_TESSERA_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_DB_ENGINE_VERSION = re.compile(r"^(?P<major>\d+)(\.(?P<minor>\d+))?$")
# The replica keeps automated backups (so a promoted one has them), which RDS for PostgreSQL
# allows on read replicas from 14.1 only (RDS user guide, "Read replica limitations with
# PostgreSQL").
MIN_DB_ENGINE_VERSION = (14, 1)
MAX_DB_ENGINE_MAJOR = 17
_AWS_ID = {
    "vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
}
_SHELL_UNSAFE = re.compile(r"[\"'$`\\\s]")
# Tags reach every resource through the provider's default_tags: they follow the strictest
# service's rule, RDS's (API Tag: `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`, no aws:/rds: prefix on keys or
# values; the ECS, ECR, EC2... rules are looser). 50 tags per resource everywhere (RDS, ECS,
# EC2 tagging guides); the program adds 3 default tags and up to 2 of a resource's own (Name,
# quorum-ha/tier).
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_RESERVED_TAG_PREFIXES = ("aws:", "rds:")
_TAG_TEXT = (
    "characters: Unicode letters, digits, spaces and _ . : / = + - @, not starting with aws: "
    "or rds:"
)
TAGS_PER_RESOURCE = 50
MAX_USER_TAGS = TAGS_PER_RESOURCE - 5


class ConfigError(ValueError):
    """One invalid setting: the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str, *, secret: bool = False) -> None:
        shown = "[secret]" if secret else _show(value)
        super().__init__(f"{key}: {shown} is not valid; allowed: {allowed}")
        self.key = key


def _show(value: Any) -> str:
    shown = json.dumps(value) if not isinstance(value, str) else repr(value)
    return shown if len(shown) <= 120 else shown[:117] + "..."


@dataclass(frozen=True, kw_only=True)
class NewNetwork:
    """Build a VPC with private and public subnets in `az_count` availability zones."""

    cidr: str = DEFAULT_VPC_CIDR
    az_count: int = 2


@dataclass(frozen=True, kw_only=True)
class ExistingNetwork:
    """Use a VPC and subnets that already exist (their routing/egress is the owner's job)."""

    vpc_id: str
    private_subnet_ids: tuple[str, ...]
    public_subnet_ids: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StackReferenceNetwork:
    """Read the VPC and subnet ids from another stack's outputs."""

    stack: str
    vpc_id_output: str = "vpcId"
    private_subnet_ids_output: str = "privateSubnetIds"
    public_subnet_ids_output: str = "publicSubnetIds"


NetworkSettings = NewNetwork | ExistingNetwork | StackReferenceNetwork


@dataclass(frozen=True, kw_only=True)
class AlarmSettings:
    """Where alarms notify and when they fire (`quorum-ha:alarms`); defaults suit dev and prod.

    Rates are counts per ALARM_RATE_MINUTES window, summed over the proxy's tasks.
    """

    # An existing SNS topic, or addresses subscribed to one the stack creates (neither: the
    # stack creates a topic without subscriptions, for the operator to subscribe to).
    topic_arn: str | None = None
    emails: tuple[str, ...] = ()
    upstream_failures: int = 10  # failed attempts on one upstream server
    retries: int = 20  # requests sent again to another server, per listener
    mirror_failures: int = 10  # /partyinfo copies that did not reach a Tessera
    server_errors: int = 5  # 502/503/504 answered to clients, per listener
    chain_stall_minutes: int = 3  # chain head not moving for this long
    block_lag: int = 10  # one HA Quorum this many blocks behind another
    min_peers: int | None = None  # None: what the network config implies
    party_divergence_minutes: int = 10  # Tessera party counts differing for this long
    db_cpu_percent: int = 80
    db_free_storage_gib: int | None = None  # None: a tenth of dbAllocatedStorage
    db_connections: int = 400
    replica_lag_seconds: int = 300


ALARM_RATE_MINUTES = 5
_ALARM_INTS: dict[str, tuple[str, int, int]] = {
    # config key -> (field, minimum, maximum)
    "upstreamFailures": ("upstream_failures", 1, 1_000_000),
    "retries": ("retries", 1, 1_000_000),
    "mirrorFailures": ("mirror_failures", 1, 1_000_000),
    "serverErrors": ("server_errors", 1, 1_000_000),
    "chainStallMinutes": ("chain_stall_minutes", 1, 60),
    "blockLag": ("block_lag", 1, 1_000_000),
    "minPeers": ("min_peers", 0, 1000),
    "partyDivergenceMinutes": ("party_divergence_minutes", 1, 1440),
    "dbCpuPercent": ("db_cpu_percent", 1, 100),
    "dbFreeStorageGib": ("db_free_storage_gib", 1, 65536),
    "dbConnections": ("db_connections", 1, 100_000),
    "replicaLagSeconds": ("replica_lag_seconds", 1, 86_400),
}


@dataclass(frozen=True, kw_only=True)
class ExistingKeys:
    """Keys of an existing node being made HA (from secret config); never printed."""

    tessera_private_key: str | None = field(default=None, repr=False)
    tessera_public_key: str | None = None
    quorum_account_keystore: str | None = field(default=None, repr=False)
    quorum_account_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the program builds from, validated."""

    stack: str
    project: str
    region: str
    setup: Setup
    quorum_nodes: int
    tessera_nodes: int
    network: NetworkSettings
    allowed_cidrs: tuple[str, ...]
    allow_internet_ingress: bool
    internal_nlb: bool
    quorum_p2p_cidrs: tuple[str, ...]
    quorum_instance_type: str
    tessera_instance_type: str
    quorum_version: str
    tessera_version: str
    genesis: Mapping[str, Any]
    network_id: int
    quorum_peers: tuple[str, ...]
    tessera_peers: tuple[str, ...]
    db_instance_class: str
    db_allocated_storage: int
    db_engine_version: str
    db_backup_retention_days: int
    replica_region: str | None
    replica_vpc_cidr: str
    replica_multi_az: bool
    deletion_protection: bool
    proxy_task_count: int
    proxy_cpu: int
    proxy_memory: int
    proxy_image_uri: str | None
    tags: Mapping[str, str]
    existing_keys: ExistingKeys
    tls: TlsSettings | None = None  # TLS on the edge: see the TLS section below
    alarms: AlarmSettings = field(default_factory=AlarmSettings)

    @property
    def name_prefix(self) -> str:
        """Prefix for AWS names unique per account and region (`stack_name_prefix`)."""
        return stack_name_prefix(self.stack)

    @property
    def non_production(self) -> bool:
        """A throwaway stack (dev, dev-*, e2e-*): its names must be reusable at once."""
        return is_non_production(self.stack)

    @property
    def secret_recovery_days(self) -> int:
        """0 deletes secrets without recovery (Secrets Manager DeleteSecret
        ForceDeleteWithoutRecovery), so a re-created throwaway stack can reuse their names;
        production keeps Secrets Manager's default 30-day window."""
        return 0 if self.non_production else 30


# Every key this program reads, with its parser. Unknown `quorum-ha:` keys are refused so a typo
# never silently falls back to a default.
KEYS = (
    "setup",
    "quorumNodes",
    "tesseraNodes",
    "network",
    "allowedCidrs",
    "allowInternetIngress",
    "internalNlb",
    "quorumP2pCidrs",
    "quorumInstanceType",
    "tesseraInstanceType",
    "quorumVersion",
    "tesseraVersion",
    "genesis",
    "networkId",
    "quorumPeers",
    "tesseraPeers",
    "useWhiteList",
    "dbInstanceClass",
    "dbAllocatedStorage",
    "dbEngineVersion",
    "dbBackupRetentionDays",
    "replicaRegion",
    "replicaVpcCidr",
    "replicaMultiAz",
    "deletionProtection",
    "proxyTaskCount",
    "proxyCpu",
    "proxyMemory",
    "proxyImageUri",
    "tls",
    "tags",
    "alarms",
    "tesseraPrivateKey",
    "tesseraPublicKey",
    "quorumAccountKeystore",
    "quorumAccountPassword",
)
SECRET_KEYS = frozenset({"tesseraPrivateKey", "quorumAccountKeystore", "quorumAccountPassword"})

T = TypeVar("T")


class _Raw:
    """The raw config strings, with typed getters that raise `ConfigError`."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def key(self, name: str) -> str:
        return f"{NAMESPACE}:{name}"

    def str_(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        return default if value is None else value

    def parsed(self, name: str) -> Any:
        """Structured values arrive as JSON text; plain strings stay strings."""
        value = self.values.get(name)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    def int_(self, name: str, default: int) -> int:
        value = self.parsed(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), self.values[name], "an integer")
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self.parsed(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), self.values[name], "true or false")
        return value

    def list_(self, name: str, item: Callable[[str, str], T]) -> tuple[T, ...]:
        value = self.parsed(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), value, "a list of strings")
        return tuple(item(f"{self.key(name)}[{i}]", v) for i, v in enumerate(value))


def _cidr(key: str, value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError(
            key, value, "a CIDR block with no host bits set, e.g. 10.0.0.0/16"
        ) from None
    return str(network)


def _enode(key: str, value: str) -> str:
    if not _ENODE.match(value):
        raise ConfigError(
            key, value, "an enode URL: enode://<128 hex chars>@<host>:<port>[?discport=<port>]"
        )
    return value


def _peer_url(key: str, value: str) -> str:
    if _SHELL_UNSAFE.search(value):
        # The URL lands in the machines' boot files, which refuse these characters.
        raise ConfigError(key, value, "a URL without quotes, $, `, \\ or whitespace")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, value, "an http(s) URL with host and port, e.g. http://t2:9001")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or parts.hostname == "0.0.0.0":
        raise ConfigError(key, value, "an http(s) URL with host and port, e.g. http://t2:9001")
    return value.rstrip("/")


def _instance_type(key: str, value: str | None) -> str:
    assert value is not None
    match = _INSTANCE_TYPE.match(value)
    if not match:
        raise ConfigError(key, value, "an EC2 instance type such as m6i.large")
    family = match.group(1)
    if _GRAVITON.match(family):
        raise ConfigError(
            key,
            value,
            "an x86_64 instance type (e.g. m6i, m7i, c6i, r6i families): "
            "Tessera publishes no arm64 image since 23.4, so Graviton types cannot run it",
        )
    if family.startswith("mac"):
        raise ConfigError(key, value, "an x86_64 instance type that needs no dedicated host")
    return value


def _counts(raw: _Raw, setup: Setup) -> tuple[int, int]:
    if setup == "pair":
        quorum = raw.int_("quorumNodes", 2)
        if quorum < 2:
            raise ConfigError(raw.key("quorumNodes"), quorum, "pair setup: 2 or more pairs")
        tessera = raw.int_("tesseraNodes", quorum)
        if tessera != quorum:
            raise ConfigError(
                raw.key("tesseraNodes"),
                tessera,
                f"pair setup: equal to quorumNodes ({quorum}); each machine runs one of each",
            )
    elif setup == "full":
        quorum = raw.int_("quorumNodes", 2)
        if quorum < 2:
            raise ConfigError(raw.key("quorumNodes"), quorum, "full setup: 2 or more")
        tessera = raw.int_("tesseraNodes", 2)
        if tessera < 2:
            raise ConfigError(raw.key("tesseraNodes"), tessera, "full setup: 2 or more")
    else:
        quorum = raw.int_("quorumNodes", 1)
        if quorum != 1:
            raise ConfigError(
                raw.key("quorumNodes"), quorum, "tessera setup: exactly 1 (use full for more)"
            )
        tessera = raw.int_("tesseraNodes", 2)
        if tessera < 2:
            raise ConfigError(raw.key("tesseraNodes"), tessera, "tessera setup: 2 or more")
    for name, count in (("quorumNodes", quorum), ("tesseraNodes", tessera)):
        if count > MAX_NODES:
            raise ConfigError(raw.key(name), count, f"at most {MAX_NODES}")
    return quorum, tessera


def _network(raw: _Raw) -> NetworkSettings:
    key = raw.key("network")
    value = raw.parsed("network")
    if value is None:
        return NewNetwork()
    allowed_modes = "mode one of 'new', 'existing', 'stackReference'"
    if not isinstance(value, dict):
        raise ConfigError(key, value, f"an object with {allowed_modes}")
    mode = value.get("mode", "new")
    known = {
        "new": {"mode", "cidr", "azCount"},
        "existing": {"mode", "vpcId", "privateSubnetIds", "publicSubnetIds"},
        "stackReference": {
            "mode",
            "stack",
            "vpcIdOutput",
            "privateSubnetIdsOutput",
            "publicSubnetIdsOutput",
        },
    }
    if mode not in known:
        raise ConfigError(f"{key}.mode", mode, "'new', 'existing' or 'stackReference'")
    unknown = sorted(set(value) - known[mode])
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], f"keys {sorted(known[mode])}")
    if mode == "new":
        cidr = _cidr(f"{key}.cidr", str(value.get("cidr", DEFAULT_VPC_CIDR)))
        prefix = ipaddress.ip_network(cidr).prefixlen
        if ipaddress.ip_network(cidr).version != 4 or not 16 <= prefix <= 20:
            raise ConfigError(f"{key}.cidr", cidr, "an IPv4 CIDR from /16 to /20")
        az_count = value.get("azCount", 2)
        if isinstance(az_count, bool) or not isinstance(az_count, int) or not 2 <= az_count <= 3:
            raise ConfigError(f"{key}.azCount", az_count, "2 or 3 (high availability needs 2+)")
        return NewNetwork(cidr=cidr, az_count=az_count)
    if mode == "existing":
        vpc_id = value.get("vpcId")
        if not isinstance(vpc_id, str) or not _AWS_ID["vpc"].match(vpc_id):
            raise ConfigError(f"{key}.vpcId", vpc_id, "a VPC id such as vpc-0123456789abcdef0")
        private = _subnet_ids(f"{key}.privateSubnetIds", value.get("privateSubnetIds"), 2)
        public = _subnet_ids(f"{key}.publicSubnetIds", value.get("publicSubnetIds", []), 0)
        return ExistingNetwork(vpc_id=vpc_id, private_subnet_ids=private, public_subnet_ids=public)
    stack = value.get("stack")
    if not isinstance(stack, str) or not _STACK_NAME.match(stack):
        raise ConfigError(f"{key}.stack", stack, "a stack name such as org/network/prod")
    names = {}
    for field_name in ("vpcIdOutput", "privateSubnetIdsOutput", "publicSubnetIdsOutput"):
        output = value.get(field_name)
        if output is not None and (not isinstance(output, str) or not output):
            raise ConfigError(f"{key}.{field_name}", output, "the name of a stack output")
        if output is not None:
            names[field_name] = output
    return StackReferenceNetwork(
        stack=stack,
        vpc_id_output=names.get("vpcIdOutput", "vpcId"),
        private_subnet_ids_output=names.get("privateSubnetIdsOutput", "privateSubnetIds"),
        public_subnet_ids_output=names.get("publicSubnetIdsOutput", "publicSubnetIds"),
    )


def _subnet_ids(key: str, value: Any, minimum: int) -> tuple[str, ...]:
    allowed = f"a list of {minimum}+ distinct subnet ids (subnet-...) in different AZs"
    if not isinstance(value, list) or len(value) < minimum or len(set(value)) != len(value):
        raise ConfigError(key, value, allowed)
    for item in value:
        if not isinstance(item, str) or not _AWS_ID["subnet"].match(item):
            raise ConfigError(key, value, allowed)
    return tuple(value)


def _genesis(raw: _Raw) -> tuple[Mapping[str, Any], int]:
    key = raw.key("genesis")
    value = raw.parsed("genesis")
    allowed = "the Quorum network's genesis.json as an object with config.chainId (integer)"
    if not isinstance(value, dict):
        raise ConfigError(key, value, allowed)
    config = value.get("config")
    chain_id = config.get("chainId") if isinstance(config, dict) else None
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise ConfigError(f"{key}.config.chainId", chain_id, "a positive integer")
    is_quorum = config.get("isQuorum") if isinstance(config, dict) else None
    if is_quorum is not True:
        # Refused here, not at the machines' boot rendering halfway through `pulumi up`.
        raise ConfigError(
            f"{key}.config.isQuorum",
            is_quorum,
            "true: without it GoQuorum runs as plain geth, with no private transactions",
        )
    network_id = raw.int_("networkId", chain_id)
    if network_id <= 0:
        raise ConfigError(raw.key("networkId"), network_id, "a positive integer")
    return value, network_id


def _alarms(raw: _Raw, region: str) -> AlarmSettings:
    key = raw.key("alarms")
    value = raw.parsed("alarms")
    if value is None:
        return AlarmSettings()
    if not isinstance(value, dict):
        raise ConfigError(key, value, "an object with topicArn or emails, and thresholds")
    known = {"topicArn", "emails", *_ALARM_INTS}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], f"keys {sorted(known)}")
    topic_arn = value.get("topicArn")
    if topic_arn is not None:
        match = _SNS_TOPIC_ARN.match(topic_arn) if isinstance(topic_arn, str) else None
        if match is None:
            raise ConfigError(
                f"{key}.topicArn",
                topic_arn,
                "an SNS standard topic ARN, arn:aws:sns:<region>:<account>:<name> (no .fifo)",
            )
        if match["region"] != region:
            # PutMetricAlarm: an SNS action must be a topic of the alarm's own region.
            raise ConfigError(f"{key}.topicArn", topic_arn, f"a topic in {region}, the stack's")
    emails = value.get("emails", [])
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise ConfigError(f"{key}.emails", emails, "a list of email addresses")
    for i, email in enumerate(emails):
        if not _EMAIL.match(email) or len(email) > 254:
            raise ConfigError(f"{key}.emails[{i}]", email, "an email address such as ops@x.org")
    if topic_arn is not None and emails:
        raise ConfigError(
            f"{key}.emails",
            emails,
            "unset when topicArn is set (subscribe the addresses to that topic yourself)",
        )
    thresholds: dict[str, int] = {}
    for name, (field_name, low, high) in _ALARM_INTS.items():
        if name not in value:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            raise ConfigError(f"{key}.{name}", number, f"an integer {low} to {high}")
        thresholds[field_name] = number
    return AlarmSettings(topic_arn=topic_arn, emails=tuple(emails), **thresholds)


def _replica_backups_allowed(major: str, minor: str | None) -> bool:
    if not MIN_DB_ENGINE_VERSION[0] <= int(major) <= MAX_DB_ENGINE_MAJOR:
        return False
    # A bare major means its newest minor, past 14.1 for 14.
    return minor is None or (int(major), int(minor)) >= MIN_DB_ENGINE_VERSION


def _db(raw: _Raw) -> tuple[str, int, str, int]:
    db_class = raw.str_("dbInstanceClass", DEFAULT_DB_INSTANCE_CLASS)
    assert db_class is not None
    if not _DB_CLASS.match(db_class) or db_class.startswith("db.serverless"):
        raise ConfigError(
            raw.key("dbInstanceClass"), db_class, "an RDS instance class such as db.m6i.large"
        )
    if db_class.split(".")[1].startswith("t"):
        raise ConfigError(
            raw.key("dbInstanceClass"),
            db_class,
            "a non-burstable class (db.m*, db.r*): burstable classes throttle under load",
        )
    storage = raw.int_("dbAllocatedStorage", 100)
    if not 20 <= storage <= 65536:
        raise ConfigError(raw.key("dbAllocatedStorage"), storage, "20 to 65536 (GiB)")
    version = raw.str_("dbEngineVersion", DEFAULT_DB_ENGINE_VERSION)
    assert version is not None
    match = _DB_ENGINE_VERSION.match(version)
    if match is None or not _replica_backups_allowed(match["major"], match["minor"]):
        low = ".".join(map(str, MIN_DB_ENGINE_VERSION))
        raise ConfigError(
            raw.key("dbEngineVersion"),
            version,
            f"a PostgreSQL version {low} to {MAX_DB_ENGINE_MAJOR}, e.g. 16 or 16.4 (the read "
            f"replica keeps backups, which RDS allows on PostgreSQL replicas from {low})",
        )
    retention = raw.int_("dbBackupRetentionDays", 7)
    if not 7 <= retention <= 35:
        raise ConfigError(raw.key("dbBackupRetentionDays"), retention, "7 to 35 (days)")
    return db_class, storage, version, retention


def _tags(raw: _Raw) -> dict[str, str]:
    key = raw.key("tags")
    value = raw.parsed("tags")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "an object of string tag values")
    if len(value) > MAX_USER_TAGS:
        raise ConfigError(
            key,
            f"{len(value)} tags",
            f"at most {MAX_USER_TAGS} tags (AWS allows 50 per resource; the program adds "
            f"{TAGS_PER_RESOURCE - MAX_USER_TAGS} of its own)",
        )
    for tag, tag_value in value.items():
        if not 1 <= len(tag) <= 128 or not _tag_text(tag):
            raise ConfigError(f"{key}.{tag}", tag, f"a tag key of 1-128 {_TAG_TEXT}")
        if not isinstance(tag_value, str) or len(tag_value) > 256 or not _tag_text(tag_value):
            raise ConfigError(f"{key}.{tag}", tag_value, f"a tag value of 0-256 {_TAG_TEXT}")
    return dict(value)


def _tag_text(text: str) -> bool:
    """RDS's rule, the strictest of the tagged services (RDS API Tag; ECS and ECR allow the
    same characters): Unicode letters, digits and spaces, `_.:/=+-@`, no aws:/rds: prefix."""
    if text.lower().startswith(_RESERVED_TAG_PREFIXES):
        return False
    return all(unicodedata.category(c)[0] in "LZN" or c in _TAG_PUNCTUATION for c in text)


def _existing_keys(raw: _Raw) -> ExistingKeys:
    private = raw.str_("tesseraPrivateKey")
    public = raw.str_("tesseraPublicKey")
    if (private is None) != (public is None):
        missing = "tesseraPublicKey" if public is None else "tesseraPrivateKey"
        raise ConfigError(
            raw.key(missing), None, "set together with its pair (both Tessera keys, or neither)"
        )
    if private is not None and public is not None:
        private_raw = _b64_key(raw.key("tesseraPrivateKey"), private, secret=True)
        _b64_key(raw.key("tesseraPublicKey"), public, secret=False)
        derived = base64.b64encode(bytes(PrivateKey(private_raw).public_key)).decode()
        if derived != public:
            raise ConfigError(
                raw.key("tesseraPublicKey"),
                public,
                "the public key of tesseraPrivateKey (they do not match)",
            )
    keystore = raw.str_("quorumAccountKeystore")
    password = raw.str_("quorumAccountPassword")
    if (keystore is None) != (password is None):
        missing = "quorumAccountPassword" if password is None else "quorumAccountKeystore"
        raise ConfigError(
            raw.key(missing),
            None,
            "set together with its pair (keystore and password, or neither)",
        )
    if keystore is not None and password is not None:
        _check_keystore(raw.key("quorumAccountKeystore"), keystore, password)
    return ExistingKeys(
        tessera_private_key=private,
        tessera_public_key=public,
        quorum_account_keystore=keystore,
        quorum_account_password=password,
    )


def _b64_key(key: str, value: str, *, secret: bool) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ConfigError(key, value, "a base64 NaCl box key (32 bytes)", secret=secret)
    return decoded


def _check_keystore(key: str, keystore: str, password: str) -> None:
    # Imported here: eth_keyfile costs about a second to import (py_ecc), and only stacks that
    # supply a keystore need it.
    from eth_keyfile import decode_keyfile_json  # noqa: PLC0415 - see above

    try:
        parsed = json.loads(keystore)
        private = decode_keyfile_json(parsed, password.encode())
    except Exception:  # any failure means the pair cannot unlock the account
        raise ConfigError(
            key,
            keystore,
            "a v3 keystore JSON that quorumAccountPassword unlocks",
            secret=True,
        ) from None
    # geth unlocks the account by the file's "address", and the stack exports it.
    address = parsed.get("address")
    if not isinstance(address, str) or address.lower() != account_address(private)[2:].lower():
        raise ConfigError(
            key,
            keystore,
            "a v3 keystore whose address field (40 hex digits) is its key's account",
            secret=True,
        )


def _ingress(raw: _Raw) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """Who may reach the listeners and devp2p: never the whole internet unless asked."""
    allow_world = raw.bool_("allowInternetIngress", False)
    allowed_cidrs = raw.list_("allowedCidrs", _cidr)
    quorum_p2p_cidrs = raw.list_("quorumP2pCidrs", _cidr)
    for name, cidrs in (("allowedCidrs", allowed_cidrs), ("quorumP2pCidrs", quorum_p2p_cidrs)):
        for cidr in cidrs:
            if cidr in WORLD_CIDRS and not allow_world:
                raise ConfigError(
                    raw.key(name),
                    cidr,
                    "CIDRs narrower than the whole internet, unless allowInternetIngress is true",
                )

    return allow_world, allowed_cidrs, quorum_p2p_cidrs


def _replica(raw: _Raw, region: str, network: NetworkSettings) -> tuple[str | None, str]:
    replica_region = raw.str_("replicaRegion")
    if replica_region is not None and not _REGION.match(replica_region):
        raise ConfigError(raw.key("replicaRegion"), replica_region, _REGION_ALLOWED)
    if replica_region == region:
        replica_region = None
    if replica_region and not isinstance(network, NewNetwork):
        raise ConfigError(
            raw.key("replicaRegion"),
            replica_region,
            "unset unless network.mode is new: the program peers and routes the replica's VPC "
            "only in a VPC it builds",
        )
    replica_vpc_cidr = _cidr(
        raw.key("replicaVpcCidr"), raw.str_("replicaVpcCidr", "10.1.0.0/16") or ""
    )
    peered = ipaddress.ip_network(replica_vpc_cidr)
    if (
        replica_region
        and isinstance(network, NewNetwork)
        and peered.overlaps(ipaddress.ip_network(network.cidr))
    ):
        raise ConfigError(
            raw.key("replicaVpcCidr"),
            replica_vpc_cidr,
            f"a CIDR that does not overlap network.cidr ({network.cidr}): the VPCs are peered",
        )

    return replica_region, replica_vpc_cidr


def _proxy(raw: _Raw) -> tuple[int, int, int, str | None]:
    proxy_task_count = raw.int_("proxyTaskCount", 2)
    if not 2 <= proxy_task_count <= 10:
        raise ConfigError(raw.key("proxyTaskCount"), proxy_task_count, "2 to 10 (HA needs 2+)")
    proxy_cpu = raw.int_("proxyCpu", 512)
    if proxy_cpu not in FARGATE_SIZES:
        raise ConfigError(raw.key("proxyCpu"), proxy_cpu, f"one of {sorted(FARGATE_SIZES)}")
    proxy_memory = raw.int_("proxyMemory", FARGATE_SIZES[proxy_cpu][0])
    if proxy_memory not in FARGATE_SIZES[proxy_cpu]:
        sizes = FARGATE_SIZES[proxy_cpu]
        raise ConfigError(
            raw.key("proxyMemory"),
            proxy_memory,
            f"{sizes[0]} to {sizes[-1]} MiB in steps Fargate accepts for proxyCpu {proxy_cpu}",
        )
    proxy_image_uri = raw.str_("proxyImageUri")
    if proxy_image_uri is not None:
        try:
            ecr_repository_arn(proxy_image_uri)
        except ValueError:
            raise ConfigError(
                raw.key("proxyImageUri"),
                proxy_image_uri,
                "an ECR image URI with :tag or @sha256:<digest>, e.g. "
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/quorum-proxy:1.0 (the tasks and "
                "machines pull it with their roles)",
            ) from None
    return proxy_task_count, proxy_cpu, proxy_memory, proxy_image_uri


# ------------------------------------------------------------------ TLS on the edge (issue 12)
# The NLB terminates TLS on the listeners other organisations reach (P2P always, 9081 and 22000
# on request) with an ACM certificate; targets stay TCP, the proxy behind speaks plain HTTP.
TLS_P2P_PORT = TESSERA_P2P_PORT  # the edge other organisations reach: always TLS when on
TLS_PORTS = tuple(sorted(LISTENERS.values()))  # any NLB listener may be TLS
# AWS's recommended NLB policy: TLS 1.3 and 1.2 (restricted ciphers), hybrid post-quantum key
# exchange when the client offers it, classical otherwise (NLB guide, "Security policies for
# your Network Load Balancer"). Tessera's JVM client (Temurin 11+) speaks TLS 1.3 and 1.2.
DEFAULT_SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
# TLS 1.3 policies whose minimum is TLS 1.2 or 1.3 (the -1-0/-1-1 ones admit TLS 1.0/1.1).
_SSL_POLICY = re.compile(r"^ELBSecurityPolicy-TLS13-1-[23](-[A-Za-z0-9]+)*$")
# ACM certificate ARN: arn:<partition>:acm:<region>:<account>:certificate/<uuid>.
_ACM_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):acm:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"certificate/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
# A Route 53 hosted zone id as the console and GetHostedZone show it (without /hostedzone/).
_HOSTED_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_TLS_KEYS = frozenset({"certificateArn", "dnsName", "hostedZoneId", "listeners", "sslPolicy"})
_TLS_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
)


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """TLS listeners on the NLB, the certificate that covers `dns_name`, and where the name lives.

    With `hosted_zone_id` the stack writes an alias record `dns_name` -> NLB in that zone (public
    or private); without it the operator points `dns_name` at the `nlbDnsName` output (CNAME).
    """

    certificate_arn: str
    dns_name: str
    hosted_zone_id: str | None = None
    ports: tuple[int, ...] = (TLS_P2P_PORT,)
    ssl_policy: str = DEFAULT_SSL_POLICY


def _partition(region: str) -> str:
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def _tls(raw: _Raw, region: str) -> TlsSettings | None:
    key = raw.key("tls")
    value = raw.parsed("tls")
    if value is None:
        return None
    shape = "an object with certificateArn and dnsName (and optional hostedZoneId, listeners, "
    shape += "sslPolicy)"
    if not isinstance(value, dict):
        raise ConfigError(key, value, shape)
    unknown = sorted(set(value) - _TLS_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], f"one of {sorted(_TLS_KEYS)}")
    arn = value.get("certificateArn")
    match = _ACM_ARN.match(arn) if isinstance(arn, str) else None
    partition = _partition(region)
    if match is None or match["partition"] != partition or match["region"] != region:
        raise ConfigError(
            f"{key}.certificateArn",
            arn,
            f"an ACM certificate ARN in the stack's region, arn:{partition}:acm:{region}:"
            "<account>:certificate/<uuid> (an NLB takes certificates of its own region only)",
        )
    dns_name = value.get("dnsName")
    if not isinstance(dns_name, str) or not _TLS_DNS_NAME.match(dns_name.lower().rstrip(".")):
        raise ConfigError(
            f"{key}.dnsName",
            dns_name,
            "the DNS name the certificate covers, e.g. quorum.example.com (p2pUrl becomes "
            f"https://<dnsName>:{TLS_P2P_PORT})",
        )
    zone = value.get("hostedZoneId")
    if zone is not None and (not isinstance(zone, str) or not _HOSTED_ZONE_ID.match(zone)):
        raise ConfigError(
            f"{key}.hostedZoneId",
            zone,
            "a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ (Z, then capital letters "
            "and digits), or leave it out and point dnsName at the nlbDnsName output yourself",
        )
    ports = value.get("listeners", [TLS_P2P_PORT])
    allowed = f"a list of listener ports from {list(TLS_PORTS)} that includes {TLS_P2P_PORT}"
    if (
        not isinstance(ports, list)
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports)
        or not set(ports) <= set(TLS_PORTS)
        or TLS_P2P_PORT not in ports
        or len(set(ports)) != len(ports)
    ):
        raise ConfigError(f"{key}.listeners", ports, allowed)
    policy = value.get("sslPolicy", DEFAULT_SSL_POLICY)
    if not isinstance(policy, str) or not _SSL_POLICY.match(policy):
        raise ConfigError(
            f"{key}.sslPolicy",
            policy,
            "an ELB TLS 1.3 security policy with TLS 1.2 or 1.3 as minimum, "
            f"ELBSecurityPolicy-TLS13-1-2-* or ELBSecurityPolicy-TLS13-1-3-* (default "
            f"{DEFAULT_SSL_POLICY})",
        )
    return TlsSettings(
        certificate_arn=match.string,
        dns_name=dns_name.lower().rstrip("."),
        hosted_zone_id=zone,
        ports=tuple(sorted(ports)),
        ssl_policy=policy,
    )


# ------------------------------------------------------------------ end of the TLS section


def parse_settings(
    values: Mapping[str, str], *, stack: str, project: str = NAMESPACE, region: str | None
) -> Settings:
    """Validate raw config strings (keys without the namespace) into `Settings`."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"{NAMESPACE}:{unknown[0]}",
            "[secret]" if unknown[0] in SECRET_KEYS else values[unknown[0]],
            "a known key: see Pulumi.yaml template.config (is it a typo?)",
        )
    raw = _Raw(values)
    if not region or not _REGION.match(region):
        raise ConfigError("aws:region", region, _REGION_ALLOWED)
    setup = raw.str_("setup", "pair")
    if setup not in SETUPS:
        raise ConfigError(raw.key("setup"), setup, "'pair', 'full' or 'tessera'")
    quorum_nodes, tessera_nodes = _counts(raw, setup)

    network = _network(raw)
    internal_nlb = raw.bool_("internalNlb", True)
    if not internal_nlb and isinstance(network, ExistingNetwork) and not network.public_subnet_ids:
        raise ConfigError(
            raw.key("network.publicSubnetIds"),
            [],
            "2+ public subnet ids when internalNlb is false",
        )
    allow_world, allowed_cidrs, quorum_p2p_cidrs = _ingress(raw)

    quorum_version = raw.str_("quorumVersion", DEFAULT_QUORUM_VERSION)
    if not quorum_version or not _QUORUM_VERSION.match(quorum_version):
        raise ConfigError(raw.key("quorumVersion"), quorum_version, "a version like 24.4.1")
    tessera_version = raw.str_("tesseraVersion", DEFAULT_TESSERA_VERSION)
    if not tessera_version or not _TESSERA_VERSION.match(tessera_version):
        raise ConfigError(raw.key("tesseraVersion"), tessera_version, "a version like 24.4")
    genesis, network_id = _genesis(raw)
    db_class, storage, engine_version, retention = _db(raw)

    replica_region, replica_vpc_cidr = _replica(raw, region, network)

    proxy_task_count, proxy_cpu, proxy_memory, proxy_image_uri = _proxy(raw)
    if raw.bool_("useWhiteList", False):
        raise ConfigError(
            raw.key("useWhiteList"),
            True,
            "false: Tessera's whitelist compares exact caller IPs, and the proxy's Fargate "
            "tasks have no fixed addresses",
        )

    return Settings(
        stack=stack,
        project=project,
        region=region,
        setup=setup,
        quorum_nodes=quorum_nodes,
        tessera_nodes=tessera_nodes,
        network=network,
        allowed_cidrs=allowed_cidrs,
        allow_internet_ingress=allow_world,
        internal_nlb=internal_nlb,
        quorum_p2p_cidrs=quorum_p2p_cidrs,
        quorum_instance_type=_instance_type(
            raw.key("quorumInstanceType"), raw.str_("quorumInstanceType", DEFAULT_INSTANCE_TYPE)
        ),
        tessera_instance_type=_instance_type(
            raw.key("tesseraInstanceType"), raw.str_("tesseraInstanceType", DEFAULT_INSTANCE_TYPE)
        ),
        quorum_version=quorum_version,
        tessera_version=tessera_version,
        genesis=genesis,
        network_id=network_id,
        quorum_peers=raw.list_("quorumPeers", _enode),
        tessera_peers=raw.list_("tesseraPeers", _peer_url),
        db_instance_class=db_class,
        db_allocated_storage=storage,
        db_engine_version=engine_version,
        db_backup_retention_days=retention,
        replica_region=replica_region,
        replica_vpc_cidr=replica_vpc_cidr,
        replica_multi_az=raw.bool_("replicaMultiAz", not is_non_production(stack)),
        deletion_protection=raw.bool_("deletionProtection", not is_non_production(stack)),
        proxy_task_count=proxy_task_count,
        proxy_cpu=proxy_cpu,
        proxy_memory=proxy_memory,
        proxy_image_uri=proxy_image_uri,
        tags=_tags(raw),
        existing_keys=_existing_keys(raw),
        tls=_tls(raw, region),
        alarms=_alarms(raw, region),
    )


def load_settings() -> Settings:
    """Read the stack's `quorum-ha:` config once and validate it."""
    prefix = f"{NAMESPACE}:"
    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    names = {key[len(prefix) :] for key in present if key.startswith(prefix)}
    config = pulumi.Config(NAMESPACE)
    values = {name: value for name in names if (value := config.get(name)) is not None}
    return parse_settings(
        values,
        stack=pulumi.get_stack(),
        project=pulumi.get_project(),
        region=pulumi.Config("aws").get("region"),
    )
