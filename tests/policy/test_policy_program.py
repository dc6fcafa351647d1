"""Every rule over every resource the real program declares, per setup; and broken inputs fail."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from node_bootstrap import pack_user_data
from policy.harness import Violation, check_resources
from tests.inspection import unpack_user_data
from tools.offline import DeclaredResource, OfflineRun, load_stack_config, run_offline

# Counts differ from the README diagrams' smallest shapes on purpose.
SETUP_COUNTS = {"pair": (3, 3), "full": (3, 2), "tessera": (1, 3)}
LISTENER_PORTS = [22000, 9081, 9001]


def dev_config(**overrides: Any) -> dict[str, Any]:
    config = load_stack_config("dev")
    config.update({f"quorum-ha:{k}": v for k, v in overrides.items()})
    return config


def setup_config(setup: str, **overrides: Any) -> dict[str, Any]:
    quorum, tessera = SETUP_COUNTS[setup]
    return dev_config(setup=setup, quorumNodes=quorum, tesseraNodes=tessera, **overrides)


def names(violations: list[Violation]) -> list[tuple[str, str]]:
    return sorted((v.policy, v.urn.rsplit("::", 1)[-1]) for v in violations)


@pytest.mark.parametrize("setup", sorted(SETUP_COUNTS))
def test_each_setup_passes_every_rule_in_dev(setup: str) -> None:
    run = run_offline(setup_config(setup), stack="dev")
    assert len(run.resources) > 100  # the mocks trap: an empty run would pass vacuously
    assert check_resources(run.resources, stack="dev") == []


def test_the_prod_example_passes_every_rule() -> None:
    # Full HA over three AZs with a cross-region replica; deletion protection by default.
    run = run_offline(load_stack_config("prod"), stack="prod")
    assert len(run.resources) > 150
    assert check_resources(run.resources, stack="prod") == []


def test_deletion_protection_off_in_prod_is_caught() -> None:
    # The settings accept this (an operator's explicit choice); the guardrail does not.
    run = run_offline(setup_config("pair", deletionProtection=False, tls=TLS), stack="prod")
    assert names(check_resources(run.resources, stack="prod")) == [
        ("rds-deletion-protection", "quorum-ha-db-primary"),
        ("rds-deletion-protection", "quorum-ha-db-replica"),
    ]


TLS = {
    "certificateArn": (
        "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-4000-8000-000000000000"
    ),
    "dnsName": "quorum.example.com",
    "listeners": LISTENER_PORTS,
}


@pytest.mark.parametrize("setup", sorted(SETUP_COUNTS))
def test_plain_listeners_reachable_beyond_the_vpc_are_caught_in_production(setup: str) -> None:
    # The dev stack admits 10.100.0.0/16, outside its VPC: fine in dev, not in production.
    plain = run_offline(setup_config(setup, deletionProtection=True), stack="prod")
    assert check_resources(plain.resources, stack="dev") == []
    assert names(check_resources(plain.resources, stack="prod")) == [
        ("nlb-edge-tls", "quorum-ha-proxy-p2p-listener"),
        ("nlb-edge-tls", "quorum-ha-proxy-rpc-listener"),
        ("nlb-edge-tls", "quorum-ha-proxy-third-party-listener"),
    ]
    # TLS on P2P only: the other two stay flagged until TLS or a stated reason covers them.
    p2p_only = run_offline(
        setup_config(setup, deletionProtection=True, tls={**TLS, "listeners": [9001]}),
        stack="prod",
    )
    reasons = {
        "nlb-edge-tls": {
            "plaintextPorts": [
                {"port": 22000, "reason": "our applications, over the corporate VPN"},
                {"port": 9081, "reason": "our applications, over the corporate VPN"},
            ]
        }
    }
    assert [n for _, n in names(check_resources(p2p_only.resources, stack="prod"))] == [
        "quorum-ha-proxy-rpc-listener",
        "quorum-ha-proxy-third-party-listener",
    ]
    assert check_resources(p2p_only.resources, stack="prod", config=reasons) == []
    every = run_offline(setup_config(setup, deletionProtection=True, tls=TLS), stack="prod")
    assert check_resources(every.resources, stack="prod") == []


def test_an_internet_facing_nlb_without_tls_is_caught_whatever_it_admits() -> None:
    config = setup_config("pair", internalNlb=False, allowedCidrs=[], deletionProtection=True)
    run = run_offline(config, stack="prod")
    violations = check_resources(run.resources, stack="prod")
    assert {v.policy for v in violations} == {"nlb-edge-tls"}
    assert len(violations) == 3 and all("internet-facing" in v.message for v in violations)


def test_listeners_opened_to_the_world_need_the_policy_to_allow_their_ports() -> None:
    config = setup_config("tessera", allowInternetIngress=True, allowedCidrs=["0.0.0.0/0"])
    run = run_offline(config, stack="dev")
    violations = check_resources(run.resources, stack="dev")
    assert {v.policy for v in violations} == {"no-world-ingress"}
    flagged = " ".join(v.message for v in violations)
    for port in LISTENER_PORTS:
        assert f"tcp {port} from 0.0.0.0/0" in flagged
    allowed = {"no-world-ingress": {"allowedPorts": LISTENER_PORTS}}
    assert check_resources(run.resources, stack="dev", config=allowed) == []


def _mutated(run: OfflineRun, name: str, **inputs: Any) -> list[DeclaredResource]:
    return [
        dataclasses.replace(r, inputs={**r.inputs, **inputs}) if r.name == name else r
        for r in run.resources
    ]


def test_a_weakened_machine_is_caught() -> None:
    run = run_offline(setup_config("pair"), stack="dev")
    machine = next(r for r in run.resources if r.type == "aws:ec2/instance:Instance")
    weakened = _mutated(
        run,
        machine.name,
        metadataOptions={"httpTokens": "optional"},
        # Packed as the program packs it: the rule must read through the gzip.
        userDataBase64=pack_user_data(
            unpack_user_data(machine.inputs["userDataBase64"])
            + "\nruncmd:\n- echo 'db password=hunter22'\n",
            machine=machine.name,
        ),
    )
    assert names(check_resources(weakened, stack="dev")) == [
        ("imdsv2-required", machine.name),
        ("no-secrets-in-user-data", machine.name),
    ]


def test_an_unencrypted_secret_and_an_ssh_rule_are_caught() -> None:
    run = run_offline(setup_config("full"), stack="dev")
    secret = next(r for r in run.resources if r.type == "aws:secretsmanager/secret:Secret")
    rule = next(
        r
        for r in run.resources
        if r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
    )
    broken = _mutated(
        dataclasses.replace(run, resources=_mutated(run, secret.name, kmsKeyId=None)),
        rule.name,
        fromPort=22,
        toPort=22,
    )
    assert names(check_resources(broken, stack="dev")) == [
        ("customer-key-encryption", secret.name),
        ("no-ssh-ingress", rule.name),
    ]
