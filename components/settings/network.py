"""`quorum-ha:network`: the VPC the machines live in (components/network.py `Network`)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from components.settings.raw import Raw, cidr_block
from domain.errors import ConfigError

KEYS = ("network",)
DEFAULT_VPC_CIDR = "10.0.0.0/16"
_AWS_ID = {
    "vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"),
    "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
}
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")


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


def parse(raw: Raw) -> NetworkSettings:
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
        cidr = cidr_block(f"{key}.cidr", str(value.get("cidr", DEFAULT_VPC_CIDR)))
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
