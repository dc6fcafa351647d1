"""The fake AWS answers exactly the calls the program makes: no more, no fewer."""

from __future__ import annotations

import re
from pathlib import Path

import pulumi_aws as aws
import pytest

from tests.conftest import RunProgram
from tools import fake_aws
from tools.offline import OfflineRun, load_stack_config, run_offline

EXISTING = {
    "mode": "existing",
    "vpcId": "vpc-0123456789abcdef0",
    "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}
REFERENCED = "acme/network/prod"
# A resource type token as written in the fake AWS's source ("aws:ec2/vpc:Vpc"; an invoke's
# last part starts in lower case).
TYPE_TOKEN = re.compile(r'"([a-z-]+:[a-z0-9]+(?:/[A-Za-z0-9]+)?:[A-Z][A-Za-z0-9]*)"')


@pytest.fixture(scope="module")
def every_shape(offline: RunProgram) -> list[OfflineRun]:
    """Every setup on a new network, each network mode (existing subnets, another stack's), and
    the prod example (TLS, replica region): together they reach every call and resource type."""
    runs = [offline(setup) for setup in ("pair", "full", "tessera")]
    runs.append(offline("pair", network=EXISTING))
    runs.append(
        offline(
            "pair",
            network={"mode": "stackReference", "stack": REFERENCED},
            stack_outputs={REFERENCED: {k: EXISTING[k] for k in ("vpcId", "privateSubnetIds")}},
        )
    )
    runs.append(run_offline(load_stack_config("prod"), stack="prod"))
    return runs


def test_the_call_table_is_the_set_of_invokes_the_program_makes(
    every_shape: list[OfflineRun],
) -> None:
    seen = {token for run in every_shape for token in run.invokes}
    assert seen == set(fake_aws.INVOKES)


def test_every_resource_type_the_fake_aws_shapes_is_one_the_program_declares(
    every_shape: list[OfflineRun],
) -> None:
    source = Path(fake_aws.__file__).read_text()
    shaped = set(TYPE_TOKEN.findall(source))
    declared = {resource.type for run in every_shape for resource in run.resources}
    assert shaped, "no type tokens found: the pattern is out of date"
    assert shaped - declared == set()


def test_a_call_the_fake_aws_does_not_answer_stops_the_run_naming_it() -> None:
    def program() -> None:
        aws.ec2.get_ami(most_recent=True, owners=["amazon"])

    with pytest.raises(fake_aws.UnansweredCallError, match="'aws:ec2/getAmi:getAmi'"):
        run_offline({}, program=program)


def test_an_invoke_asked_in_another_region_is_answered_for_that_region() -> None:
    answer = fake_aws.invoke_result(
        "aws:index/getAvailabilityZones:getAvailabilityZones", {"region": "eu-west-1"}, "us-east-1"
    )
    assert answer["names"] == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
