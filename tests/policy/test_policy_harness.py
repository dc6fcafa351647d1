"""The harness runs every rule over what a program declares under mocks (synthetic programs)."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_aws as aws

from policy.harness import check_resources
from tools.offline import run_offline


def guarded_program(
    *, rotation: bool = True, ssh: bool = False, bucket_sse: bool = True
) -> Callable[[], None]:
    """A small stack in the project's style: one key, a secret, a node, a bucket."""

    def program() -> None:
        key = aws.kms.Key("keys", enable_key_rotation=rotation)
        aws.secretsmanager.Secret("db-credentials", kms_key_id=key.arn)
        aws.cloudwatch.LogGroup("proxy-logs", kms_key_id=key.arn, retention_in_days=30)
        ports = [9001, 22] if ssh else [9001]
        group = aws.ec2.SecurityGroup(
            "tessera-sg",
            vpc_id="vpc-1",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=p, to_port=p, cidr_blocks=["10.0.0.0/16"]
                )
                for p in ports
            ],
        )
        aws.ec2.Instance(
            "tessera-1",
            ami="ami-1",
            instance_type="m6i.large",
            vpc_security_group_ids=[group.id],
            user_data="#!/bin/bash\nexec /opt/boot.sh\n",
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required"),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True, kms_key_id=key.arn
            ),
        )
        bucket = aws.s3.Bucket("artifacts", bucket="quorum-ha-artifacts")
        if bucket_sse:
            aws.s3.BucketServerSideEncryptionConfiguration(
                "artifacts-sse",
                bucket=bucket.bucket,
                rules=[
                    aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default={
                            "sse_algorithm": "aws:kms",
                            "kms_master_key_id": key.arn,
                        }
                    )
                ],
            )
        pulumi.export("key", key.arn)

    return program


def test_a_guarded_program_has_no_violations() -> None:
    run = run_offline({}, program=guarded_program())
    assert len(run.resources) >= 7  # the mocks trap: nothing declared would pass vacuously
    assert check_resources(run.resources, stack="prod") == []


def test_each_broken_setting_is_reported_against_its_resource() -> None:
    run = run_offline({}, program=guarded_program(rotation=False, ssh=True, bucket_sse=False))
    violations = check_resources(run.resources, stack="prod")
    found = {(v.policy, v.urn.rsplit("::", 1)[-1]) for v in violations}
    assert found == {
        ("kms-key-rotation", "keys"),
        ("no-ssh-ingress", "tessera-sg"),
        ("s3-bucket-encryption-configured", "artifacts"),
    }


def test_policy_config_reaches_the_rules() -> None:
    def open_listener() -> None:
        aws.vpc.SecurityGroupIngressRule(
            "nlb-p2p",
            security_group_id="sg-1",
            ip_protocol="tcp",
            from_port=9001,
            to_port=9001,
            cidr_ipv4="0.0.0.0/0",
        )

    run = run_offline({}, program=open_listener)
    closed = check_resources(run.resources, stack="dev")
    assert [v.policy for v in closed] == ["no-world-ingress"]
    allowed = check_resources(
        run.resources, stack="dev", config={"no-world-ingress": {"allowedPorts": [9001]}}
    )
    assert allowed == []


def test_the_stack_name_decides_deletion_protection() -> None:
    def database() -> None:
        aws.rds.Instance(
            "tessera-db",
            engine="postgres",
            instance_class="db.m6g.large",
            storage_encrypted=True,
            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/k",
            backup_retention_period=7,
            multi_az=True,
            deletion_protection=False,
        )

    run = run_offline({}, program=database)
    assert check_resources(run.resources, stack="dev") == []
    assert [v.policy for v in check_resources(run.resources, stack="prod")] == [
        "rds-deletion-protection"
    ]
