"""Each change a user makes on a living stack keeps its stateful resources, or replaces exactly
what the runbooks say.

The program runs before and after the change; every stateful resource of the before-run (KMS
keys, secrets and versions, random seeds, RDS, volumes, the ECR repository, the private zone,
the VPC and subnets, the provider everything hangs from) must be found by the engine in the
after-run (own URN, or an alias as the engine resolves them) with the same replace-on-change
inputs (tools/aws_rules.py REPLACE_ON_CHANGES).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi_aws as aws
import pytest

from tests.conftest import RunProgram
from tests.inspection import previous_urns
from tools.aws_rules import REPLACE_ON_CHANGES, STATEFUL_TYPES
from tools.offline import ROOT, OfflineRun

RUNBOOK_SECTION = "## What each change replaces"
ECR_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/qha-dev/quorum-proxy@sha256:" + "ab" * 32


@dataclass(frozen=True)
class Change:
    """One change on a living stack: the config before and after, and what it may replace."""

    id: str
    before: dict[str, Any]
    after: dict[str, Any]
    replaced: frozenset[str] = field(default_factory=frozenset)  # logical names, as runbooks say


def _shape(setup: str, quorum: int, tessera: int, **extra: Any) -> dict[str, Any]:
    return {"setup": setup, "quorum": quorum, "tessera": tessera, **extra}


CHANGES = (
    Change("tessera-to-full", _shape("tessera", 1, 2), _shape("full", 2, 2)),
    Change(
        "pair-to-full",
        _shape("pair", 2, 2),
        _shape("full", 2, 2),
        # The pair machines go, with their chain-data volumes and kept interfaces (so the
        # haEnodes hosts change); quorum-N/tessera-N are new.
        frozenset(
            {
                "quorum-ha-pair-0-data",
                "quorum-ha-pair-1-data",
                "quorum-ha-pair-0-eni",
                "quorum-ha-pair-1-eni",
            }
        ),
    ),
    Change("one-more-quorum-pair", _shape("pair", 2, 2), _shape("pair", 3, 3)),
    Change("one-more-quorum-full", _shape("full", 2, 2), _shape("full", 3, 2)),
    Change("one-more-tessera-full", _shape("full", 2, 2), _shape("full", 2, 3)),
    Change("one-more-tessera-tessera", _shape("tessera", 1, 2), _shape("tessera", 1, 3)),
    Change(
        "add-replica-region",
        _shape("pair", 2, 2),
        _shape("pair", 2, 2, replicaRegion="us-west-2"),
        # The read replica moves to the other region: a new replica, built from the primary.
        frozenset({"quorum-ha-db-replica"}),
    ),
    Change(
        "new-quorum-version", _shape("full", 2, 2), _shape("full", 2, 2, quorumVersion="24.4.2")
    ),
    Change(
        "new-tessera-version",
        _shape("full", 2, 2),
        _shape("full", 2, 2, tesseraVersion="24.5"),
    ),
    Change("new-proxy-image", _shape("full", 2, 2), _shape("full", 2, 2, proxyImageUri=ECR_IMAGE)),
    Change("more-proxy-tasks", _shape("pair", 2, 2), _shape("pair", 2, 2, proxyTaskCount=3)),
    Change(
        "enable-tls",
        _shape("full", 2, 2),
        _shape(
            "full",
            2,
            2,
            tls={
                "certificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/"
                "00000000-0000-4000-8000-000000000000",
                "dnsName": "quorum.example.com",
                "hostedZoneId": "Z0123456789ABCDEFGHIJ",
                "listeners": [9001, 9081, 22000],
            },
        ),
    ),
    # Issue 12: a confirmed email subscription survives a new address and a reordered list
    # (a replaced one would wait for its recipient to confirm again).
    Change(
        "alarm-emails-added-and-reordered",
        _shape("pair", 2, 2, alarms=json.dumps({"emails": ["a@example.com", "b@example.com"]})),
        _shape(
            "pair",
            2,
            2,
            alarms=json.dumps({"emails": ["c@example.com", "b@example.com", "a@example.com"]}),
        ),
    ),
    Change(
        "alarm-thresholds",
        _shape("full", 2, 2),
        _shape("full", 2, 2, alarms=json.dumps({"retries": 50, "chainStallMinutes": 5})),
    ),
)


def _run(offline: RunProgram, shape: dict[str, Any]) -> OfflineRun:
    shape = dict(shape)
    return offline(shape.pop("setup"), shape.pop("quorum"), shape.pop("tessera"), **shape)


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return {s for v in value.values() for s in _strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in _strings(v)}
    return set()


def _identities(run: OfflineRun) -> dict[str, set[str]]:
    """Per resource, the values only it has: its id and the outputs the provider computed
    (ARN, key id, address...), left out when another resource has the same (a region, the
    account id)."""
    outputs = {
        r.real_urn: {r.id} | _strings({k: v for k, v in r.state.items() if k not in r.inputs})
        for r in run.resources
    }
    owners: dict[str, int] = {}
    for values in outputs.values():
        for value in values:
            owners[value] = owners.get(value, 0) + 1
    return {urn: {v for v in values if owners[v] == 1} for urn, values in outputs.items()}


def replaced_stateful(before: OfflineRun, after: OfflineRun) -> dict[str, str]:
    """Logical name -> why, for each stateful resource of `before` the update would replace.

    The mocks give a replaced resource the same ids and ARNs as the old one, so a replacement
    is carried on by hand: a kept resource whose replace-on-change input holds an id or ARN of
    a replaced one (a volume's kmsKeyId and a replaced key) is replaced too.
    """
    matches = previous_urns(before, after)
    kept = {old: new for new, old in matches.items() if old is not None}
    by_urn = {r.real_urn: r for r in after.resources}
    identities = _identities(before)
    found: dict[str, str] = {}
    gone: dict[str, str] = {}  # an identity (id, ARN...) of a replaced resource -> its name
    for old in before.resources:
        if old.real_urn not in kept:
            gone.update(dict.fromkeys(identities[old.real_urn], old.name))
            if old.type in STATEFUL_TYPES:
                found[old.name] = "its URN disappears"
    changed = True
    while changed:
        changed = False
        for old in before.resources:
            if old.type not in STATEFUL_TYPES or old.name in found:
                continue
            new = by_urn[kept[old.real_urn]]
            rule = REPLACE_ON_CHANGES[old.type]
            assert rule is not None
            for prop in rule.inputs:
                was, now = old.inputs.get(prop), new.inputs.get(prop)
                if json.dumps(was, sort_keys=True) != json.dumps(now, sort_keys=True):
                    why = f"{prop} changes ({rule.source})"
                elif hits := sorted(gone[v] for v in _strings(was) if v in gone):
                    why = f"{prop} names {hits[0]}, which is replaced"
                else:
                    continue
                found[old.name] = why
                gone.update(dict.fromkeys(identities[old.real_urn], old.name))
                changed = True
                break
    return found


@pytest.mark.parametrize(
    "change",
    [pytest.param(c, id=c.id) for c in CHANGES],
)
def test_a_change_replaces_only_what_the_runbook_says(offline: RunProgram, change: Change) -> None:
    before, after = _run(offline, change.before), _run(offline, change.after)
    replaced = replaced_stateful(before, after)
    unexpected = {name: why for name, why in replaced.items() if name not in change.replaced}
    assert not unexpected, f"{change.id} replaces {unexpected}"
    assert set(replaced) == set(change.replaced), f"{change.id} replaced only {replaced}"


def test_every_change_and_what_it_replaces_is_in_the_runbook() -> None:
    text = (ROOT / "docs" / "runbooks.md").read_text()
    assert RUNBOOK_SECTION in text
    section = text.split(RUNBOOK_SECTION, 1)[1].split("\n## ", 1)[0]
    ids = set(re.findall(r"<!-- change: ([\w-]+) -->", section))
    assert ids == {c.id for c in CHANGES}
    for change in CHANGES:
        row = section.split(f"<!-- change: {change.id} -->", 1)[1].split("<!-- change:", 1)[0]
        for name in change.replaced:
            assert name.replace("-0-", "-N-").replace("-1-", "-N-") in row or name in row, (
                f"the runbook's row for {change.id} does not name {name}"
            )


def test_the_comparison_sees_a_replaced_key_and_what_it_takes_along() -> None:
    """The check itself: a KMS key whose multiRegion changes is replaced, and so is the volume
    it encrypts (a volume's kmsKeyId replaces it)."""
    from tools.offline import run_offline

    def program(multi_region: bool) -> Any:
        def declare() -> None:
            import pulumi_aws as aws

            key = aws.kms.Key("key", multi_region=multi_region)
            aws.ebs.Volume("volume", availability_zone="us-east-1a", size=8, kms_key_id=key.arn)

        return declare

    before = run_offline({}, program=program(False))
    after = run_offline({}, program=program(True))
    source = REPLACE_ON_CHANGES["aws:kms/key:Key"].source  # type: ignore[union-attr]
    assert replaced_stateful(before, after) == {
        "key": f"multiRegion changes ({source})",
        "volume": "kmsKeyId names key, which is replaced",
    }


def _one_resource(make: Any) -> Any:
    def declare() -> None:
        make()

    return declare


@pytest.mark.parametrize(
    ("before", "after", "replaced"),
    [
        # terraform-provider-aws rds/instance.go (v5+): identifier is updated in place.
        (
            lambda: aws.rds.Instance(
                "db", identifier="qha-a", instance_class="db.m6i.large", engine="postgres"
            ),
            lambda: aws.rds.Instance(
                "db", identifier="qha-b", instance_class="db.m6i.large", engine="postgres"
            ),
            False,
        ),
        # ec2/vpc_subnet.go: ipv4_netmask_length is ForceNew.
        (
            lambda: aws.ec2.Subnet(
                "subnet", vpc_id="vpc-1", ipv4_ipam_pool_id="ipam-pool-1", ipv4_netmask_length=24
            ),
            lambda: aws.ec2.Subnet(
                "subnet", vpc_id="vpc-1", ipv4_ipam_pool_id="ipam-pool-1", ipv4_netmask_length=26
            ),
            True,
        ),
        # ec2/vpc_.go resourceVPCCustomizeDiff: default -> dedicated tenancy is ForceNew.
        (
            lambda: aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16"),
            lambda: aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16", instance_tenancy="dedicated"),
            True,
        ),
    ],
    ids=["rds-rename", "subnet-netmask", "vpc-tenancy"],
)
def test_the_comparison_follows_the_providers_force_new(
    before: Any, after: Any, replaced: bool
) -> None:
    from tools.offline import run_offline

    old = run_offline({}, program=_one_resource(before))
    found = replaced_stateful(old, run_offline({}, program=_one_resource(after)))
    assert bool(found) is replaced, found
