"""Policy nlb-edge-tls: NLB listeners reachable from outside the VPC use TLS outside dev stacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from policy import rules
from policy.harness import check_resources

VPC_ID, SG_ID, OTHER_SG = "vpc-0a1b2c3d", "sg-0nlb", "sg-0proxy"
NLB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/qha/0123"
ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/web/0123"
CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-4000-8000-000000000000"
(POLICY,) = [p for p in rules.all_policies() if p.name == "nlb-edge-tls"]


@dataclass(frozen=True)
class Declared:
    """A resource as the harness takes it: inputs and the provider's outputs."""

    name: str
    type: str
    inputs: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    parent_urn: str = ""

    @property
    def urn(self) -> str:
        return f"urn:pulumi:prod::quorum-ha::{self.type}::{self.name}"


def vpc(cidr: str = "10.40.0.0/16") -> Declared:
    return Declared("vpc", rules.VPC, {"cidrBlock": cidr}, {"id": VPC_ID})


def nlb(*, internal: bool | None = True, groups: list[str] | None = None, kind: str = "network"):  # type: ignore[no-untyped-def]
    inputs: dict[str, Any] = {
        "loadBalancerType": kind,
        "securityGroups": [SG_ID] if groups is None else groups,
    }
    if internal is not None:
        inputs["internal"] = internal
    arn = NLB_ARN if kind == "network" else ALB_ARN
    return Declared(f"{kind}-lb", rules.LOAD_BALANCER, inputs, {"arn": arn})


def group(*ingress: dict[str, Any], group_id: str = SG_ID) -> Declared:
    inputs = {"vpcId": VPC_ID, "ingress": list(ingress)}
    return Declared(f"group-{group_id}", rules.SECURITY_GROUP, inputs, {"id": group_id})


def rule(port: int, *, name: str = "", group_id: str = SG_ID, **source: Any) -> Declared:
    inputs = {"securityGroupId": group_id, "ipProtocol": "tcp", "fromPort": port, "toPort": port}
    return Declared(name or f"rule-{port}-{len(source)}", rules.INGRESS_RULE, inputs | source)


def listener(port: int, protocol: str = "TCP", arn: str = NLB_ARN, **extra: Any) -> Declared:
    inputs = {"loadBalancerArn": arn, "port": port, "protocol": protocol, **extra}
    return Declared(f"listener-{port}", rules.LISTENER, inputs)


def tls(port: int) -> Declared:
    return listener(
        port, "TLS", certificateArn=CERT, sslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06"
    )


def internal_stack(*cidrs: str, port: int = 9001, edge: Declared | None = None) -> list[Declared]:
    """The program's shape: an internal NLB whose group admits the VPC and `cidrs` on `port`."""
    rules_ = [rule(port, name="from-vpc", cidrIpv4="10.40.0.0/16")]
    rules_ += [rule(port, name=f"from-{c}", cidrIpv4=c) for c in cidrs]
    return [vpc(), group(), nlb(), *rules_, edge or listener(port)]


@dataclass(frozen=True)
class Case:
    id: str
    resources: list[Declared]
    flagged: tuple[str, ...] = ()  # listener names expected to be reported
    stack: str = "prod"
    config: dict[str, Any] = field(default_factory=dict)
    says: str = ""  # a fragment of the (first) message


CASES = [
    Case("internal-vpc-only", internal_stack()),
    Case(
        "internal-cidr-beyond-the-vpc",
        internal_stack("10.0.0.0/8"),
        ("listener-9001",),
        says="admits 10.0.0.0/8, outside the VPC",
    ),
    Case("beyond-the-vpc-but-tls", internal_stack("10.0.0.0/8", edge=tls(9001))),
    Case("beyond-the-vpc-in-dev", internal_stack("10.0.0.0/8"), stack="dev"),
    Case("beyond-the-vpc-in-a-dev-star", internal_stack("10.0.0.0/8"), stack="dev-alice"),
    Case(
        "beyond-the-vpc-said-why",
        internal_stack("10.0.0.0/8"),
        config={"plaintextPorts": [{"port": 9001, "reason": "partners' links are IPsec"}]},
    ),
    Case(
        "a-plaintext-port-without-reason-does-not-count",
        internal_stack("10.0.0.0/8"),
        ("listener-9001",),
        config={"plaintextPorts": [{"port": 9001, "reason": " "}]},
        says="plaintextPorts",
    ),
    Case(
        "internet-facing",
        [vpc(), group(), nlb(internal=False), rule(9001, cidrIpv4="10.40.0.0/16"), listener(9001)],
        ("listener-9001",),
        says="internet-facing",
    ),
    Case(
        "internal-unset-means-internet-facing",
        [vpc(), group(), nlb(internal=None), listener(9001)],
        ("listener-9001",),
    ),
    Case(
        "no-security-group",
        [vpc(), nlb(groups=[]), listener(9001)],
        ("listener-9001",),
        says="without security groups",
    ),
    Case(
        "inside-a-secondary-vpc-block",
        [
            *internal_stack("100.64.0.0/16"),
            Declared(
                "secondary",
                rules.VPC_CIDR_ASSOCIATION,
                {"vpcId": VPC_ID, "cidrBlock": "100.64.0.0/16"},
            ),
        ],
    ),
    Case(
        "vpc-of-another-stack-unnamed",
        [group(), nlb(), rule(9001, cidrIpv4="10.20.0.0/16"), listener(9001)],
        ("listener-9001",),
    ),
    Case(
        "vpc-of-another-stack-named-in-config",
        [group(), nlb(), rule(9001, cidrIpv4="10.20.0.0/16"), listener(9001)],
        config={"vpcCidrs": ["10.20.0.0/16"]},
    ),
    Case(
        "only-another-security-group",
        [vpc(), group(), nlb(), rule(9001, referencedSecurityGroupId=OTHER_SG), listener(9001)],
    ),
    Case(
        "a-rule-on-another-port-opens-only-that-port",
        [
            *internal_stack(),
            rule(22000, name="rpc-from-corp", cidrIpv4="10.0.0.0/8"),
            listener(22000),
        ],
        ("listener-22000",),
    ),
    Case(
        "a-rule-of-another-group",
        [*internal_stack(), rule(9001, group_id=OTHER_SG, cidrIpv4="0.0.0.0/0")],
    ),
    Case(
        "inline-ingress-from-the-world",
        [
            vpc(),
            group(
                {"protocol": "tcp", "fromPort": 9000, "toPort": 9100, "cidrBlocks": ["0.0.0.0/0"]}
            ),
            nlb(),
            listener(9001),
        ],
        ("listener-9001",),
        says="admits 0.0.0.0/0",
    ),
    Case(
        "group-rule-from-ipv6-anywhere",
        [
            vpc(),
            group(),
            nlb(),
            Declared(
                "v6",
                rules.SECURITY_GROUP_RULE,
                {
                    "type": "ingress",
                    "securityGroupId": SG_ID,
                    "protocol": "-1",
                    "fromPort": 0,
                    "toPort": 0,
                    "ipv6CidrBlocks": ["::/0"],
                },
            ),
            listener(22000),
        ],
        ("listener-22000",),
    ),
    Case(
        "an-application-load-balancer-is-not-judged",
        [vpc(), group(), nlb(internal=False, kind="application"), listener(80, "HTTP", ALB_ARN)],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nlb_edge_tls_flags_exactly_the_reachable_plain_listeners(case: Case) -> None:
    found = check_resources(
        case.resources, stack=case.stack, config={POLICY.name: case.config}, policies=[POLICY]
    )
    assert sorted(v.urn.rsplit("::", 1)[-1] for v in found) == sorted(case.flagged)
    for violation in found:
        assert "quorum-ha:tls" in violation.message and case.stack in violation.message
    if case.says:
        assert case.says in found[0].message


def test_the_table_has_passing_and_failing_cases() -> None:
    assert {bool(c.flagged) for c in CASES} == {True, False}


def test_a_listener_whose_load_balancer_is_not_known_yet_is_left_to_up() -> None:
    # Preview of a first deploy: the NLB's ARN is unknown; the engine then says the rule
    # could not run and runs it at `pulumi up`.
    resources = [*internal_stack(), listener(9081, arn=UNKNOWN_STRING_VALUE)]
    with pytest.raises(UnknownValueError):
        check_resources(resources, stack="prod", policies=[POLICY])


def test_a_tls_listener_needs_nothing_else_known() -> None:
    resources = [
        *internal_stack(),
        listener(9081, "TLS", arn=UNKNOWN_STRING_VALUE),
    ]
    assert check_resources(resources, stack="prod", policies=[POLICY]) == []


def test_a_first_preview_with_every_listener_tls_passes_without_known_arns() -> None:
    # Nothing exists yet: the NLB's ARN is unknown too, but no listener needs judging.
    unknown_nlb = Declared(
        "network-lb",
        rules.LOAD_BALANCER,
        {"loadBalancerType": "network", "internal": True, "securityGroups": [SG_ID]},
        {"arn": UNKNOWN_STRING_VALUE},
    )
    resources = [vpc(), group(), unknown_nlb, listener(9001, "TLS", arn=UNKNOWN_STRING_VALUE)]
    assert check_resources(resources, stack="prod", policies=[POLICY]) == []
