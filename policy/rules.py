"""The guardrail rules of the quorum-ha policy pack, importable without starting the pack.

Each rule is a plain function `(args, report_violation) -> None` over the resource's inputs as the
engine sees them (camelCase). During `pulumi preview` some inputs are still unknown; a rule that
only needs to know a value is *set* (a key id wired from a KMS key) treats unknown as set, and a
rule that must read the value lets the SDK's UnknownValueError through, which the engine reports
as "can't run during preview" (the rule then runs for real at `pulumi up`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from domain import stacks

# Resource types the rules read (the tests name them through this module too).
from domain.resource_types import (
    BUCKET,
    BUCKET_SSE,
    DB_CLUSTER,
    DB_INSTANCE,
    DEFAULT_SECURITY_GROUP,
    ECR_REPOSITORY,
    INGRESS_RULE,
    INSTANCE,
    KMS_KEY,
    LAUNCH_TEMPLATE,
    LISTENER,
    LOAD_BALANCER,
    LOG_GROUP,
    SECRET,
    SECURITY_GROUP,
    SECURITY_GROUP_RULE,
    VOLUME,
    VPC,
    VPC_CIDR_ASSOCIATION,
)
from domain.stacks import NON_PRODUCTION_STACKS
from domain.user_data import user_data_texts

PACK_NAME = "quorum-ha-guardrails"

MIN_BACKUP_DAYS = 7

Rule = Callable[[ResourceValidationArgs, ReportViolation], None]


class _Unknown:
    """A value the engine does not know yet (preview); it is set, to something computed."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


def _keys(props: Mapping[str, Any]) -> list[str]:
    # Iterating the SDK's proxy lists keys without reading values, so no UnknownValueError.
    return list(iter(props))


def lookup(props: Any, key: str, default: Any = None) -> Any:
    """props[key], `default` when absent or null, UNKNOWN when not known during preview."""
    if not isinstance(props, Mapping) or key not in _keys(props):
        return default
    try:
        value = props[key]
    except UnknownValueError:
        return UNKNOWN
    return default if value is None else value


def items_of(value: Any) -> list[Any]:
    """A list input as a list (absent or unknown: empty)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def _truthy(value: Any) -> bool:
    # Launch template EBS flags are strings ("true") in the provider's schema.
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _is_customer_key(key_id: Any) -> bool:
    if key_id is UNKNOWN:
        return True
    return isinstance(key_id, str) and bool(key_id.strip()) and "alias/aws/" not in key_id


# ---------------------------------------------------------------- encryption with a customer key


def _encryption_problems(resource_type: str, props: Mapping[str, Any]) -> Iterator[str]:
    if resource_type == BUCKET:
        sse = lookup(props, "serverSideEncryptionConfiguration")
        if sse is not None:
            rule = lookup(sse, "rule")
            yield from _sse_rule_problems([rule], "serverSideEncryptionConfiguration")
    elif resource_type == BUCKET_SSE:
        yield from _sse_rule_problems(items_of(lookup(props, "rules")), "rules")
    elif resource_type in (DB_INSTANCE, DB_CLUSTER):
        replica = lookup(props, "replicateSourceDb") is not None
        if not replica and not _truthy(lookup(props, "storageEncrypted")):
            yield "storageEncrypted is not true"
        key = lookup(props, "kmsKeyId")
        # A same-region replica inherits its source's key; one given a key must use ours.
        if (key is not None or not replica) and not _is_customer_key(key):
            yield f"kmsKeyId is {key!r}, not a customer-managed KMS key"
        # Performance Insights keeps query text (and so data) under a key of its own.
        if _truthy(lookup(props, "performanceInsightsEnabled")) and not _is_customer_key(
            lookup(props, "performanceInsightsKmsKeyId")
        ):
            yield "performanceInsightsKmsKeyId is not a customer-managed KMS key"
    elif resource_type in (SECRET, LOG_GROUP):
        key = lookup(props, "kmsKeyId")
        if not _is_customer_key(key):
            yield f"kmsKeyId is {key!r}: the AWS-managed key would be used"
    elif resource_type == VOLUME:
        yield from _ebs_problems(props, "")
    elif resource_type == INSTANCE:
        root = lookup(props, "rootBlockDevice")
        if root is None:
            yield "rootBlockDevice is not set, so the root volume is not encrypted with our key"
        else:
            yield from _ebs_problems(root, "rootBlockDevice.")
        for i, device in enumerate(items_of(lookup(props, "ebsBlockDevices"))):
            yield from _ebs_problems(device, f"ebsBlockDevices[{i}].")
    elif resource_type == LAUNCH_TEMPLATE:
        for i, mapping in enumerate(items_of(lookup(props, "blockDeviceMappings"))):
            ebs = lookup(mapping, "ebs")
            if ebs is not None:
                yield from _ebs_problems(ebs, f"blockDeviceMappings[{i}].ebs.")
    elif resource_type == ECR_REPOSITORY:
        configs = items_of(lookup(props, "encryptionConfigurations"))
        if not configs:
            yield "encryptionConfigurations is not set (AES256 with an AWS key)"
        for i, config in enumerate(configs):
            if lookup(config, "encryptionType") != "KMS":
                kind = lookup(config, "encryptionType")
                yield f"encryptionConfigurations[{i}].encryptionType is {kind!r}, not 'KMS'"
            elif not _is_customer_key(lookup(config, "kmsKey")):
                yield f"encryptionConfigurations[{i}].kmsKey is not a customer-managed KMS key"


def _ebs_problems(device: Any, path: str) -> Iterator[str]:
    if not _truthy(lookup(device, "encrypted")):
        yield f"{path}encrypted is not true"
    if not _is_customer_key(lookup(device, "kmsKeyId")):
        yield f"{path}kmsKeyId is not a customer-managed KMS key"


def _sse_rule_problems(rules: Iterable[Any], path: str) -> Iterator[str]:
    found = False
    for rule in rules:
        default = lookup(rule, "applyServerSideEncryptionByDefault")
        if default is None:
            continue
        found = True
        algorithm = lookup(default, "sseAlgorithm")
        if algorithm not in ("aws:kms", "aws:kms:dsse", UNKNOWN):
            yield f"{path}: sseAlgorithm is {algorithm!r}, not 'aws:kms'"
        elif not _is_customer_key(lookup(default, "kmsMasterKeyId")):
            yield f"{path}: kmsMasterKeyId is not a customer-managed KMS key"
    if not found:
        yield f"{path}: no applyServerSideEncryptionByDefault rule"


ENCRYPTED_TYPES = (
    BUCKET,
    BUCKET_SSE,
    DB_INSTANCE,
    DB_CLUSTER,
    SECRET,
    LOG_GROUP,
    VOLUME,
    INSTANCE,
    LAUNCH_TEMPLATE,
    ECR_REPOSITORY,
)


def customer_key_encryption(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Storage, databases, secrets, logs, volumes and images are encrypted with our KMS key."""
    if args.resource_type not in ENCRYPTED_TYPES:
        return
    for problem in _encryption_problems(args.resource_type, args.props):
        report(f"{args.name}: {problem}", None)


def _bucket_names(props: Mapping[str, Any]) -> set[str]:
    return {v for v in (lookup(props, "bucket"), lookup(props, "id")) if isinstance(v, str)}


def s3_buckets_have_encryption(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every bucket has a KMS default-encryption configuration, inline or as its own resource."""
    configured: set[str] = set()
    for resource in args.resources:
        if resource.resource_type == BUCKET_SSE:
            bucket = lookup(resource.props, "bucket")
            if isinstance(bucket, str):
                configured.add(bucket)
    for resource in args.resources:
        if resource.resource_type != BUCKET:
            continue
        if lookup(resource.props, "serverSideEncryptionConfiguration") is not None:
            continue  # judged by customer_key_encryption
        if not _bucket_names(resource.props) & configured:
            report(
                f"{resource.name}: no BucketServerSideEncryptionConfiguration names this bucket",
                resource.urn,
            )


# ---------------------------------------------------------------- IMDSv2


def imdsv2_required(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Instances and launch templates require IMDSv2 session tokens."""
    if args.resource_type not in (INSTANCE, LAUNCH_TEMPLATE):
        return
    options = lookup(args.props, "metadataOptions")
    if lookup(options, "httpEndpoint") == "disabled":
        return  # no metadata service at all is stricter still
    tokens = lookup(options, "httpTokens")
    if tokens != "required":
        report(
            f"{args.name}: metadataOptions.httpTokens is {tokens!r}; "
            "set it to 'required' (IMDSv2)",
            None,
        )


# ---------------------------------------------------------------- ingress


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, normalised from the three ways AWS resources spell it."""

    where: str
    protocol: str  # "tcp", "udp", "icmp", "all", or an IANA number as text
    from_port: int
    to_port: int
    world_cidrs: tuple[str, ...]

    @property
    def all_ports(self) -> bool:
        return self.protocol == "all"

    def covers(self, port: int) -> bool:
        if self.all_ports:
            return True
        return self.protocol == "tcp" and self.from_port <= port <= self.to_port

    def ports_text(self) -> str:
        if self.all_ports:
            return "all ports"
        if self.from_port == self.to_port:
            return f"{self.protocol} {self.from_port}"
        return f"{self.protocol} {self.from_port}-{self.to_port}"


_PROTOCOLS = {"-1": "all", "all": "all", "6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}


def _protocol(value: Any) -> str:
    text = str(value).strip().lower() if value is not None else "all"
    return _PROTOCOLS.get(text, text)


def _port(value: Any, default: int) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return default


def is_world(cidr: Any) -> bool:
    """True for a CIDR that spans every address of its family (0.0.0.0/0, ::/0)."""
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _ingress(where: str, protocol: Any, from_port: Any, to_port: Any, cidrs: list[Any]) -> Ingress:
    proto = _protocol(protocol)
    low = _port(from_port, 0)
    high = _port(to_port, 65535 if proto == "all" else low)
    return Ingress(where, proto, low, high, tuple(c for c in cidrs if is_world(c)))


def ingress_of(resource_type: str, props: Mapping[str, Any]) -> list[Ingress]:
    """The ingress permissions a security group (inline), group rule or ingress rule grants."""
    found: list[Ingress] = []
    if resource_type in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP):
        for i, rule in enumerate(items_of(lookup(props, "ingress"))):
            cidrs = items_of(lookup(rule, "cidrBlocks")) + items_of(lookup(rule, "ipv6CidrBlocks"))
            found.append(
                _ingress(
                    f"ingress[{i}]",
                    lookup(rule, "protocol"),
                    lookup(rule, "fromPort"),
                    lookup(rule, "toPort"),
                    cidrs,
                )
            )
    elif resource_type == SECURITY_GROUP_RULE:
        if lookup(props, "type") == "ingress":
            cidrs = [
                *items_of(lookup(props, "cidrBlocks")),
                *items_of(lookup(props, "ipv6CidrBlocks")),
            ]
            found.append(
                _ingress(
                    "rule",
                    lookup(props, "protocol"),
                    lookup(props, "fromPort"),
                    lookup(props, "toPort"),
                    cidrs,
                )
            )
    elif resource_type == INGRESS_RULE:
        cidrs = [lookup(props, "cidrIpv4"), lookup(props, "cidrIpv6")]
        found.append(
            _ingress(
                "rule",
                lookup(props, "ipProtocol"),
                lookup(props, "fromPort"),
                lookup(props, "toPort"),
                cidrs,
            )
        )
    return found


def _allowed_ports(config: Mapping[str, Any]) -> frozenset[int]:
    ports = config.get("allowedPorts") or []
    return frozenset(_port(p, -1) for p in ports) - {-1}


def no_world_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No ingress from 0.0.0.0/0 or ::/0, except TCP to the listener ports the config allows."""
    allowed = _allowed_ports(args.get_config())
    for rule in ingress_of(args.resource_type, args.props):
        if not rule.world_cidrs:
            continue
        span = rule.to_port - rule.from_port + 1
        inside = (
            rule.protocol == "tcp"
            and 0 < span <= len(allowed)
            and all(p in allowed for p in range(rule.from_port, rule.to_port + 1))
        )
        if not inside:
            what = ", ".join(allowed_text(allowed))
            report(
                f"{args.name}: {rule.where} admits {rule.ports_text()} from "
                f"{' and '.join(rule.world_cidrs)}; open to the world only: {what}",
                None,
            )


def allowed_text(allowed: Iterable[int]) -> list[str]:
    ports = sorted(allowed)
    return [f"tcp {p}" for p in ports] if ports else ["nothing (policy config allowedPorts)"]


SSH_PORT = 22


def no_ssh_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """No ingress rule admits SSH (tcp 22) from anywhere: machines are reached by SSM."""
    for rule in ingress_of(args.resource_type, args.props):
        if rule.covers(SSH_PORT):
            report(
                f"{args.name}: {rule.where} admits {rule.ports_text()}, which includes SSH (22); "
                "use Session Manager instead",
                None,
            )


# ---------------------------------------------------------------- KMS


def kms_rotation_enabled(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Symmetric customer keys rotate their key material."""
    if args.resource_type != KMS_KEY:
        return
    spec = lookup(args.props, "customerMasterKeySpec") or lookup(args.props, "keySpec")
    if spec not in (None, "SYMMETRIC_DEFAULT", UNKNOWN):
        return  # AWS rotates only symmetric encryption keys
    if not _truthy(lookup(args.props, "enableKeyRotation")):
        report(f"{args.name}: enableKeyRotation is not true", None)


# ---------------------------------------------------------------- RDS


def rds_resilience(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Databases keep >= 7 days of backups, and a primary instance runs Multi-AZ."""
    if args.resource_type not in (DB_INSTANCE, DB_CLUSTER):
        return
    props = args.props
    # A read replica is the primary's disaster copy: its own backups and Multi-AZ are optional
    # until it is promoted (the failover runbook turns them on).
    if lookup(props, "replicateSourceDb") is not None:
        return
    days = lookup(props, "backupRetentionPeriod")
    if days is not UNKNOWN and _port(days, 0) < MIN_BACKUP_DAYS:
        report(
            f"{args.name}: backupRetentionPeriod is {days!r}; "
            f"keep at least {MIN_BACKUP_DAYS} days",
            None,
        )
    if args.resource_type == DB_INSTANCE and not _truthy(lookup(props, "multiAz")):
        report(f"{args.name}: multiAz is not true on the primary database", None)


def stack_name(config: Mapping[str, Any]) -> str:
    """The stack being judged: policy config `stack` when given, else the engine's stack."""
    given = config.get("stack")
    return given if isinstance(given, str) and given else pulumi.get_stack()


def is_non_production(stack: str, config: Mapping[str, Any]) -> bool:
    return stacks.is_non_production(
        stack, config.get("nonProductionStacks") or NON_PRODUCTION_STACKS
    )


def rds_deletion_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Outside dev stacks, databases have deletion protection on."""
    if args.resource_type not in (DB_INSTANCE, DB_CLUSTER):
        return
    config = args.get_config()
    stack = stack_name(config)
    if is_non_production(stack, config):
        return
    if not _truthy(lookup(args.props, "deletionProtection")):
        report(
            f"{args.name}: deletionProtection is not true, and stack {stack!r} is not a dev stack",
            None,
        )


# ---------------------------------------------------------------- secrets in user data


@dataclass(frozen=True)
class SecretPattern:
    what: str
    pattern: re.Pattern[str]
    # A line that says what the value is (a checksum, a public key) is not a secret.
    unless_line: re.Pattern[str] | None = None


SECRET_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    SecretPattern(
        "a literal password",
        # `password` as a whole word (keystorePassword too), then `=` or `:`, then a literal:
        # shell or template references ($VAR, ${...}, {{...}}, <...>) and empty strings pass.
        re.compile(
            r"""(?i)\b[\w.-]*(?:password|passwd|passphrase)\b["']?\s*[:=]\s*["']?"""
            r"""(?P<value>[^\s"'$,;{}()<>\]\[]{3,})"""
        ),
    ),
    SecretPattern("an encrypted keystore (key material)", re.compile(r'"ciphertext"\s*:')),
    SecretPattern(
        "a 32-byte hex key",
        re.compile(r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{64}(?![0-9A-Za-z])"),
        unless_line=re.compile(r"(?i)sha256|sha-256|checksum|digest|hash"),
    ),
    SecretPattern(
        "a base64 32-byte key",
        re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])"),
        unless_line=re.compile(r"(?i)pub"),
    ),
    SecretPattern("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    SecretPattern(
        "an AWS secret access key",
        re.compile(
            r"(?i:aws_secret_access_key)\s*[:=]\s*\S"
            r"|(?<![A-Za-z0-9+/=])(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*[a-z])"
            r"(?=[A-Za-z0-9+/]*[0-9])[A-Za-z0-9+][A-Za-z0-9+/]{39}(?![A-Za-z0-9+/=])"
        ),
    ),
)


def secrets_in_text(text: str) -> list[str]:
    """What secret-looking things a text holds, each once, as 'what (line N)'."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for secret in SECRET_PATTERNS:
            if secret.unless_line is not None and secret.unless_line.search(line):
                continue
            if secret.pattern.search(line):
                found.append(f"{secret.what} (line {number})")
    return found


def no_secrets_in_user_data(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """User data is stored in clear in state and readable from the instance: no secrets in it."""
    if args.resource_type not in (INSTANCE, LAUNCH_TEMPLATE):
        return
    for key in ("userData", "userDataBase64"):
        if key not in _keys(args.props):
            continue
        value = args.props[key]  # unknown during preview: the engine reports it, `up` checks it
        if not isinstance(value, str):
            continue
        for where, text in user_data_texts(value):
            for hit in secrets_in_text(text):
                report(
                    f"{args.name}: {key}{where} holds {hit}; fetch it at boot with the "
                    "instance role",
                    None,
                )


# ---------------------------------------------------------------- TLS on the reachable edge


@dataclass(frozen=True)
class _Source:
    """Who one ingress permission of a security group admits, on which TCP ports."""

    group_id: Any
    protocol: str
    from_port: int
    to_port: int
    cidrs: tuple[str, ...]
    other: bool  # a prefix list or another security group as the source

    def covers(self, port: int) -> bool:
        return self.protocol == "all" or (
            self.protocol == "tcp" and self.from_port <= port <= self.to_port
        )


def _value(props: Any, key: str) -> Any:
    """props[key] or None; an unknown value raises UnknownValueError (the rule runs at `up`)."""
    if not isinstance(props, Mapping) or key not in _keys(props):
        return None
    return props[key]


def _sources(resource: Any) -> list[_Source]:
    """The ingress a security group (inline), group rule or ingress rule grants, all sources."""
    props, kind = resource.props, resource.resource_type
    found = []
    if kind in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP):
        for rule in items_of(_value(props, "ingress")):
            cidrs = items_of(_value(rule, "cidrBlocks")) + items_of(_value(rule, "ipv6CidrBlocks"))
            other = bool(items_of(_value(rule, "prefixListIds"))) or bool(
                items_of(_value(rule, "securityGroups")) or _truthy(_value(rule, "self"))
            )
            found.append((_value(props, "id"), rule, "protocol", cidrs, other))
    elif kind == SECURITY_GROUP_RULE and _value(props, "type") == "ingress":
        cidrs = items_of(_value(props, "cidrBlocks")) + items_of(_value(props, "ipv6CidrBlocks"))
        other = bool(items_of(_value(props, "prefixListIds"))) or bool(
            _value(props, "sourceSecurityGroupId") or _truthy(_value(props, "self"))
        )
        found.append((_value(props, "securityGroupId"), props, "protocol", cidrs, other))
    elif kind == INGRESS_RULE:
        cidrs = [c for c in (_value(props, "cidrIpv4"), _value(props, "cidrIpv6")) if c]
        other = bool(_value(props, "prefixListId") or _value(props, "referencedSecurityGroupId"))
        found.append((_value(props, "securityGroupId"), props, "ipProtocol", cidrs, other))
    sources = []
    for group_id, rule, protocol_key, cidrs, other in found:
        protocol = _protocol(_value(rule, protocol_key))
        low = _port(_value(rule, "fromPort"), 0)
        high = _port(_value(rule, "toPort"), 65535 if protocol == "all" else low)
        sources.append(_Source(group_id, protocol, low, high, tuple(str(c) for c in cidrs), other))
    return sources


def _inside(cidr: str, vpc_cidrs: Iterable[str]) -> bool:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return False
    for vpc in vpc_cidrs:
        try:
            block = ipaddress.ip_network(str(vpc).strip(), strict=False)
        except ValueError:
            continue
        if network.version == block.version and network.subnet_of(block):  # type: ignore[arg-type]
            return True
    return False


def _plaintext_ports(config: Mapping[str, Any]) -> dict[int, str]:
    """Ports the policy config lets stay plain, each with the reason it gives."""
    allowed: dict[int, str] = {}
    for entry in config.get("plaintextPorts") or []:
        if isinstance(entry, Mapping):
            port, reason = _port(entry.get("port"), -1), str(entry.get("reason") or "").strip()
            if port > 0 and reason:
                allowed[port] = reason
    return allowed


def _vpc_cidrs(resources: Sequence[Any], config: Mapping[str, Any]) -> dict[Any, list[str]]:
    """VPC id -> its IPv4 blocks, from the stack's VPCs and CIDR associations; the policy
    config's `vpcCidrs` name the blocks of a VPC the stack does not declare (key None)."""
    blocks: dict[Any, list[str]] = {None: [str(c) for c in config.get("vpcCidrs") or []]}
    for resource in resources:
        if resource.resource_type == VPC:
            cidr = _value(resource.props, "cidrBlock")
            blocks.setdefault(_value(resource.props, "id"), []).append(str(cidr))
        elif resource.resource_type == VPC_CIDR_ASSOCIATION:
            vpc_id = _value(resource.props, "vpcId")
            blocks.setdefault(vpc_id, []).append(str(_value(resource.props, "cidrBlock")))
    return blocks


def _outside_reach(
    nlb: Any, port: int, resources: Sequence[Any], config: Mapping[str, Any]
) -> str | None:
    """Why this NLB's listener on `port` is reachable from outside its VPC, or None.

    The program's rule (components/network.py): an internal NLB admits the VPC's CIDR and each
    allowedCidrs entry through its security group; internal=false puts it on the internet.
    """
    props = nlb.props
    if not _truthy(_value(props, "internal")):
        return "the load balancer is internet-facing (internal is not true)"
    group_ids = items_of(_value(props, "securityGroups"))
    if not group_ids:
        return "an internal load balancer without security groups admits any routed network"
    groups = [
        r
        for r in resources
        if r.resource_type in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP)
        and _value(r.props, "id") in group_ids
    ]
    vpc_blocks = _vpc_cidrs(resources, config)
    inside = list(vpc_blocks[None])
    for group in groups:
        inside += vpc_blocks.get(_value(group.props, "vpcId"), [])
    for resource in resources:
        for source in _sources(resource):
            if source.group_id not in group_ids or not source.covers(port):
                continue
            for cidr in source.cidrs:
                if not _inside(cidr, inside):
                    return f"its security group admits {cidr}, outside the VPC"
    return None


def nlb_listeners_use_tls(args: StackValidationArgs, report: ReportViolation) -> None:
    """Outside non-production stacks, every NLB listener reachable from outside its VPC is TLS,
    unless the policy config lists its port with a reason."""
    config = args.get_config()
    stack = stack_name(config)
    if is_non_production(stack, config):
        return
    resources = list(args.resources)
    plaintext = _plaintext_ports(config)
    nlbs: dict[Any, Any] | None = None  # read only when a listener needs judging (preview)
    for listener in resources:
        if listener.resource_type != LISTENER:
            continue
        protocol = _value(listener.props, "protocol")
        port = _port(_value(listener.props, "port"), -1)
        if protocol in ("TLS", "UDP") or port in plaintext:
            continue  # encrypted, not a byte stream, or plain on purpose (config says why)
        if nlbs is None:
            nlbs = {
                _value(r.props, "arn"): r
                for r in resources
                if r.resource_type == LOAD_BALANCER
                and _value(r.props, "loadBalancerType") == "network"
            }
        nlb = nlbs.get(_value(listener.props, "loadBalancerArn"))
        if nlb is None:
            continue  # an Application Load Balancer's, or a load balancer of another stack
        why = _outside_reach(nlb, port, resources, config)
        if why is None:
            continue
        report(
            f"{listener.name}: port {port} ({protocol}) of NLB {nlb.name} is reachable from "
            f"outside its VPC ({why}) in stack {stack!r}; terminate TLS there (quorum-ha:tls) "
            "or list the port with a reason in the policy config plaintextPorts",
            listener.urn,
        )


# ---------------------------------------------------------------- the pack


# The config of the rules that spare non-production stacks: which stacks, and which stack this is.
STACK_SCOPE_SCHEMA: dict[str, dict[str, Any]] = {
    "nonProductionStacks": {
        "type": "array",
        "items": {"type": "string"},
        "default": list(NON_PRODUCTION_STACKS),
        "description": "Stack name patterns (fnmatch) exempt from the rule.",
    },
    "stack": {
        "type": "string",
        "description": "Judge as this stack (defaults to the stack being deployed).",
    },
}


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=dict(properties))


def resource_policies() -> list[ResourceValidationPolicy]:
    """The resource rules, as the pack registers them (all mandatory)."""
    level = EnforcementLevel.MANDATORY
    return [
        ResourceValidationPolicy(
            name="customer-key-encryption",
            description="S3, RDS, Secrets Manager, CloudWatch Logs, EBS and ECR use a customer "
            "KMS key.",
            validate=customer_key_encryption,
            enforcement_level=level,
        ),
        ResourceValidationPolicy(
            name="imdsv2-required",
            description="EC2 instances and launch templates require IMDSv2 (httpTokens=required).",
            validate=imdsv2_required,
            enforcement_level=level,
        ),
        ResourceValidationPolicy(
            name="no-world-ingress",
            description="No ingress from 0.0.0.0/0 or ::/0 except the allowed listener ports.",
            validate=no_world_ingress,
            enforcement_level=level,
            config_schema=_schema(
                allowedPorts={
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "default": [],
                    "description": "TCP ports (NLB listeners) that may be open to the world.",
                }
            ),
        ),
        ResourceValidationPolicy(
            name="no-ssh-ingress",
            description="No security group admits SSH (tcp 22); use Session Manager.",
            validate=no_ssh_ingress,
            enforcement_level=level,
        ),
        ResourceValidationPolicy(
            name="kms-key-rotation",
            description="Symmetric KMS keys have automatic rotation on.",
            validate=kms_rotation_enabled,
            enforcement_level=level,
        ),
        ResourceValidationPolicy(
            name="rds-backups-multi-az",
            description=f"RDS keeps >= {MIN_BACKUP_DAYS} days of backups; primaries are Multi-AZ.",
            validate=rds_resilience,
            enforcement_level=level,
        ),
        ResourceValidationPolicy(
            name="rds-deletion-protection",
            description="RDS deletion protection is on outside dev stacks.",
            validate=rds_deletion_protection,
            enforcement_level=level,
            config_schema=_schema(
                **STACK_SCOPE_SCHEMA,
            ),
        ),
        ResourceValidationPolicy(
            name="no-secrets-in-user-data",
            description="EC2 user data holds no keys, passwords or other secret-looking text.",
            validate=no_secrets_in_user_data,
            enforcement_level=level,
        ),
    ]


def stack_policies() -> list[StackValidationPolicy]:
    """Rules that need to see several resources at once."""
    return [
        StackValidationPolicy(
            name="nlb-edge-tls",
            description="Outside dev stacks, NLB listeners reachable from outside the VPC use "
            "TLS, or the config says why not.",
            validate=nlb_listeners_use_tls,
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=_schema(
                plaintextPorts={
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "reason": {"type": "string", "minLength": 1},
                        },
                        "required": ["port", "reason"],
                    },
                    "default": [],
                    "description": "Listener ports that may stay plain TCP, each with why.",
                },
                vpcCidrs={
                    "type": "array",
                    "items": {"type": "string"},
                    "default": [],
                    "description": "The VPC's CIDRs when the stack does not declare the VPC "
                    "(network mode existing or stackReference).",
                },
                **STACK_SCOPE_SCHEMA,
            ),
        ),
        StackValidationPolicy(
            name="s3-bucket-encryption-configured",
            description="Every S3 bucket has a KMS default-encryption configuration.",
            validate=s3_buckets_have_encryption,
            enforcement_level=EnforcementLevel.MANDATORY,
        ),
    ]


def all_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [*resource_policies(), *stack_policies()]
