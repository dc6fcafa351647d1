"""Network, SecurityGroups and VpcPeering as the program declares them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import tools.fake_aws
import tools.offline
from components.network import INTERFACE_ENDPOINTS
from tests.components.test_infra_nodes import machine_subnet
from tests.conftest import stack_config
from tools.offline import OfflineProgramError, OfflineRun, run_offline

EXISTING = {
    "mode": "existing",
    "vpcId": "vpc-0123456789abcdef0",
    "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}


def rules(run: OfflineRun, kind: str = "Ingress") -> list[dict]:
    type_ = f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule"
    groups = {
        g.id: g.name.rsplit("-", 1)[-1] for g in run.of_type("aws:ec2/securityGroup:SecurityGroup")
    }
    return [
        {
            "group": groups[r.inputs["securityGroupId"]],
            "source": groups.get(
                r.inputs.get("referencedSecurityGroupId", ""), r.inputs.get("cidrIpv4")
            ),
            "port": int(r.inputs["fromPort"]) if "fromPort" in r.inputs else None,
            "protocol": r.inputs["ipProtocol"],
        }
        for r in run.of_type(type_)
    ]


def test_new_vpc_spans_two_azs_with_private_and_public_tiers(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    subnets = run.of_type("aws:ec2/subnet:Subnet")
    private = sorted(
        (s for s in subnets if s.inputs["tags"]["quorum-ha/tier"] == "private"),
        key=lambda s: s.name,
    )
    public = [s for s in subnets if s.inputs["tags"]["quorum-ha/tier"] == "public"]
    assert len(private) == len(public) == 2
    assert len({s.inputs["availabilityZone"] for s in private}) == 2
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    assert len(run.of_type("aws:ec2/natGateway:NatGateway")) == 2
    assert run.outputs["subnetIds"]["private"] == [s.id for s in private]


def test_vpc_endpoints_cover_what_machines_reach_without_public_ips(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    services = {e.inputs["serviceName"] for e in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    for service in (*INTERFACE_ENDPOINTS, "s3"):
        assert f"com.amazonaws.us-east-1.{service}" in services
    assert {"ssm", "secretsmanager", "kms", "ecr.api", "ecr.dkr", "logs"} <= set(
        INTERFACE_ENDPOINTS
    )


def test_default_security_group_is_emptied(offline: Callable[..., OfflineRun]) -> None:
    (default,) = offline("pair").of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default.inputs.get("ingress", []) == [] and default.inputs.get("egress", []) == []


def test_three_azs_when_asked(offline: Callable[..., OfflineRun]) -> None:
    run = offline("full", network={"mode": "new", "cidr": "10.8.0.0/16", "azCount": 3})
    private = [
        s
        for s in run.of_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["quorum-ha/tier"] == "private"
    ]
    assert len({s.inputs["availabilityZone"] for s in private}) == 3
    assert all(s.inputs["cidrBlock"].startswith("10.8.") for s in private)


@pytest.mark.parametrize("setup", ["pair", "full"])
def test_nodes_admit_their_ports_only_from_the_proxy(
    offline: Callable[..., OfflineRun], setup: str
) -> None:
    found = rules(offline(setup))
    by_group: dict[str, set] = {}
    for rule in found:
        by_group.setdefault(rule["group"], set()).add(
            (rule["port"], rule["source"], rule["protocol"])
        )
    assert by_group["tessera"] >= {(9001, "proxy", "tcp"), (9081, "proxy", "tcp")}
    assert (22000, "proxy", "tcp") in by_group["quorum"]
    assert by_group["database"] == {(5432, "tessera", "tcp")}
    assert all(source == "nlb" for _, source, _ in by_group["proxy"])
    q2t = (9101, "quorum", "tcp") in by_group["tessera"]
    assert q2t is (setup == "full")
    # devp2p: the HA nodes among themselves (no world, no configured peers in dev).
    assert {(30303, "quorum", "tcp"), (30303, "quorum", "udp")} <= by_group["quorum"]


def test_listeners_admit_the_vpc_and_configured_cidrs(offline: Callable[..., OfflineRun]) -> None:
    run = offline("pair")
    nlb = [r for r in rules(run) if r["group"] == "nlb"]
    sources = {(r["port"], r["source"]) for r in nlb}
    for port in (22000, 9081, 9001):
        assert (port, "10.0.0.0/16") in sources  # the VPC
        assert (port, "10.100.0.0/16") in sources  # Pulumi.dev.yaml's allowedCidrs
    assert len(nlb) == 6


def test_existing_network_is_adopted_not_built(offline: Callable[..., OfflineRun]) -> None:
    run = offline("pair", network=EXISTING)
    assert run.of_type("aws:ec2/vpc:Vpc") == [] and run.of_type("aws:ec2/subnet:Subnet") == []
    assert run.outputs["vpcId"] == EXISTING["vpcId"]
    assert run.outputs["subnetIds"]["private"] == EXISTING["privateSubnetIds"]
    (zone,) = run.of_type("aws:route53/zone:Zone")
    assert zone.inputs["vpcs"][0]["vpcId"] == EXISTING["vpcId"]
    subnets = {machine_subnet(run, i) for i in run.of_type("aws:ec2/instance:Instance")}
    assert subnets == set(EXISTING["privateSubnetIds"])
    # The VPC's own CIDR (looked up) may reach the listeners.
    assert any(r["source"] == "10.20.0.0/16" for r in rules(run) if r["group"] == "nlb")


def test_network_from_another_stack(offline: Callable[..., OfflineRun]) -> None:
    outputs = {
        "acme/network/prod": {
            "vpcId": "vpc-0fedcba9876543210",
            "privateSubnetIds": ["subnet-0aaaaaaaaaaaaaaa0", "subnet-0bbbbbbbbbbbbbbb0"],
        }
    }
    run = offline(
        "full",
        network={"mode": "stackReference", "stack": "acme/network/prod"},
        stack_outputs=outputs,
    )
    (reference,) = run.of_type("pulumi:pulumi:StackReference")
    assert reference.inputs["name"] == "acme/network/prod"
    assert run.outputs["vpcId"] == "vpc-0fedcba9876543210"
    (service,) = run.of_type("aws:ecs/service:Service")
    assert (
        service.inputs["networkConfiguration"]["subnets"]
        == outputs["acme/network/prod"]["privateSubnetIds"]
    )


def test_network_stack_without_outputs_stops_the_program(
    offline: Callable[..., OfflineRun],
) -> None:
    with pytest.raises(OfflineProgramError, match="acme/missing"):
        offline("pair", network={"mode": "stackReference", "stack": "acme/missing"})


def test_public_nlb_in_an_existing_network_uses_its_public_subnets(
    offline: Callable[..., OfflineRun],
) -> None:
    public = ["subnet-0ccccccccccccccc0", "subnet-0ddddddddddddddd0"]
    run = offline("pair", internalNlb=False, network={**EXISTING, "publicSubnetIds": public})
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["internal"] is False and nlb.inputs["subnets"] == public
    (service,) = run.of_type("aws:ecs/service:Service")
    assert service.inputs["networkConfiguration"]["subnets"] == EXISTING["privateSubnetIds"]


def subnet_zones(run: OfflineRun, tier: str) -> list[str]:
    subnets = [
        s
        for s in run.of_type("aws:ec2/subnet:Subnet")
        if s.inputs["tags"]["quorum-ha/tier"] == tier
    ]
    return [s.inputs["availabilityZone"] for s in sorted(subnets, key=lambda s: s.name)]


def run_where_missing(
    monkeypatch: pytest.MonkeyPatch, missing: set[tuple[str, str]], setup: str = "pair", **extra
) -> OfflineRun:
    """The program run in a region whose AZs lack the given (AZ, type or service) offerings."""
    monkeypatch.setattr(tools.fake_aws, "MISSING_OFFERINGS", frozenset(missing))
    return run_offline(stack_config(setup, **extra))


@pytest.mark.parametrize(
    ("setup", "missing", "zones"),
    [
        ("pair", {("us-east-1a", "m6i.large")}, ["us-east-1b", "us-east-1c"]),
        ("full", {("us-east-1b", "m6i.large")}, ["us-east-1a", "us-east-1c"]),
        ("pair", {("us-east-1a", "ecr.dkr")}, ["us-east-1b", "us-east-1c"]),
        ("pair", {("us-east-1b", "ssmmessages")}, ["us-east-1a", "us-east-1c"]),
        ("pair", {("us-east-1c", "m6i.large")}, ["us-east-1a", "us-east-1b"]),
    ],
    ids=["quorum-type", "full-setup", "ecr-endpoint", "ssm-endpoint", "unused-az"],
)
def test_azs_that_lack_an_instance_type_or_endpoint_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    missing: set[tuple[str, str]],
    zones: list[str],
) -> None:
    run = run_where_missing(monkeypatch, missing, setup)
    assert subnet_zones(run, "private") == zones
    assert subnet_zones(run, "public") == zones
    assert "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings" in run.invokes


def test_the_tessera_instance_type_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_where_missing(
        monkeypatch, {("us-east-1a", "m6i.xlarge")}, "full", tesseraInstanceType="m6i.xlarge"
    )
    assert subnet_zones(run, "private") == ["us-east-1b", "us-east-1c"]


@pytest.mark.parametrize(
    ("missing", "az_count", "names"),
    [
        ({("us-east-1a", "m6i.large"), ("us-east-1b", "ecr.dkr")}, 2, ["m6i.large", "ecr.dkr"]),
        ({("us-east-1c", "kms")}, 3, ["kms"]),
    ],
)
def test_too_few_azs_offering_everything_stop_the_program_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    missing: set[tuple[str, str]],
    az_count: int,
    names: list[str],
) -> None:
    network = {"mode": "new", "cidr": "10.0.0.0/16", "azCount": az_count}
    with pytest.raises(OfflineProgramError) as stopped:
        run_where_missing(monkeypatch, missing, network=network)
    message = str(stopped.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"needs {az_count} availability zones" in message
    for zone, _ in missing:
        assert zone in message
    for name in names:
        assert name in message


def subnet_in_an_az_without_the_type(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """EXISTING's second subnet, its AZ made to lack m6i.large; returns (subnet, AZ)."""
    subnet = EXISTING["privateSubnetIds"][1]
    found = tools.fake_aws.invoke_result(
        "aws:ec2/getSubnet:getSubnet", {"id": subnet}, "us-east-1"
    )
    zone = str(found["availabilityZone"])
    monkeypatch.setattr(tools.fake_aws, "MISSING_OFFERINGS", frozenset({(zone, "m6i.large")}))
    return subnet, zone


def test_given_subnets_in_an_az_without_the_instance_type_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subnet, zone = subnet_in_an_az_without_the_type(monkeypatch)
    with pytest.raises(OfflineProgramError) as stopped:
        run_offline(stack_config("pair", network=EXISTING))
    message = str(stopped.value)
    assert "\n" not in message
    assert f"{subnet} ({zone}) lacks m6i.large" in message
    assert EXISTING["privateSubnetIds"][0] not in message  # its AZ offers the type


def test_subnets_from_another_stack_in_an_az_without_the_instance_type_are_warned_of(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    subnet, zone = subnet_in_an_az_without_the_type(monkeypatch)
    outputs = {"acme/network/prod": {k: EXISTING[k] for k in ("vpcId", "privateSubnetIds")}}
    network = {"mode": "stackReference", "stack": "acme/network/prod"}
    with caplog.at_level(logging.WARNING):
        run_offline(stack_config("pair", network=network), stack_outputs=outputs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{subnet} ({zone}) lacks m6i.large" in w for w in warnings), warnings


def test_the_program_asks_for_regular_azs_and_offerings_of_its_instance_types(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: dict[str, list[dict]] = {}
    call = tools.offline._Mocks.call

    def recording(self: Any, args: Any) -> Any:
        asked.setdefault(args.token, []).append(dict(args.args))
        return call(self, args)

    monkeypatch.setattr(tools.offline._Mocks, "call", recording)
    run_offline(stack_config("full", quorumInstanceType="m6i.xlarge"))
    (zones,) = asked["aws:index/getAvailabilityZones:getAvailabilityZones"]
    # Local and Wavelength Zones (once opted in) are listed too: only real AZs host the node.
    assert {"name": "zone-type", "values": ["availability-zone"]} in zones["filters"]
    (offerings,) = asked["aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"]
    assert offerings["locationType"] == "availability-zone"
    assert offerings["filters"] == [
        {"name": "instance-type", "values": ["m6i.large", "m6i.xlarge"]}
    ]
    services = asked["aws:ec2/getVpcEndpointService:getVpcEndpointService"]
    assert sorted(s["serviceName"] for s in services) == sorted(
        f"com.amazonaws.us-east-1.{service}" for service in INTERFACE_ENDPOINTS
    )
