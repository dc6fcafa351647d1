"""A small synthetic stack shaped like the real one, for the plan and diagram tools."""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pulumi_aws as aws
import pytest


class _Component(pulumi.ComponentResource):
    def __init__(self, kind: str, name: str, parent: pulumi.Resource | None = None) -> None:
        super().__init__(
            f"quorum-ha:synthetic:{kind}", name, None, pulumi.ResourceOptions(parent=parent)
        )


def synthetic_stack(
    nodes: int = 2, *, proxied: int | None = None, fail_with: str | None = None
) -> Callable[[], None]:
    """KMS + secrets, Tessera nodes with DNS, a DB pair and an NLB-fronted proxy service.

    The proxy is configured with the first `proxied` nodes (default: all).
    """

    def program() -> None:
        if fail_with:
            raise pulumi.RunError(fail_with)
        setup = _Component("PairHA", "pair")
        keys = _Component("SharedKeys", "keys", setup)
        key = aws.kms.Key(
            "keys-kms", enable_key_rotation=True, opts=pulumi.ResourceOptions(parent=keys)
        )
        secret = aws.secretsmanager.Secret(
            "keys-tessera",
            name="qha-dev/tessera",
            kms_key_id=key.arn,
            opts=pulumi.ResourceOptions(parent=keys),
        )
        aws.secretsmanager.SecretVersion(
            "keys-tessera-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret("c2VjcmV0LWtleS1tYXRlcmlhbA=="),
            opts=pulumi.ResourceOptions(parent=keys),
        )
        db = _Component("TesseraDatabase", "db", setup)
        primary = aws.rds.Instance(
            "db-primary",
            engine="postgres",
            instance_class="db.m6i.large",
            allocated_storage=20,
            multi_az=True,
            storage_encrypted=True,
            kms_key_id=key.arn,
            backup_retention_period=7,
            opts=pulumi.ResourceOptions(parent=db),
        )
        aws.rds.Instance(
            "db-replica",
            replicate_source_db=primary.arn,
            instance_class="db.m6i.large",
            opts=pulumi.ResourceOptions(parent=db),
        )
        group = _Component("Nodes", "nodes", setup)
        role = aws.iam.Role(
            "nodes-role", assume_role_policy="{}", opts=pulumi.ResourceOptions(parent=group)
        )
        aws.iam.RolePolicy(
            "nodes-read-secrets",
            role=role.id,
            policy=secret.arn.apply(
                lambda arn: json.dumps(
                    {"Statement": [{"Action": "secretsmanager:GetSecretValue", "Resource": arn}]}
                )
            ),
            opts=pulumi.ResourceOptions(parent=group),
        )
        profile = aws.iam.InstanceProfile(
            "nodes-profile", role=role.name, opts=pulumi.ResourceOptions(parent=group)
        )
        dns_names = []
        for i in range(1, nodes + 1):
            node = aws.ec2.Instance(
                f"tessera-{i}",
                ami="ami-1",
                instance_type="m6i.large",
                iam_instance_profile=profile.name,
                metadata_options={"http_tokens": "required"},
                root_block_device={"encrypted": True, "kms_key_id": key.arn},
                user_data=primary.address.apply(lambda host: f"#!/bin/bash\nJDBC_HOST={host}\n"),
                opts=pulumi.ResourceOptions(parent=group),
            )
            record = aws.route53.Record(
                f"tessera-{i}-dns",
                zone_id="Z1",
                name=f"tessera-{i}.quorum-ha.internal",
                type="A",
                ttl=60,
                records=[node.private_ip],
                opts=pulumi.ResourceOptions(parent=group),
            )
            dns_names.append(record.name)
        proxy = _Component("ProxyService", "proxy", setup)
        opts = pulumi.ResourceOptions(parent=proxy)
        repo = aws.ecr.Repository(
            "proxy-repo",
            encryption_configurations=[{"encryption_type": "KMS", "kms_key": key.arn}],
            opts=opts,
        )
        nlb_group = aws.ec2.SecurityGroup("proxy-nlb-sg", vpc_id="vpc-1", opts=opts)
        for cidr in ("10.9.0.0/16", "10.0.0.0/16"):
            aws.vpc.SecurityGroupIngressRule(
                f"proxy-nlb-from-{cidr.split('.')[1]}",
                security_group_id=nlb_group.id,
                ip_protocol="tcp",
                from_port=9001,
                to_port=9001,
                cidr_ipv4=cidr,
                opts=opts,
            )
        nlb = aws.lb.LoadBalancer(
            "proxy-nlb",
            load_balancer_type="network",
            internal=True,
            security_groups=[nlb_group.id],
            opts=opts,
        )
        task = aws.ecs.TaskDefinition(
            "proxy-task",
            family="proxy",
            container_definitions=pulumi.Output.all(
                repo.repository_url, *dns_names[:proxied]
            ).apply(
                lambda v: json.dumps(
                    [
                        {
                            "name": "proxy",
                            "image": f"{v[0]}:latest",
                            "environment": [{"name": "UPSTREAMS", "value": ",".join(v[1:])}],
                        }
                    ]
                )
            ),
            opts=opts,
        )
        groups = {}
        for port in (22000, 9081, 9001):
            groups[port] = aws.lb.TargetGroup(
                f"proxy-tg-{port}", port=port, protocol="TCP", target_type="ip", opts=opts
            )
        service = aws.ecs.Service(
            "proxy-service",
            task_definition=task.arn,
            desired_count=2,
            launch_type="FARGATE",
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=g.arn, container_name="proxy", container_port=p
                )
                for p, g in groups.items()
            ],
            opts=opts,
        )
        for port, tg in groups.items():
            aws.lb.Listener(
                f"proxy-listener-{port}",
                load_balancer_arn=nlb.arn,
                port=port,
                protocol="TCP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=tg.arn)
                ],
                opts=pulumi.ResourceOptions(parent=proxy, depends_on=[service]),
            )
        pulumi.export("nlbDnsName", nlb.dns_name)
        pulumi.export("tesseraKey", pulumi.Output.secret("c2VjcmV0"))

    return program


@pytest.fixture
def synthetic() -> Callable[..., Callable[[], None]]:
    return synthetic_stack
