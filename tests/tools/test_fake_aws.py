"""The fake AWS answers exactly the calls the program makes: no more, no fewer."""

from __future__ import annotations

import pulumi_aws as aws
import pytest

from tests.conftest import RunProgram
from tools import fake_aws
from tools.offline import load_stack_config, run_offline

EXISTING = {
    "mode": "existing",
    "vpcId": "vpc-0123456789abcdef0",
    "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
}
REFERENCED = "acme/network/prod"


def test_the_call_table_is_the_set_of_invokes_every_setup_and_network_mode_makes(
    offline: RunProgram,
) -> None:
    # Every setup on a new network, each network mode (existing subnets, another stack's), and
    # the prod example (TLS, replica region): together they reach every data source call.
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
    seen = {token for run in runs for token in run.invokes}
    assert seen == set(fake_aws.INVOKES)


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
