"""The TLS section (components/settings/tls.py): TLS on the edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from settings_support import settings

from components.settings import ConfigError

# ------------------------------------------------------------------ TLS on the edge
CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/0b1f8d2e-1234-4abc-8def-0123456789ab"


def tls(**fields: Any) -> dict[str, Any]:
    return {"certificateArn": CERTIFICATE, "dnsName": "quorum.example.com", **fields}


def test_without_tls_every_listener_stays_plain() -> None:
    assert settings().tls is None


def test_tls_defaults_to_the_p2p_listener_and_awss_recommended_policy() -> None:
    s = settings(tls=tls(dnsName="Quorum.Example.COM."))
    assert s.tls is not None
    assert s.tls.ports == (9001,)
    assert s.tls.dns_name == "quorum.example.com"  # Route 53 and certificates ignore case
    assert s.tls.hosted_zone_id is None
    assert s.tls.ssl_policy == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"


def test_tls_on_every_listener_with_an_alias_record_is_accepted() -> None:
    s = settings(
        tls=tls(
            listeners=[22000, 9001, 9081],
            hostedZoneId="Z0123456789ABCDEFGHIJ",
            sslPolicy="ELBSecurityPolicy-TLS13-1-3-2021-06",
        )
    )
    assert s.tls is not None
    assert s.tls.ports == (9001, 9081, 22000)
    assert s.tls.hosted_zone_id == "Z0123456789ABCDEFGHIJ"


def test_a_gov_cloud_certificate_names_its_partition() -> None:
    arn = "arn:aws-us-gov:acm:us-gov-west-1:123456789012:certificate/" + CERTIFICATE[-36:]
    s = settings(region="us-gov-west-1", tls=tls(certificateArn=arn))
    assert s.tls is not None and s.tls.certificate_arn == arn


@dataclass(frozen=True)
class BadTls:
    label: str
    value: Any
    key: str
    allowed: str  # a fragment of what the message says is allowed


BAD_TLS = (
    BadTls("not-an-object", "yes", "quorum-ha:tls", "an object with certificateArn"),
    BadTls("typo", tls(listener=[9001]), "quorum-ha:tls.listener", "one of"),
    BadTls("no-certificate", {"dnsName": "q.example.com"}, "quorum-ha:tls.certificateArn", "ACM"),
    BadTls(
        "other-region",
        tls(certificateArn=CERTIFICATE.replace("eu-west-1", "us-east-1")),
        "quorum-ha:tls.certificateArn",
        "arn:aws:acm:eu-west-1:<account>:certificate/<uuid>",
    ),
    BadTls(
        "other-partition",
        tls(certificateArn=CERTIFICATE.replace("arn:aws:", "arn:aws-cn:")),
        "quorum-ha:tls.certificateArn",
        "stack's region",
    ),
    BadTls(
        "not-acm",
        tls(certificateArn="arn:aws:iam::123456789012:server-certificate/edge"),
        "quorum-ha:tls.certificateArn",
        "ACM certificate ARN",
    ),
    BadTls(
        "short-id",
        tls(certificateArn=CERTIFICATE[:-4]),
        "quorum-ha:tls.certificateArn",
        "<uuid>",
    ),
    BadTls("no-name", tls(dnsName=None), "quorum-ha:tls.dnsName", "the DNS name the certificate"),
    BadTls("one-label", tls(dnsName="quorum"), "quorum-ha:tls.dnsName", "DNS name"),
    BadTls("wildcard", tls(dnsName="*.example.com"), "quorum-ha:tls.dnsName", "DNS name"),
    BadTls("url", tls(dnsName="https://q.example.com"), "quorum-ha:tls.dnsName", "DNS name"),
    BadTls(
        "zone-with-prefix",
        tls(hostedZoneId="/hostedzone/Z0123456789ABCDEFGHIJ"),
        "quorum-ha:tls.hostedZoneId",
        "Route 53 hosted zone id",
    ),
    BadTls("zone-lowercase", tls(hostedZoneId="z0123abc"), "quorum-ha:tls.hostedZoneId", "Z"),
    BadTls("no-p2p", tls(listeners=[9081]), "quorum-ha:tls.listeners", "that includes 9001"),
    BadTls("unknown-port", tls(listeners=[9001, 443]), "quorum-ha:tls.listeners", "[9001, 9081"),
    BadTls("twice", tls(listeners=[9001, 9001]), "quorum-ha:tls.listeners", "listener ports"),
    BadTls("names", tls(listeners=["p2p"]), "quorum-ha:tls.listeners", "listener ports"),
    BadTls(
        "tls-1-0-policy",
        tls(sslPolicy="ELBSecurityPolicy-TLS13-1-0-2021-06"),
        "quorum-ha:tls.sslPolicy",
        "TLS 1.2 or 1.3 as minimum",
    ),
    BadTls(
        "2016-policy",
        tls(sslPolicy="ELBSecurityPolicy-2016-08"),
        "quorum-ha:tls.sslPolicy",
        "ELBSecurityPolicy-TLS13-1-2-*",
    ),
)


@pytest.mark.parametrize("bad", BAD_TLS, ids=lambda b: b.label)
def test_tls_settings_aws_or_tessera_could_not_use_are_refused(bad: BadTls) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tls=bad.value)
    message = str(caught.value)
    assert caught.value.key == bad.key
    assert message.startswith(f"{bad.key}: ") and "\n" not in message
    assert bad.allowed in message
