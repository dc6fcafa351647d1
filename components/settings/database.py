"""The Tessera database and its read replica (components/tessera_database.py)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from components.settings.network import NetworkSettings, NewNetwork
from components.settings.raw import Raw, cidr_block
from domain.errors import ConfigError
from domain.validation import REGION_ALLOWED, is_supported_region

KEYS = (
    "dbInstanceClass",
    "dbAllocatedStorage",
    "dbEngineVersion",
    "dbBackupRetentionDays",
    "replicaRegion",
    "replicaVpcCidr",
    "replicaMultiAz",
)
DEFAULT_DB_INSTANCE_CLASS = "db.m6i.large"
DEFAULT_DB_ENGINE_VERSION = "16"
DEFAULT_REPLICA_VPC_CIDR = "10.1.0.0/16"
_DB_CLASS = re.compile(r"^db\.([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_DB_ENGINE_VERSION = re.compile(r"^(?P<major>\d+)(\.(?P<minor>\d+))?$")
# The replica keeps automated backups (so a promoted one has them), which RDS for PostgreSQL
# allows on read replicas from 14.1 only (RDS user guide, "Read replica limitations with
# PostgreSQL").
MIN_DB_ENGINE_VERSION = (14, 1)
MAX_DB_ENGINE_MAJOR = 17


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The primary's class, storage, engine and backups; where its read replica lives."""

    instance_class: str = DEFAULT_DB_INSTANCE_CLASS
    allocated_storage: int = 100  # GiB
    engine_version: str = DEFAULT_DB_ENGINE_VERSION
    backup_retention_days: int = 7
    replica_region: str | None = None  # None: the replica is in the stack's region
    replica_vpc_cidr: str = DEFAULT_REPLICA_VPC_CIDR
    replica_multi_az: bool


def parse(
    raw: Raw, *, region: str, network: NetworkSettings, production: bool
) -> DatabaseSettings:
    instance_class, storage, engine_version, retention = _db(raw)
    replica_region, replica_vpc_cidr = _replica(raw, region, network)
    return DatabaseSettings(
        instance_class=instance_class,
        allocated_storage=storage,
        engine_version=engine_version,
        backup_retention_days=retention,
        replica_region=replica_region,
        replica_vpc_cidr=replica_vpc_cidr,
        replica_multi_az=raw.bool_("replicaMultiAz", production),
    )


def _replica_backups_allowed(major: str, minor: str | None) -> bool:
    if not MIN_DB_ENGINE_VERSION[0] <= int(major) <= MAX_DB_ENGINE_MAJOR:
        return False
    # A bare major means its newest minor, past 14.1 for 14.
    return minor is None or (int(major), int(minor)) >= MIN_DB_ENGINE_VERSION


def _db(raw: Raw) -> tuple[str, int, str, int]:
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


def _replica(raw: Raw, region: str, network: NetworkSettings) -> tuple[str | None, str]:
    replica_region = raw.str_("replicaRegion")
    if replica_region is not None and not is_supported_region(replica_region):
        raise ConfigError(raw.key("replicaRegion"), replica_region, REGION_ALLOWED)
    if replica_region == region:
        replica_region = None
    if replica_region and not isinstance(network, NewNetwork):
        raise ConfigError(
            raw.key("replicaRegion"),
            replica_region,
            "unset unless network.mode is new: the program peers and routes the replica's VPC "
            "only in a VPC it builds",
        )
    replica_vpc_cidr = cidr_block(
        raw.key("replicaVpcCidr"), raw.str_("replicaVpcCidr", DEFAULT_REPLICA_VPC_CIDR) or ""
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
