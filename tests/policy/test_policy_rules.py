"""Each policy rule, table-driven: resources that pass, and resources that fail with a message."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pulumi_policy import ReportViolation, ResourceValidationArgs
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from policy import rules
from policy.harness import validation_args

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
Rule = Callable[[ResourceValidationArgs, ReportViolation], None]


@dataclass(frozen=True)
class Case:
    id: str
    rule: Rule
    type: str
    props: dict[str, Any]
    violations: tuple[str, ...] = ()  # one substring per expected violation, in order
    config: dict[str, Any] = field(default_factory=dict)


def run_rule(case: Case) -> list[str]:
    found: list[str] = []
    args = validation_args(case.type, case.props, name="r1", config=case.config)
    case.rule(args, lambda message, urn=None: found.append(message))
    return found


def ebs(**over: Any) -> dict[str, Any]:
    return {"encrypted": True, "kmsKeyId": KEY_ARN, **over}


def instance(**over: Any) -> dict[str, Any]:
    return {
        "ami": "ami-1",
        "instanceType": "m6i.large",
        "metadataOptions": {"httpTokens": "required", "httpEndpoint": "enabled"},
        "rootBlockDevice": ebs(),
        **over,
    }


def primary_db(**over: Any) -> dict[str, Any]:
    return {
        "engine": "postgres",
        "storageEncrypted": True,
        "kmsKeyId": KEY_ARN,
        "backupRetentionPeriod": 7,
        "multiAz": True,
        "deletionProtection": True,
        **over,
    }


enc = rules.customer_key_encryption
ENCRYPTION = [
    Case("secret-with-key", enc, rules.SECRET, {"kmsKeyId": KEY_ARN}),
    Case("secret-default-key", enc, rules.SECRET, {"name": "s"}, ("kmsKeyId is None",)),
    Case("secret-aws-alias", enc, rules.SECRET, {"kmsKeyId": "alias/aws/secretsmanager"}, ("",)),
    Case("log-group-with-key", enc, rules.LOG_GROUP, {"kmsKeyId": KEY_ARN}),
    Case("log-group-no-key", enc, rules.LOG_GROUP, {"retentionInDays": 30}, ("kmsKeyId",)),
    Case("volume-encrypted", enc, rules.VOLUME, ebs()),
    Case("volume-clear", enc, rules.VOLUME, {"size": 100}, ("encrypted", "kmsKeyId")),
    Case("volume-aws-key", enc, rules.VOLUME, ebs(kmsKeyId=None), ("kmsKeyId",)),
    Case("instance-root-encrypted", enc, rules.INSTANCE, instance()),
    Case(
        "instance-no-root-device",
        enc,
        rules.INSTANCE,
        instance(rootBlockDevice=None),
        ("rootBlockDevice is not set",),
    ),
    Case(
        "instance-extra-ebs-clear",
        enc,
        rules.INSTANCE,
        instance(ebsBlockDevices=[{"deviceName": "/dev/xvdb", "encrypted": False}]),
        ("ebsBlockDevices[0].encrypted", "ebsBlockDevices[0].kmsKeyId"),
    ),
    Case(
        "launch-template-string-flag",
        enc,
        rules.LAUNCH_TEMPLATE,
        {"blockDeviceMappings": [{"ebs": {"encrypted": "true", "kmsKeyId": KEY_ARN}}]},
    ),
    Case(
        "launch-template-clear",
        enc,
        rules.LAUNCH_TEMPLATE,
        {"blockDeviceMappings": [{"ebs": {"encrypted": "false", "kmsKeyId": KEY_ARN}}]},
        ("blockDeviceMappings[0].ebs.encrypted",),
    ),
    Case("db-encrypted", enc, rules.DB_INSTANCE, primary_db()),
    Case(
        "db-clear",
        enc,
        rules.DB_INSTANCE,
        primary_db(storageEncrypted=False, kmsKeyId=None),
        ("storageEncrypted", "kmsKeyId"),
    ),
    Case(
        "db-replica-inherits-key",
        enc,
        rules.DB_INSTANCE,
        {"replicateSourceDb": "arn:aws:rds:us-east-1:123456789012:db:primary"},
    ),
    Case(
        "db-replica-aws-key",
        enc,
        rules.DB_INSTANCE,
        {"replicateSourceDb": "primary", "kmsKeyId": "alias/aws/rds"},
        ("kmsKeyId",),
    ),
    Case("aurora-clear", enc, rules.DB_CLUSTER, {"engine": "aurora-postgresql"}, ("", "")),
    Case(
        "db-insights-with-key",
        enc,
        rules.DB_INSTANCE,
        primary_db(performanceInsightsEnabled=True, performanceInsightsKmsKeyId=KEY_ARN),
    ),
    Case(
        "db-insights-aws-key",
        enc,
        rules.DB_INSTANCE,
        primary_db(performanceInsightsEnabled=True),
        ("performanceInsightsKmsKeyId",),
    ),
    Case(
        "ecr-kms",
        enc,
        rules.ECR_REPOSITORY,
        {"encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": KEY_ARN}]},
    ),
    Case(
        "ecr-aes",
        enc,
        rules.ECR_REPOSITORY,
        {"encryptionConfigurations": [{"encryptionType": "AES256"}]},
        ("'AES256'",),
    ),
    Case("ecr-default", enc, rules.ECR_REPOSITORY, {"name": "proxy"}, ("not set",)),
    Case(
        "ecr-kms-aws-key",
        enc,
        rules.ECR_REPOSITORY,
        {"encryptionConfigurations": [{"encryptionType": "KMS"}]},
        ("kmsKey",),
    ),
    Case(
        "bucket-sse-kms",
        enc,
        rules.BUCKET_SSE,
        {
            "bucket": "b",
            "rules": [
                {
                    "applyServerSideEncryptionByDefault": {
                        "sseAlgorithm": "aws:kms",
                        "kmsMasterKeyId": KEY_ARN,
                    }
                }
            ],
        },
    ),
    Case(
        "bucket-sse-aes",
        enc,
        rules.BUCKET_SSE,
        {
            "bucket": "b",
            "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}],
        },
        ("'AES256'",),
    ),
    Case(
        "bucket-inline-kms-no-key",
        enc,
        rules.BUCKET,
        {
            "serverSideEncryptionConfiguration": {
                "rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}
            }
        },
        ("kmsMasterKeyId",),
    ),
    Case("other-type-ignored", enc, "aws:ec2/vpc:Vpc", {"cidrBlock": "10.0.0.0/16"}),
]

imds = rules.imdsv2_required
IMDS = [
    Case("instance-required", imds, rules.INSTANCE, instance()),
    Case(
        "instance-optional",
        imds,
        rules.INSTANCE,
        instance(metadataOptions={"httpTokens": "optional"}),
        ("'optional'",),
    ),
    Case("instance-unset", imds, rules.INSTANCE, instance(metadataOptions=None), ("None",)),
    Case(
        "instance-imds-off",
        imds,
        rules.INSTANCE,
        instance(metadataOptions={"httpEndpoint": "disabled"}),
    ),
    Case(
        "launch-template-required",
        imds,
        rules.LAUNCH_TEMPLATE,
        {"metadataOptions": {"httpTokens": "required"}},
    ),
    Case("launch-template-unset", imds, rules.LAUNCH_TEMPLATE, {"name": "lt"}, ("httpTokens",)),
]


def sg(*ingress: dict[str, Any]) -> dict[str, Any]:
    return {"vpcId": "vpc-1", "ingress": list(ingress)}


def tcp(port: int, to: int | None = None, **sources: Any) -> dict[str, Any]:
    return {"protocol": "tcp", "fromPort": port, "toPort": to or port, **sources}


world = rules.no_world_ingress
LISTENERS = {"allowedPorts": [22000, 9081, 9001]}
WORLD = [
    Case("sg-vpc-only", world, rules.SECURITY_GROUP, sg(tcp(9001, cidrBlocks=["10.0.0.0/16"]))),
    Case(
        "sg-world-default-none",
        world,
        rules.SECURITY_GROUP,
        sg(tcp(9001, cidrBlocks=["0.0.0.0/0"])),
        ("tcp 9001 from 0.0.0.0/0",),
    ),
    Case(
        "sg-world-allowed-listener",
        world,
        rules.SECURITY_GROUP,
        sg(tcp(9001, cidrBlocks=["0.0.0.0/0"]), tcp(22000, ipv6CidrBlocks=["::/0"])),
        config=LISTENERS,
    ),
    Case(
        "sg-world-ipv6-other-port",
        world,
        rules.SECURITY_GROUP,
        sg(tcp(8545, ipv6CidrBlocks=["::/0"])),
        ("::/0",),
        config=LISTENERS,
    ),
    Case(
        "sg-world-range-over-listener",
        world,
        rules.SECURITY_GROUP,
        sg(tcp(9000, 9100, cidrBlocks=["0.0.0.0/0"])),
        ("tcp 9000-9100",),
        config=LISTENERS,
    ),
    Case(
        "sg-world-all-protocols",
        world,
        rules.SECURITY_GROUP,
        sg({"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}),
        ("all ports",),
        config=LISTENERS,
    ),
    Case(
        "sg-world-udp-on-listener-port",
        world,
        rules.SECURITY_GROUP,
        sg({"protocol": "udp", "fromPort": 9001, "toPort": 9001, "cidrBlocks": ["0.0.0.0/0"]}),
        ("udp 9001",),
        config=LISTENERS,
    ),
    Case(
        "sg-world-non-canonical-cidr",
        world,
        rules.SECURITY_GROUP,
        sg(tcp(443, cidrBlocks=["10.1.2.3/0"])),
        ("from 10.1.2.3/0",),
    ),
    Case(
        "sg-rule-world",
        world,
        rules.SECURITY_GROUP_RULE,
        {"type": "ingress", **tcp(5432, cidrBlocks=["0.0.0.0/0"])},
        ("tcp 5432",),
    ),
    Case(
        "sg-rule-egress-world-ok",
        world,
        rules.SECURITY_GROUP_RULE,
        {"type": "egress", "protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["::/0"]},
    ),
    Case(
        "ingress-rule-world-ipv4",
        world,
        rules.INGRESS_RULE,
        {"ipProtocol": "tcp", "fromPort": 9081, "toPort": 9081, "cidrIpv4": "0.0.0.0/0"},
        ("tcp 9081 from 0.0.0.0/0",),
    ),
    Case(
        "ingress-rule-world-allowed",
        world,
        rules.INGRESS_RULE,
        {"ipProtocol": "tcp", "fromPort": 9081, "toPort": 9081, "cidrIpv4": "0.0.0.0/0"},
        config=LISTENERS,
    ),
    Case(
        "ingress-rule-world-all",
        world,
        rules.INGRESS_RULE,
        {"ipProtocol": "-1", "cidrIpv6": "::/0"},
        ("all ports from ::/0",),
        config=LISTENERS,
    ),
    Case(
        "ingress-rule-from-sg",
        world,
        rules.INGRESS_RULE,
        {"ipProtocol": "-1", "referencedSecurityGroupId": "sg-proxy"},
    ),
]

ssh = rules.no_ssh_ingress
SSH = [
    Case("sg-no-ssh", ssh, rules.SECURITY_GROUP, sg(tcp(9001, cidrBlocks=["10.0.0.0/16"]))),
    Case(
        "sg-ssh-from-vpc",
        ssh,
        rules.SECURITY_GROUP,
        sg(tcp(22, cidrBlocks=["10.0.0.0/16"])),
        ("includes SSH",),
    ),
    Case(
        "sg-range-covers-ssh",
        ssh,
        rules.SECURITY_GROUP,
        sg(tcp(0, 1024, securityGroups=["sg-1"])),
        ("tcp 0-1024",),
    ),
    Case(
        "sg-udp-22-is-not-ssh",
        ssh,
        rules.SECURITY_GROUP,
        sg({"protocol": "udp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]}),
    ),
    Case(
        "sg-rule-all-traffic",
        ssh,
        rules.SECURITY_GROUP_RULE,
        {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 0, "self": True},
        ("all ports",),
    ),
    Case(
        "ingress-rule-ssh",
        ssh,
        rules.INGRESS_RULE,
        {"ipProtocol": "6", "fromPort": 22, "toPort": 22, "prefixListId": "pl-1"},
        ("tcp 22",),
    ),
    Case(
        "default-group-all-from-self",
        ssh,
        rules.DEFAULT_SECURITY_GROUP,
        {
            "vpcId": "vpc-1",
            "ingress": [{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}],
        },
        ("all ports",),
    ),
    Case("default-group-emptied", ssh, rules.DEFAULT_SECURITY_GROUP, {"vpcId": "vpc-1"}),
    Case(
        "egress-ssh-ok",
        ssh,
        rules.SECURITY_GROUP_RULE,
        {"type": "egress", **tcp(22, cidrBlocks=["10.0.0.0/16"])},
    ),
]

rot = rules.kms_rotation_enabled
KMS = [
    Case("key-rotates", rot, rules.KMS_KEY, {"enableKeyRotation": True}),
    Case("key-no-rotation", rot, rules.KMS_KEY, {"description": "k"}, ("enableKeyRotation",)),
    Case(
        "key-rotation-false",
        rot,
        rules.KMS_KEY,
        {"enableKeyRotation": False, "keySpec": "SYMMETRIC_DEFAULT"},
        ("enableKeyRotation",),
    ),
    Case("asymmetric-key-exempt", rot, rules.KMS_KEY, {"keySpec": "ECC_SECG_P256K1"}),
]

res = rules.rds_resilience
RDS = [
    Case("primary-ok", res, rules.DB_INSTANCE, primary_db()),
    Case(
        "primary-short-backups",
        res,
        rules.DB_INSTANCE,
        primary_db(backupRetentionPeriod=3),
        ("backupRetentionPeriod is 3",),
    ),
    Case(
        "primary-no-backups-set",
        res,
        rules.DB_INSTANCE,
        primary_db(backupRetentionPeriod=None),
        ("backupRetentionPeriod is None",),
    ),
    Case("primary-single-az", res, rules.DB_INSTANCE, primary_db(multiAz=False), ("multiAz",)),
    Case(
        "replica-exempt",
        res,
        rules.DB_INSTANCE,
        {"replicateSourceDb": "primary", "multiAz": False, "backupRetentionPeriod": 0},
    ),
    Case("cluster-backups", res, rules.DB_CLUSTER, {"backupRetentionPeriod": 1}, ("is 1",)),
]

prot = rules.rds_deletion_protection
PROTECTION = [
    Case("prod-protected", prot, rules.DB_INSTANCE, primary_db(), config={"stack": "prod"}),
    Case(
        "prod-unprotected",
        prot,
        rules.DB_INSTANCE,
        primary_db(deletionProtection=False),
        ("stack 'prod'",),
        config={"stack": "prod"},
    ),
    Case(
        "dev-unprotected-ok",
        prot,
        rules.DB_INSTANCE,
        primary_db(deletionProtection=False),
        config={"stack": "dev"},
    ),
    Case(
        "e2e-stack-unprotected-ok",
        prot,
        rules.DB_INSTANCE,
        primary_db(deletionProtection=None),
        config={"stack": "e2e-1a2b3c"},
    ),
    Case(
        "custom-non-production-list",
        prot,
        rules.DB_INSTANCE,
        primary_db(deletionProtection=False),
        ("stack 'dev'",),
        config={"stack": "dev", "nonProductionStacks": ["sandbox"]},
    ),
    Case(
        "replica-in-prod-unprotected",
        prot,
        rules.DB_INSTANCE,
        {"replicateSourceDb": "primary"},
        ("deletionProtection",),
        config={"stack": "prod"},
    ),
]

BOOT_OK = """#!/bin/bash
set -euo pipefail
DB_PASSWORD=$(aws secretsmanager get-secret-value --secret-id "$SECRET_ARN" --query SecretString)
exec tessera --configfile /etc/tessera/tessera.json -o jdbc.password="$DB_PASSWORD"
echo '{"passwords": [], "passwordFile": "/run/tessera/pw"}'
echo "4f5c1a3f0d1b6a2e9c8d7b6a5f4e3d2c1b0a99887766554433221100ffeeddcc  geth.tar.gz" | sha256sum -c
docker pull "quorumengineering/tessera@sha256:$(printf '%064d' 0)"
IMAGE_DIGEST=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
TESSERA_PUBLIC_KEY=BULeR8JyUWhiuuCMU/HLA0Q5pzkYT+cHII3ZKBey3Bo=
"""
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"

ud = rules.no_secrets_in_user_data
USER_DATA = [
    Case("boot-script-clean", ud, rules.INSTANCE, instance(userData=BOOT_OK)),
    Case("pem-key", ud, rules.INSTANCE, instance(userData=PEM), ("a PEM private key (line 1)",)),
    Case(
        "json-password",
        ud,
        rules.INSTANCE,
        instance(userData='{"jdbc": {"password": "hunter22"}}'),
        ("a literal password",),
    ),
    Case(
        "cli-password",
        ud,
        rules.INSTANCE,
        instance(userData="tessera -o jdbc.password=s3cr3tpass"),
        ("a literal password",),
    ),
    Case(
        "keystore-json",
        ud,
        rules.INSTANCE,
        instance(userData='{"crypto": {"ciphertext": "ab12", "cipher": "aes-128-ctr"}}'),
        ("encrypted keystore",),
    ),
    Case(
        "hex-private-key",
        ud,
        rules.INSTANCE,
        instance(userData="NODEKEY=0x" + "ab" * 32),
        ("a 32-byte hex key",),
    ),
    Case(
        "base64-private-key",
        ud,
        rules.INSTANCE,
        instance(userData='"bytes": "Wl+xSyXVuuqzpvznOS7dOobhcn4C5auxkFRi7yLtgtA="'),
        ("a base64 32-byte key",),
    ),
    Case(
        "aws-access-key",
        ud,
        rules.INSTANCE,
        instance(userData="export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"),
        ("an AWS access key id",),
    ),
    Case(
        "aws-secret-key",
        ud,
        rules.INSTANCE,
        instance(userData="aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("an AWS secret access key",),
    ),
    Case(
        "bare-aws-secret-key",
        ud,
        rules.INSTANCE,
        instance(userData="KEY='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'"),
        ("an AWS secret access key",),
    ),
    Case(
        "base64-user-data",
        ud,
        rules.INSTANCE,
        instance(userDataBase64=base64.b64encode(PEM.encode()).decode()),
        ("userDataBase64 holds a PEM private key",),
    ),
    Case(
        "launch-template-gzip-base64",
        ud,
        rules.LAUNCH_TEMPLATE,
        {"userData": base64.b64encode(gzip.compress(PEM.encode())).decode()},
        ("userData holds a PEM private key",),
    ),
    Case(
        "launch-template-clean",
        ud,
        rules.LAUNCH_TEMPLATE,
        {"userData": base64.b64encode(BOOT_OK.encode()).decode()},
    ),
]

CLOUD_CONFIG = """#cloud-config
write_files:
- path: /etc/quorum-ha/boot.env
  encoding: gz+b64
  content: {packed}
- path: /etc/motd
  content: hello
"""


PLAIN_CLOUD_CONFIG = """#cloud-config
write_files:
- path: /etc/quorum-ha/boot.env
  permissions: '0644'
  content: |
    A=1
    DB_PASSWORD=correct-horse
"""


def cloud_config(file_text: str) -> str:
    packed = base64.b64encode(gzip.compress(file_text.encode())).decode()
    return CLOUD_CONFIG.format(packed=packed)


USER_DATA += [
    Case(
        "cloud-config-packed-file-clean",
        ud,
        rules.INSTANCE,
        instance(userData=cloud_config("SECRET_ARN=arn:aws:secretsmanager:x\n")),
    ),
    Case(
        "cloud-config-packed-file-with-password",
        ud,
        rules.INSTANCE,
        instance(userData=cloud_config("A=1\nDB_PASSWORD=correct-horse\n")),
        ("userData write_files /etc/quorum-ha/boot.env holds a literal password (line 2)",),
    ),
    Case(
        # As the program packs it: one gzip over the document, plain files inside.
        "gzipped-cloud-config-with-password",
        ud,
        rules.INSTANCE,
        instance(
            userDataBase64=base64.b64encode(
                gzip.compress(PLAIN_CLOUD_CONFIG.encode(), mtime=0)
            ).decode()
        ),
        ("userDataBase64 holds a literal password (line 7)",),
    ),
]

ALL_CASES = ENCRYPTION + IMDS + WORLD + SSH + KMS + RDS + PROTECTION + USER_DATA


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_rule_reports_exactly_the_expected_violations(case: Case) -> None:
    found = run_rule(case)
    assert len(found) == len(case.violations), found
    for message, expected in zip(found, case.violations, strict=True):
        assert message.startswith("r1: "), message
        assert expected in message, (expected, message)


def test_every_rule_has_a_passing_and_a_failing_case() -> None:
    for rule in {c.rule for c in ALL_CASES}:
        outcomes = {bool(c.violations) for c in ALL_CASES if c.rule is rule}
        assert outcomes == {True, False}, rule.__name__


def test_unknown_key_during_preview_counts_as_a_customer_key() -> None:
    case = Case("x", enc, rules.SECRET, {"kmsKeyId": UNKNOWN_STRING_VALUE})
    assert run_rule(case) == []


def test_unknown_user_data_during_preview_is_left_to_the_engine() -> None:
    case = Case("x", ud, rules.INSTANCE, instance(userData=UNKNOWN_STRING_VALUE))
    with pytest.raises(UnknownValueError):
        run_rule(case)


def test_stack_name_falls_back_to_the_engine_stack() -> None:
    assert rules.stack_name({}) == rules.pulumi.get_stack()
    assert rules.stack_name({"stack": "prod"}) == "prod"


def test_every_policy_of_the_pack_has_a_unique_name_and_is_mandatory() -> None:
    policies = rules.all_policies()
    names = [p.name for p in policies]
    assert len(names) == len(set(names))
    assert {p.enforcement_level for p in policies} == {rules.EnforcementLevel.MANDATORY}
