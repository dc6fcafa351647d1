"""`quorum-ha:tls`: TLS on the edge (components/proxy_service.py's NLB listeners).

The NLB terminates TLS on the listeners other organisations reach (P2P always, 9081 and 22000
on request) with an ACM certificate; targets stay TCP, the proxy behind speaks plain HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.ports import LISTENERS, TESSERA_P2P_PORT
from domain.validation import partition as region_partition

KEYS = ("tls",)
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


def parse(raw: Raw, region: str) -> TlsSettings | None:
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
    partition = region_partition(region)
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
