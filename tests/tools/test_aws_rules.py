"""AWS's rules the mocks do not apply (tools/aws_rules.py), over every setup and the prod
example: physical names, per-resource constraints, and a table entry for every declared type."""

from __future__ import annotations

import base64
import re
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from tests.conftest import SHAPES, RunProgram
from tools import aws_rules
from tools.aws_rules import AUTONAMED, CONSTRAINTS, NAME_RULES, REPLACE_ON_CHANGES
from tools.offline import OfflineRun, load_stack_config, run_offline
from tools.plan import plan_config


@pytest.fixture(scope="module")
def every_run(offline: RunProgram) -> list[OfflineRun]:
    """Each setup shape of the suite, and the prod example stack."""
    runs = [offline(*shape) for shape in SHAPES]
    prod = plan_config(load_stack_config("prod"), "Pulumi.prod.yaml")
    runs.append(run_offline(prod.config, stack="prod", secrets=prod.secrets))
    return runs


def _declared_types(runs: list[OfflineRun]) -> set[str]:
    return {r.type for run in runs for r in run.resources}


def test_every_declared_type_has_an_entry_in_each_table(every_run: list[OfflineRun]) -> None:
    missing = aws_rules.missing_entries(_declared_types(every_run))
    assert missing == {"NAME_RULES": [], "CONSTRAINTS": [], "REPLACE_ON_CHANGES": []}


def test_a_type_missing_from_the_tables_is_reported() -> None:
    assert aws_rules.missing_entries({"aws:sqs/queue:Queue", "quorum-ha:setups:PairHA"}) == {
        "NAME_RULES": ["aws:sqs/queue:Queue"],
        "CONSTRAINTS": ["aws:sqs/queue:Queue"],
        "REPLACE_ON_CHANGES": ["aws:sqs/queue:Queue"],
    }


def test_every_entry_names_its_source() -> None:
    sources = [rule.source for rules in NAME_RULES.values() for rule in rules]
    sources += [c.source for constraints in CONSTRAINTS.values() for c in constraints]
    sources += [r.source for r in REPLACE_ON_CHANGES.values() if r is not None]
    assert sources and all(s.startswith("https://") for s in sources)


@pytest.mark.parametrize(
    "type_",
    [t for t in sorted(NAME_RULES) if NAME_RULES[t]],
)
def test_physical_names_meet_awss_rules(every_run: list[OfflineRun], type_: str) -> None:
    found = [v for run in every_run for v in aws_rules.name_violations(run, type_)]
    assert not found, "\n".join(sorted(set(found)))


CONSTRAINT_IDS = sorted({c.id for constraints in CONSTRAINTS.values() for c in constraints})


@pytest.mark.parametrize("constraint_id", CONSTRAINT_IDS)
def test_declared_resources_meet_awss_constraints(
    every_run: list[OfflineRun], constraint_id: str
) -> None:
    found = [v for run in every_run for v in aws_rules.constraint_violations(run, constraint_id)]
    assert not found, "\n".join(sorted(set(found)))


def test_unnamed_resources_are_auto_named_as_pulumi_aws_does(every_run: list[OfflineRun]) -> None:
    seen = 0
    for run in every_run:
        for resource in run.resources:
            prop = AUTONAMED.get(resource.type)
            if prop is None or resource.inputs.get(prop):
                continue
            seen += 1
            prefix = resource.inputs.get("namePrefix")
            if prefix:  # the provider appends a 26-character unique id instead
                pattern = rf"{re.escape(prefix)}[0-9a-f]{{26}}"
            else:
                pattern = rf"{re.escape(resource.name)}-[0-9a-f]{{7}}"
            assert re.fullmatch(pattern, resource.state[prop]), (resource.name, resource.state)
    assert seen > 20


def test_a_name_prefix_gets_the_providers_unique_suffix_not_an_auto_name() -> None:
    def program() -> None:
        import pulumi_aws as aws

        logical = "a-logical-name-far-longer-than-thirty-two"
        aws.lb.TargetGroup(logical, name_prefix="q3rd-", port=1, protocol="TCP")

    (group,) = _declare(program).of_type("aws:lb/targetGroup:TargetGroup")
    assert re.fullmatch(r"q3rd-[0-9a-f]{26}", group.state["name"]), group.state["name"]
    assert not list(aws_rules.name_violations(_declare(program), group.type))


# ------------------------------------------------------------------ the rules themselves


def _declare(body: Any) -> OfflineRun:
    return run_offline({"aws:region": "us-east-1"}, program=body)


@pytest.mark.parametrize(
    ("type_", "prop", "value", "problem"),
    [
        ("aws:lb/targetGroup:TargetGroup", "name", "a" * 33, "allowed 1-32"),
        ("aws:lb/targetGroup:TargetGroup", "name", "-tg", "does not match"),
        ("aws:lb/loadBalancer:LoadBalancer", "name", "internal-nlb", "internal-"),
        ("aws:iam/role:Role", "name", "r" * 65, "allowed 1-64"),
        ("aws:rds/instance:Instance", "identifier", "qha--tessera", "does not match"),
        ("aws:rds/instance:Instance", "identifier", "1qha", "does not match"),
        ("aws:rds/instance:Instance", "identifier", "qha-", "does not match"),
        ("aws:ecr/repository:Repository", "name", "Qha/proxy", "does not match"),
        ("aws:secretsmanager/secret:Secret", "name", "quorum-ha/dev/key-abcdef", "6 characters"),
        ("aws:kms/alias:Alias", "name", "alias/aws/qha", "reserved"),
        ("aws:ec2/securityGroup:SecurityGroup", "description", "the machines' VPC", "match"),
        ("aws:route53/zone:Zone", "name", "-dev.internal", "does not match"),
    ],
)
def test_a_name_aws_refuses_is_reported(type_: str, prop: str, value: str, problem: str) -> None:
    rule = next(r for r in NAME_RULES[type_] if r.prop == prop)
    assert any(problem in p for p in rule.problems(value)), rule.problems(value)


@pytest.mark.parametrize(
    ("type_", "prop", "value"),
    [
        ("aws:lb/targetGroup:TargetGroup", "name", "quorum-ha-proxy-rpc-0123abc"),
        ("aws:rds/instance:Instance", "identifier", "qha-dev-tessera-replica"),
        ("aws:ecr/repository:Repository", "name", "qha-dev/quorum-proxy"),
        ("aws:secretsmanager/secret:Secret", "name", "quorum-ha/dev/tesseraKey"),
        ("aws:route53/zone:Zone", "name", "dev.quorum-ha.internal"),
        ("aws:iam/role:Role", "path", "/quorum-ha/dev/nodes/"),
    ],
)
def test_a_name_aws_takes_passes(type_: str, prop: str, value: str) -> None:
    rule = next(r for r in NAME_RULES[type_] if r.prop == prop)
    assert rule.problems(value) == []


def test_a_too_long_auto_name_is_caught_in_a_program() -> None:
    def program() -> None:
        aws.lb.TargetGroup("a-target-group-named-rather-long", port=80, protocol="TCP")

    run = _declare(program)
    (found,) = aws_rules.name_violations(run)
    assert "a-target-group-named-rather-long-" in found and "allowed 1-32" in found


def test_constraints_catch_what_aws_refuses() -> None:
    big = base64.b64encode(b"x" * (16 * 1024 + 1)).decode()

    def program() -> None:
        aws.ecs.TaskDefinition(
            "task",
            family="t",
            cpu="512",
            memory="512",
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            container_definitions="[]",
        )
        primary = aws.rds.Instance(
            "primary",
            engine="postgres",
            engine_version="13.4",
            instance_class="db.m6i.large",
            allocated_storage=20,
            storage_encrypted=True,
        )
        aws.rds.Instance(
            "replica",
            replicate_source_db=primary.identifier,
            kms_key_id="arn:aws:kms:us-east-1:123456789012:key/k",
            backup_retention_period=7,
            instance_class="db.m6i.large",
        )
        aws.ec2.Instance("machine", ami="ami-1", instance_type="m6i.large", user_data_base64=big)
        aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16", tags={f"k{i}": "v" for i in range(51)})
        aws.lb.TargetGroup(
            "tg",
            name="tg",
            port=80,
            protocol="TCP",
            deregistration_delay=4000,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                protocol="HTTP", interval=1, matcher="100", healthy_threshold=11
            ),
        )
        aws.cloudwatch.LogGroup("logs", name="logs", retention_in_days=42)
        udp = aws.lb.TargetGroup("udp", name="udp", port=53, protocol="UDP")
        aws.lb.Listener(
            "edge",
            load_balancer_arn="arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/n/1",
            port=9001,
            protocol="TLS",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=udp.arn)
            ],
        )

    found = "\n".join(aws_rules.constraint_violations(_declare(program)))
    for expected in (
        "cpu=512 memory=512 is not a Fargate size",
        "same-region read replica must not set kmsKeyId",
        "need 14.1 or later",
        "user data is 16385 bytes",
        "51 tags",
        "deregistrationDelay=4000",
        "healthCheck.interval=1",
        "healthCheck.healthyThreshold=11",
        "healthCheck.matcher '100'",
        "retentionInDays=42",
        "a TLS listener needs certificateArn",
        "forwards to TCP or TLS target groups, not UDP",
    ):
        assert expected in found, f"{expected!r} not reported in:\n{found}"


def test_default_tags_of_the_provider_count_against_the_tag_limit() -> None:
    def program() -> None:
        provider = aws.Provider(
            "aws",
            region="us-east-1",
            default_tags=aws.ProviderDefaultTagsArgs(tags={f"d{i}": "v" for i in range(30)}),
        )
        aws.ec2.Vpc(
            "vpc",
            cidr_block="10.0.0.0/16",
            tags={f"t{i}": "v" for i in range(21)},
            opts=pulumi.ResourceOptions(provider=provider),
        )

    found = aws_rules.constraint_violations(_declare(program), "tags")
    assert len(found) == 1 and "51 tags" in found[0]


# ------------------------------------------------------------------ the tables against the sources
_TF = "terraform-provider-aws internal/service/"


@pytest.mark.parametrize(
    ("type_", "prop", "replaces", "source"),
    [
        # CustomizeDiff resourceVPCCustomizeDiff: diff.ForceNew("instance_tenancy") unless
        # dedicated -> default.
        ("aws:ec2/vpc:Vpc", "instanceTenancy", True, _TF + "ec2/vpc_.go"),
        ("aws:ec2/vpc:Vpc", "ipv4NetmaskLength", True, _TF + "ec2/vpc_.go"),
        ("aws:ec2/vpc:Vpc", "enableDnsHostnames", False, _TF + "ec2/vpc_.go"),
        ("aws:ec2/subnet:Subnet", "ipv4IpamPoolId", True, _TF + "ec2/vpc_subnet.go"),
        ("aws:ec2/subnet:Subnet", "ipv4NetmaskLength", True, _TF + "ec2/vpc_subnet.go"),
        ("aws:ec2/subnet:Subnet", "ipv6IpamPoolId", True, _TF + "ec2/vpc_subnet.go"),
        ("aws:ec2/subnet:Subnet", "ipv6NetmaskLength", True, _TF + "ec2/vpc_subnet.go"),
        # customdiff.ForceNewIf("ipv6_cidr_block", ...) when the old subnet assigned IPv6.
        ("aws:ec2/subnet:Subnet", "ipv6CidrBlock", True, _TF + "ec2/vpc_subnet.go"),
        ("aws:ec2/subnet:Subnet", "mapPublicIpOnLaunch", False, _TF + "ec2/vpc_subnet.go"),
        # Since provider v5: "identifier ... can be updated" (ModifyDBInstance renames it).
        ("aws:rds/instance:Instance", "identifier", False, _TF + "rds/instance.go"),
        ("aws:rds/instance:Instance", "identifierPrefix", False, _TF + "rds/instance.go"),
        ("aws:rds/instance:Instance", "backupTarget", True, _TF + "rds/instance.go"),
        ("aws:rds/instance:Instance", "kmsKeyId", True, _TF + "rds/instance.go"),
        ("aws:ecr/repository:Repository", "encryptionConfigurations", True, _TF + "ecr"),
        ("aws:ecr/repository:Repository", "imageTagMutability", False, _TF + "ecr"),
        ("aws:route53/zone:Zone", "vpcs", False, _TF + "route53/zone.go"),
        ("aws:route53/zone:Zone", "region", False, "route53 is global: no region input"),
        ("aws:secretsmanager/secret:Secret", "kmsKeyId", False, _TF + "secretsmanager/secret.go"),
        ("aws:kms/replicaKey:ReplicaKey", "primaryKeyArn", True, _TF + "kms/replica_key.go"),
        ("aws:kms/replicaKey:ReplicaKey", "policy", False, _TF + "kms/replica_key.go"),
        ("random:index/randomBytes:RandomBytes", "keepers", True, "random resource_bytes.go"),
        ("random:index/randomPassword:RandomPassword", "overrideSpecial", True, "random"),
    ],
)
def test_replace_on_change_inputs_are_the_providers(
    type_: str, prop: str, replaces: bool, source: str
) -> None:
    rule = REPLACE_ON_CHANGES[type_]
    assert rule is not None
    assert (prop in rule.inputs) is replaces, f"{type_}.{prop} per {source}"


# pulumi-aws provider/resources.go: setAutonaming(255, "-") for every resource with a `name`
# input it does not configure itself, so these are auto-named too (the v7 SDK makes ECR's and
# the zone's `name` optional although Terraform requires it).
@pytest.mark.parametrize(
    ("make", "type_"),
    [
        (lambda: aws.ecr.Repository("repo"), "aws:ecr/repository:Repository"),
        (lambda: aws.secretsmanager.Secret("secret"), "aws:secretsmanager/secret:Secret"),
        (lambda: aws.route53.Zone("zone"), "aws:route53/zone:Zone"),
        (lambda: aws.cloudwatch.LogGroup("logs"), "aws:cloudwatch/logGroup:LogGroup"),
    ],
)
def test_types_pulumi_aws_auto_names_get_a_name(make: Any, type_: str) -> None:
    (resource,) = _declare(make).of_type(type_)
    assert re.fullmatch(rf"{resource.name}-[0-9a-f]{{7}}", str(resource.state.get("name"))), (
        resource.state
    )


def test_an_auto_name_over_the_bridges_limit_is_reported() -> None:
    """Secrets Manager takes 512 characters, but pulumi-aws auto-names at most 255."""
    logical = "s" * 250

    def program() -> None:
        aws.secretsmanager.Secret(logical)

    found = aws_rules.name_violations(_declare(program))
    assert len(found) == 1 and "is 258 characters, allowed 1-255" in found[0], found


def test_the_program_names_what_pulumi_aws_auto_names_another_way(
    every_run: list[OfflineRun],
) -> None:
    """A KMS alias is auto-named "alias/" + name + "-" + 7 hex, an RDS identifier name + 7 hex
    (no separator, not lowercased): NAME_RULES does not model those, so the program names both."""
    unnamed = [
        r.name
        for run in every_run
        for r in run.resources
        if (r.type == "aws:kms/alias:Alias" and not r.inputs.get("name"))
        or (r.type == "aws:rds/instance:Instance" and not r.inputs.get("identifier"))
    ]
    assert unnamed == []
