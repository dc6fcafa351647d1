"""Config -> Settings: defaults, accepted shapes, and refusals that name key, value and rule."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from eth_keyfile import create_keyfile_json
from nacl.public import PrivateKey

from components.settings import (
    ConfigError,
    ExistingNetwork,
    NewNetwork,
    StackReferenceNetwork,
    parse_settings,
)
from domain.naming import stack_label

GENESIS = json.dumps({"config": {"chainId": 10, "isQuorum": True}})


def settings(stack: str = "dev", region: str | None = "eu-west-1", **values: Any):  # type: ignore[no-untyped-def]
    raw = {"genesis": GENESIS}
    for key, value in values.items():
        raw[key] = value if isinstance(value, str) else json.dumps(value)
    return parse_settings(raw, stack=stack, region=region)


def test_defaults_build_the_smallest_pair_setup() -> None:
    s = settings()
    assert (s.setup, s.quorum_nodes, s.tessera_nodes) == ("pair", 2, 2)
    assert s.network == NewNetwork(cidr="10.0.0.0/16", az_count=2)
    assert (s.quorum_version, s.tessera_version) == ("24.4.1", "24.4")
    assert s.allowed_cidrs == () and s.internal_nlb and not s.allow_internet_ingress
    assert s.network_id == 10 and s.replica_region is None
    assert s.db_backup_retention_days == 7 and s.proxy_task_count == 2


@pytest.mark.parametrize(
    ("stack", "protected"),
    [
        ("dev", False),
        ("dev-alice", False),
        ("e2e-1a2b3c4d", False),
        ("prod", True),
        ("qa", True),
        ("develop", True),
    ],
)
def test_deletion_protection_is_on_outside_non_production_stacks(
    stack: str, protected: bool
) -> None:
    assert settings(stack=stack).deletion_protection is protected
    assert settings(stack=stack, deletionProtection=not protected).deletion_protection is (
        not protected
    )


@pytest.mark.parametrize(
    ("stack", "protect", "days"),
    [
        ("dev", None, 0),
        ("dev-alice", None, 0),
        ("e2e-1a2b3c4d", None, 0),
        ("dev", True, 0),  # protection asked for, but the name must be reusable at once
        ("prod", None, 30),
        ("prod", False, 30),  # unprotected production still keeps its secrets recoverable
        ("qa", None, 30),
    ],
)
def test_secrets_recovery_window_follows_the_non_production_rule(
    stack: str, protect: bool | None, days: int
) -> None:
    values = {} if protect is None else {"deletionProtection": protect}
    assert settings(stack=stack, **values).secret_recovery_days == days


@pytest.mark.parametrize(
    ("stack", "value", "multi_az"),
    [
        ("dev", None, False),
        ("e2e-1a2b3c4d", None, False),
        ("prod", None, True),
        ("dev", True, True),
        ("prod", False, False),
    ],
)
def test_replica_multi_az_defaults_on_for_production(
    stack: str, value: bool | None, multi_az: bool
) -> None:
    values = {} if value is None else {"replicaMultiAz": value}
    assert settings(stack=stack, **values).replica_multi_az is multi_az


def test_replica_multi_az_must_be_a_boolean() -> None:
    expected = r"^quorum-ha:replicaMultiAz: 'yes' is not valid; allowed: true or false$"
    with pytest.raises(ConfigError, match=expected):
        settings(replicaMultiAz="yes")


def test_the_prod_example_runs_a_multi_az_replica() -> None:
    from tools.offline import load_stack_config

    config = load_stack_config("prod")
    values = {
        k.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v)
        for k, v in config.items()
        if k.startswith("quorum-ha:")
    }
    prod = parse_settings(values, stack="prod", region=config["aws:region"])
    assert prod.replica_multi_az is True
    assert config["quorum-ha:replicaMultiAz"] is True  # said in the example, not left implied


@pytest.mark.parametrize("version", ["14", "14.1", "14.10", "15", "15.8", "16", "16.4", "17"])
def test_engine_versions_with_replica_backups_are_accepted(version: str) -> None:
    assert settings(dbEngineVersion=version).db_engine_version == version


@pytest.mark.parametrize(
    "version", ["13", "13.16", "14.0", "12", "12.20", "11", "16.x", "v16", "14."]
)
def test_engine_versions_without_replica_backups_are_refused(version: str) -> None:
    # The replica keeps backups so a promoted one has them: PostgreSQL 14.1+ only.
    with pytest.raises(ConfigError) as refused:
        settings(dbEngineVersion=version)
    message = str(refused.value)
    assert message.startswith(f"quorum-ha:dbEngineVersion: {version!r} is not valid; allowed: ")
    assert "14.1" in message and "\n" not in message


@pytest.mark.parametrize(
    ("setup", "quorum", "tessera"), [("full", 2, 2), ("full", 5, 3), ("tessera", 1, 4)]
)
def test_node_counts_per_setup(setup: str, quorum: int, tessera: int) -> None:
    s = settings(setup=setup, quorumNodes=quorum, tesseraNodes=tessera)
    assert (s.quorum_nodes, s.tessera_nodes) == (quorum, tessera)


def test_tessera_setup_defaults_to_one_quorum_and_two_tessera() -> None:
    s = settings(setup="tessera")
    assert (s.quorum_nodes, s.tessera_nodes) == (1, 2)


def test_existing_network_and_stack_reference_are_read() -> None:
    existing = settings(
        network={
            "mode": "existing",
            "vpcId": "vpc-0123456789abcdef0",
            "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        }
    ).network
    assert isinstance(existing, ExistingNetwork)
    assert existing.private_subnet_ids == ("subnet-0123456789abcdef0", "subnet-0123456789abcdef1")
    referenced = settings(
        network={"mode": "stackReference", "stack": "acme/net/prod", "vpcIdOutput": "id"}
    ).network
    assert referenced == StackReferenceNetwork(stack="acme/net/prod", vpc_id_output="id")


@pytest.mark.parametrize(
    "instance_type",
    ["m6i.large", "c5.xlarge", "t3.medium", "r7i.2xlarge", "m5zn.large", "g5.xlarge"],
)
def test_x86_instance_types_are_accepted(instance_type: str) -> None:
    assert settings(tesseraInstanceType=instance_type).tessera_instance_type == instance_type


@pytest.mark.parametrize(
    "instance_type",
    [
        "m7g.large",
        "t4g.small",
        "c7g.xlarge",
        "c6gn.large",
        "r8g.large",
        "x2gd.large",
        "a1.large",
        "im4gn.large",
    ],
)
def test_graviton_types_are_refused_with_the_tessera_reason(instance_type: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(quorumInstanceType=instance_type)
    message = str(refused.value)
    assert message.startswith(f"quorum-ha:quorumInstanceType: '{instance_type}' is not valid")
    assert "arm64" in message and "x86_64" in message


def test_missing_region_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"aws:region: null is not valid; allowed: an AWS region"
    ):
        settings(region=None)


@pytest.mark.parametrize(
    ("key", "region"),
    [
        ("region", "cn-north-1"),
        ("region", "us-iso-east-1"),
        ("region", "useast1"),
        ("replicaRegion", "cn-northwest-1"),
    ],
)
def test_regions_outside_the_aws_partition_are_refused(key: str, region: str) -> None:
    name = "aws:region" if key == "region" else f"quorum-ha:{key}"
    with pytest.raises(ConfigError, match=rf"{name}: '{region}' is not valid; allowed: .*cn-"):
        settings(**{key: region})


def test_gov_cloud_regions_are_accepted() -> None:
    assert settings(region="us-gov-west-1").region == "us-gov-west-1"


def test_same_replica_region_means_a_same_region_replica() -> None:
    assert settings(replicaRegion="eu-west-1").replica_region is None
    assert settings(replicaRegion="eu-central-1").replica_region == "eu-central-1"


def test_replica_region_needs_a_network_this_program_builds() -> None:
    with pytest.raises(ConfigError, match=r"quorum-ha:replicaRegion.*network.mode is new"):
        settings(
            replicaRegion="eu-central-1",
            network={"mode": "stackReference", "stack": "acme/net/prod"},
        )


# --- keys of an existing node, from secret config -------------------------------------------
def tessera_pair() -> tuple[str, str]:
    private = PrivateKey.generate()
    return (
        base64.b64encode(bytes(private)).decode(),
        base64.b64encode(bytes(private.public_key)).decode(),
    )


def test_existing_tessera_pair_is_accepted_and_kept_out_of_repr() -> None:
    private, public = tessera_pair()
    s = settings(tesseraPrivateKey=private, tesseraPublicKey=public)
    assert s.existing_keys.tessera_public_key == public
    assert s.existing_keys.tessera_private_key == private
    assert private not in repr(s)


def test_mismatched_tessera_pair_is_refused() -> None:
    private, _ = tessera_pair()
    _, other_public = tessera_pair()
    with pytest.raises(ConfigError, match=r"tesseraPublicKey.*do not match") as refused:
        settings(tesseraPrivateKey=private, tesseraPublicKey=other_public)
    assert private not in str(refused.value)


def test_half_a_tessera_pair_is_refused() -> None:
    private, _ = tessera_pair()
    with pytest.raises(ConfigError, match=r"quorum-ha:tesseraPublicKey.*set together"):
        settings(tesseraPrivateKey=private)


def test_tessera_private_key_of_wrong_size_is_refused_without_echo() -> None:
    _, public = tessera_pair()
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(ConfigError) as refused:
        settings(tesseraPrivateKey=short, tesseraPublicKey=public)
    assert "[secret]" in str(refused.value) and short not in str(refused.value)


def test_existing_keystore_must_open_with_its_password() -> None:
    keystore = json.dumps(create_keyfile_json(b"\x01" * 32, b"right", iterations=2))
    s = settings(quorumAccountKeystore=keystore, quorumAccountPassword="right")
    assert s.existing_keys.quorum_account_keystore == keystore
    with pytest.raises(ConfigError, match=r"quorumAccountKeystore.*unlocks") as refused:
        settings(quorumAccountKeystore=keystore, quorumAccountPassword="wrong")
    assert "wrong" not in str(refused.value).split("allowed")[0]
    assert keystore not in str(refused.value)


def test_unknown_keys_are_refused_as_typos() -> None:
    with pytest.raises(ConfigError, match=r"quorum-ha:tesseraNode: '2' is not valid.*typo"):
        settings(tesseraNode=2)


@pytest.mark.parametrize(
    ("stack", "prefix"),
    [
        ("dev", "qha-dev"),
        ("dev-alice", "qha-dev-alice"),
        ("prod", "qha-prod"),
        # Altered labels carry 6 hex of sha256(stack name) so distinct stacks stay distinct.
        ("Prod_EU.1", "qha-prod-eu-1-" + hashlib.sha256(b"Prod_EU.1").hexdigest()[:6]),
        ("a--b", "qha-a-b-" + hashlib.sha256(b"a--b").hexdigest()[:6]),
        ("x" * 90, "qha-" + "x" * 30 + "-" + hashlib.sha256(b"x" * 90).hexdigest()[:6]),
    ],
)
def test_name_prefix_is_a_valid_rds_identifier_start(stack: str, prefix: str) -> None:
    assert settings(stack=stack).name_prefix == prefix


# RDS DB instance identifier: 1-63 letters, digits or hyphens, a letter first, no two
# consecutive hyphens, no hyphen last (CreateDBInstance DBInstanceIdentifier).
_RDS_IDENTIFIER = re.compile(r"^[a-z](?!.*--)[a-z0-9-]{0,62}(?<!-)$")
COLLIDING_STACKS = (
    ("dev-alice-feature-branch-number-one-xyz", "dev-alice-feature-branch-number-one-abc"),
    ("Dev", "dev"),
    ("prod_eu", "prod-eu"),
    ("prod.eu", "prod_eu"),
    ("x" * 31, "x" * 32),
    ("a--b", "a-b"),
)


@pytest.mark.parametrize(("first", "second"), COLLIDING_STACKS)
def test_stacks_whose_labels_collide_get_distinct_name_prefixes(first: str, second: str) -> None:
    # Equal prefixes would make the second stack fail on DBInstanceAlreadyExists, the ECR
    # repository name and the KMS alias.
    assert settings(stack=first).name_prefix != settings(stack=second).name_prefix


@pytest.mark.parametrize("stack", [s for pair in COLLIDING_STACKS for s in pair] + ["Z" * 90])
def test_every_name_derived_from_the_prefix_fits_its_aws_limit(stack: str) -> None:
    prefix = settings(stack=stack).name_prefix
    # The longest RDS identifier: the replica's (tessera_database.py).
    assert _RDS_IDENTIFIER.match(f"{prefix}-tessera-replica"), prefix
    assert len(f"{prefix}-tessera-final") <= 255  # final DB snapshot identifier
    assert len(f"alias/{prefix}") <= 256  # KMS alias
    assert len(f"{prefix}/quorum-proxy") <= 256  # ECR repository name
    assert len(f"{prefix}-proxy") <= 255  # ECS task definition family


@dataclass(frozen=True)
class BadTag:
    label: str
    tags: dict[str, Any]
    shown: str  # the value the refusal must echo


BAD_TAGS = (
    BadTag("ampersand in value", {"team": "a&b"}, "'a&b'"),
    BadTag("comma in value", {"a": "b,c"}, "'b,c'"),
    BadTag("rds: key prefix", {"rds:owner": "x"}, "'rds:owner'"),
    BadTag("aws: key prefix", {"aws:owner": "x"}, "'aws:owner'"),
    BadTag("AWS: key prefix any case", {"AWS:owner": "x"}, "'AWS:owner'"),
    BadTag("aws: value prefix", {"owner": "aws:x"}, "'aws:x'"),
    BadTag("rds: value prefix", {"owner": "rds:x"}, "'rds:x'"),
    BadTag("ampersand in key", {"a&b": "x"}, "'a&b'"),
    BadTag("hash in key", {"cost#centre": "x"}, "'cost#centre'"),
    BadTag("empty key", {"": "x"}, "''"),
    BadTag("key too long", {"k" * 129: "x"}, "'kkk"),
    BadTag("value too long", {"k": "v" * 257}, "'vvv"),
    BadTag("value not a string", {"k": 3}, "3"),
    BadTag("newline in value", {"k": "a\nb"}, "'a\\nb'"),
)


@pytest.mark.parametrize("bad", BAD_TAGS, ids=lambda b: b.label)
def test_tags_rds_or_ecs_would_refuse_are_refused_as_config(bad: BadTag) -> None:
    # The tags reach every resource through default_tags: RDS (API Tag) and ECS (TagResource)
    # refuse these, so `up` would fail midway.
    with pytest.raises(ConfigError) as refused:
        settings(tags=bad.tags)
    message = str(refused.value)
    assert message.startswith("quorum-ha:tags."), message
    assert bad.shown in message and "\n" not in message
    assert "allowed: " in message


def test_too_many_tags_are_refused() -> None:
    # 50 tags per resource (RDS, ECS, EC2...); the program adds its own to the user's.
    with pytest.raises(ConfigError, match=r"^quorum-ha:tags: .* at most \d+ tags"):
        settings(tags={f"k{i}": "v" for i in range(50)})


@pytest.mark.parametrize(
    "tags",
    [
        {"team": "payments", "cost-centre": "CC 1234"},
        {"owner": "alice@example.com", "path": "a/b=c+d:e_f.g"},
        {"équipe": "Zürich", "empty": ""},
        {"k" * 128: "v" * 256},
        {"my-aws:thing": "not-a-prefix-aws:"},
    ],
)
def test_tags_every_service_accepts_are_kept(tags: dict[str, str]) -> None:
    assert dict(settings(tags=tags).tags) == tags


def test_template_defaults_are_values_the_program_accepts() -> None:
    import yaml

    from tools.offline import ROOT

    template = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    for key, entry in template.items():
        if not key.startswith("quorum-ha:") or "default" not in entry:
            continue
        name = key.split(":", 1)[1]
        settings(**{name: str(entry["default"])})  # the prompt stores the text as is


@pytest.mark.parametrize("is_quorum", [None, False, "true"])
def test_a_genesis_without_is_quorum_is_refused_before_any_resource(is_quorum: Any) -> None:
    config: dict[str, Any] = {"chainId": 10}
    if is_quorum is not None:
        config["isQuorum"] = is_quorum
    with pytest.raises(ConfigError) as error:
        settings(genesis={"config": config})
    assert str(error.value).startswith("quorum-ha:genesis.config.isQuorum: ")
    assert "true" in str(error.value).split("allowed:")[1]


@pytest.mark.parametrize("peer", ["http://t2:9001/$x", "http://t2:9001/a'b", "http://t2:9001/a b"])
def test_a_tessera_peer_the_machines_would_refuse_is_refused_as_config(peer: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings(tesseraPeers=[peer])
    assert str(error.value).startswith("quorum-ha:tesseraPeers[0]: ")


@pytest.mark.parametrize("address", [None, "0x" + "ab" * 20, "ab" * 20])
def test_a_keystore_whose_address_geth_cannot_unlock_by_is_refused(address: str | None) -> None:
    keystore = create_keyfile_json(bytes(range(1, 33)), b"kept", iterations=2)
    keystore.pop("address")
    if address is not None:
        keystore["address"] = address
    with pytest.raises(ConfigError) as error:
        settings(quorumAccountKeystore=json.dumps(keystore), quorumAccountPassword="kept")
    message = str(error.value)
    assert message.startswith("quorum-ha:quorumAccountKeystore: [secret] is not valid")
    assert "address" in message


@pytest.mark.parametrize(
    "uri", ["docker.io/org/quorum-proxy:1.0", "ghcr.io/org/quorum-proxy@sha256:" + "b" * 64]
)
def test_a_proxy_image_outside_ecr_is_refused(uri: str) -> None:
    # The Quorum machines log in to ECR to pull it; the roles' pull rights are ECR's.
    with pytest.raises(ConfigError) as error:
        settings(proxyImageUri=uri)
    assert str(error.value).startswith("quorum-ha:proxyImageUri: ")
    assert "ECR" in str(error.value)


def test_a_proxy_image_in_ecr_is_accepted() -> None:
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/quorum-proxy:1.0"
    assert settings(proxyImageUri=uri).proxy_image_uri == uri


@pytest.mark.parametrize("stack", [s for pair in COLLIDING_STACKS for s in pair] + ["Z" * 90])
def test_the_stack_label_is_one_dns_label(stack: str) -> None:
    # For the private zone name and IAM role paths too (components/setups.py).
    assert re.match(r"^[a-z0-9](?!.*--)[a-z0-9-]{0,36}(?<!-)$", stack_label(stack)), stack


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
