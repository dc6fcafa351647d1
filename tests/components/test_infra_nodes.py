"""Nodes: machines in private subnets over AZs, recoverable, with their own narrow roles."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

import tools.offline
from components.nodes import AMI_PARAMETER, SSM_CORE_POLICY, machine_policy
from tests.conftest import stack_config
from tools.offline import DeclaredResource, OfflineRun, run_offline

INSTANCE = "aws:ec2/instance:Instance"
INTERFACE = "aws:ec2/networkInterface:NetworkInterface"


def kept_interface(run: OfflineRun, instance: DeclaredResource) -> DeclaredResource | None:
    """The network interface an instance boots on, when it is one the program keeps."""
    primary = instance.inputs.get("primaryNetworkInterface")
    if primary is None:
        return None
    (interface,) = [i for i in run.of_type(INTERFACE) if i.id == primary["networkInterfaceId"]]
    return interface


def machine_subnet(run: OfflineRun, instance: DeclaredResource) -> str:
    """The subnet a machine lives in: its kept interface's, or its own."""
    interface = kept_interface(run, instance)
    return str((interface or instance).inputs["subnetId"])


def runs_quorum(instance: DeclaredResource) -> bool:
    return instance.inputs["tags"]["quorum-ha/role"] in ("pair", "quorum")


def test_machines_spread_over_private_subnets_without_public_ips(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full", quorum=3, tessera=4)
    private = run.outputs["subnetIds"]["private"]
    by_role: dict[str, list[str]] = {}
    for instance in sorted(run.of_type(INSTANCE), key=lambda i: i.name):
        # A kept interface never gets a public IP (EC2 only auto-assigns to a new eth0).
        assert instance.inputs.get("associatePublicIpAddress", False) is False
        assert machine_subnet(run, instance) in private
        by_role.setdefault(instance.inputs["tags"]["quorum-ha/role"], []).append(
            machine_subnet(run, instance)
        )
    for subnets in by_role.values():
        assert set(subnets) == set(private)  # every role lives in every AZ
        assert subnets[0] != subnets[1]  # neighbours land in different AZs


def test_machines_are_x86_amazon_linux_with_no_key_pair(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    assert "aws:ssm/getParameter:getParameter" in run.invokes
    assert "x86_64" in AMI_PARAMETER and "al2023" in AMI_PARAMETER
    for instance in run.of_type("aws:ec2/instance:Instance"):
        assert instance.inputs["ami"] == "ami-0123456789abcdef0"
        assert instance.inputs["instanceType"] == "m6i.large"
        assert "keyName" not in instance.inputs
        # Neither a newer AMI nor new user data may restart every machine in one `pulumi up`.
        assert "ami" in instance.ignore_changes
        assert "userDataBase64" in instance.ignore_changes


def test_every_machine_recovers_automatically(offline: Callable[..., OfflineRun]) -> None:
    run = offline("full")
    instances = {i.id: i for i in run.of_type("aws:ec2/instance:Instance")}
    alarms = [
        a
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.inputs.get("metricName") == "StatusCheckFailed_System"
    ]
    assert {a.inputs["dimensions"]["InstanceId"] for a in alarms} == set(instances)
    (topic,) = run.of_type("aws:sns/topic:Topic")
    for alarm in alarms:
        # It recovers the machine and tells the operator it did (issue 12: machines).
        assert alarm.inputs["alarmActions"] == [
            "arn:aws:automate:us-east-1:ec2:recover",
            topic.state["arn"],
        ]
        assert alarm.inputs["okActions"] == [topic.state["arn"]]
    for instance in instances.values():
        assert instance.inputs["maintenanceOptions"] == {"autoRecovery": "default"}


def test_data_volume_sits_in_its_machines_az_and_is_named_in_the_boot(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    volumes = {v.id: v for v in run.of_type("aws:ebs/volume:Volume")}
    instances = {i.id: i for i in run.of_type("aws:ec2/instance:Instance")}
    for attachment in run.of_type("aws:ec2/volumeAttachment:VolumeAttachment"):
        volume = volumes[attachment.inputs["volumeId"]]
        instance = instances[attachment.inputs["instanceId"]]
        assert attachment.inputs["deviceName"] == "/dev/sdf"
        assert volume.inputs["availabilityZone"].startswith("us-east-1")
        boot_env = instance_boot_env(instance.inputs["userDataBase64"])
        assert f'DATA_VOLUME_ID="{volume.id}"' in boot_env


def instance_boot_env(user_data: str) -> str:
    """boot.env of packed user data (base64 of gzip, as EC2 gets it)."""
    from tests.inspection import cloud_config_files

    return cloud_config_files(user_data)["/etc/quorum-ha/boot.env"]


def test_each_machine_has_its_own_role_with_session_manager(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    profiles = run.of_type("aws:iam/instanceProfile:InstanceProfile")
    assert len({p.inputs["role"] for p in profiles}) == len(profiles)
    instances = run.of_type("aws:ec2/instance:Instance")
    assert sorted(i.inputs["iamInstanceProfile"] for i in instances) == sorted(
        p.state["name"] for p in profiles
    )
    attachments = run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert len(attachments) == len(profiles)
    assert {a.inputs["policyArn"] for a in attachments} == {
        f"arn:aws:iam::aws:policy/{SSM_CORE_POLICY}"
    }
    for role in run.of_type("aws:iam/role:Role"):
        trust = json.loads(role.inputs["assumeRolePolicy"])
        (statement,) = trust["Statement"]
        assert statement["Action"] == "sts:AssumeRole"


def test_only_quorum_machines_of_setups_2_and_3_may_pull_the_proxy_image(
    offline: Callable[..., OfflineRun],
) -> None:
    for setup, expected in (("pair", set()), ("full", {"quorum"})):
        run = offline(setup)
        pulling = set()
        for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
            if "-proxy-" in policy.name:
                continue
            sids = {s["Sid"] for s in json.loads(policy.inputs["policy"])["Statement"]}
            if "PullProxyImage" in sids:
                pulling.add(policy.name.split("-")[-3])
        assert pulling == expected, setup


def test_machine_policy_scopes_secrets_and_key() -> None:
    policy = machine_policy(
        secrets=["arn:s2", "arn:s1"],
        key="arn:key",
        logs="arn:logs:group",
        repository=None,
        region="eu-west-1",
    )
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["ReadOwnSecrets"]["Resource"] == ["arn:s1", "arn:s2"]
    assert statements["DecryptOwnSecrets"]["Resource"] == "arn:key"
    assert statements["DecryptOwnSecrets"]["Condition"]["StringEquals"] == {
        "kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"
    }
    assert statements["WriteOwnLogs"]["Resource"] == ["arn:logs:group", "arn:logs:group:*"]
    assert "PullProxyImage" not in statements
    wildcard = [s for s in policy["Statement"] if s["Resource"] == "*"]
    assert [s["Action"] for s in wildcard] == ["cloudwatch:PutMetricData"]
    assert wildcard[0]["Condition"]["StringLike"]["cloudwatch:namespace"] == [
        "QuorumHA",
        "QuorumHA/*",
    ]


@pytest.mark.parametrize("setup", ["pair", "full", "tessera"])
def test_ha_enodes_name_each_quorum_machine_by_its_kept_interface_ip(
    offline: Callable[..., OfflineRun], setup: str
) -> None:
    run = offline(setup)
    address = {}
    for instance in run.of_type(INSTANCE):
        if runs_quorum(instance):
            interface = kept_interface(run, instance)
            assert interface is not None, instance.name
            address[instance.inputs["tags"]["Name"]] = interface.state["privateIp"]
    names = run.outputs["nodeDnsNames"]
    quorum = names.get("quorum") or names["pair"]
    hosts = [urlsplit(enode).hostname for enode in run.outputs["haEnodes"]]
    assert all(isinstance(ipaddress.ip_address(str(h)), ipaddress.IPv4Address) for h in hosts)
    assert hosts == [address[name] for name in quorum]
    # The DNS form stays an output of its own, for peers inside this VPC.
    by_name = run.outputs["haEnodeDnsNames"]
    assert [urlsplit(enode).hostname for enode in by_name] == quorum
    keys = [enode.split("@")[0] for enode in run.outputs["haEnodes"]]
    assert [enode.split("@")[0] for enode in by_name] == keys


@pytest.mark.parametrize("setup", ["pair", "full"])
def test_quorum_machines_boot_on_a_kept_interface_that_carries_their_groups(
    offline: Callable[..., OfflineRun], setup: str
) -> None:
    run = offline(setup)
    groups = run.outputs["securityGroupIds"]
    expected = [groups["quorum"], groups["tessera"]] if setup == "pair" else [groups["quorum"]]
    records = {r.inputs["name"]: r for r in run.of_type("aws:route53/record:Record")}
    for instance in run.of_type(INSTANCE):
        interface = kept_interface(run, instance)
        if not runs_quorum(instance):
            assert interface is None and "subnetId" in instance.inputs
            continue
        assert interface is not None
        assert instance.inputs["primaryNetworkInterface"].get("deleteOnTermination") is False
        # Subnet and groups belong to the interface; EC2 refuses them on the instance too.
        assert "subnetId" not in instance.inputs and "vpcSecurityGroupIds" not in instance.inputs
        assert interface.inputs["securityGroups"] == expected
        assert interface.inputs["subnetId"] in run.outputs["subnetIds"]["private"]
        record = records[instance.inputs["tags"]["Name"]]
        assert record.inputs["records"] == [interface.state["privateIp"]]


def test_a_quorum_machines_address_does_not_change_with_its_instance(
    offline: Callable[..., OfflineRun],
) -> None:
    before = offline("pair")
    after = offline("pair", quorumInstanceType="m6i.xlarge")
    assert {i.inputs["instanceType"] for i in after.of_type(INSTANCE)} == {"m6i.xlarge"}
    interfaces = {i.name: i.inputs for i in before.of_type(INTERFACE)}
    assert len(interfaces) == 2
    # Nothing of the instance (type, AMI, user data) is an input of the interface.
    assert {i.name: i.inputs for i in after.of_type(INTERFACE)} == interfaces
    for inputs in interfaces.values():
        assert not {"instanceType", "ami", "userDataBase64", "attachments"} & set(inputs)
    assert after.outputs["haEnodes"] == before.outputs["haEnodes"]


def test_quorum_machines_are_deleted_before_their_replacement_is_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An interface attaches to one instance at a time: Pulumi's default (create the new
    # instance, then delete the old one) could never attach it to the new one.
    seen: dict[str, bool] = {}
    register = tools.offline._RecordingMonitor.RegisterResource

    def recording(self: Any, request: Any) -> Any:
        if request.type == INSTANCE:
            seen[request.name] = bool(request.deleteBeforeReplace)
        return register(self, request)

    monkeypatch.setattr(tools.offline._RecordingMonitor, "RegisterResource", recording)
    run = run_offline(stack_config("full"))
    for instance in run.of_type(INSTANCE):
        assert seen[instance.name] is runs_quorum(instance), instance.name


@pytest.mark.parametrize("setup", ["pair", "full", "tessera"])
def test_a_machines_name_exists_only_once_its_machine_does(
    offline: Callable[..., OfflineRun], setup: str
) -> None:
    # The proxy's readiness does not wait for names that do not resolve yet (a first deploy
    # completes before the machines, which come after the database); a record created with the
    # kept interface, long before its machine, would hold the first deploy on a dead upstream.
    run = offline(setup)
    instances = {i.name: i for i in run.of_type("aws:ec2/instance:Instance")}
    records = run.of_type("aws:route53/record:Record")
    machine_records = [
        r for r in records if r.name.removesuffix("-dns") + "-instance" in instances
    ]
    assert len(machine_records) == len(instances) >= 2
    for record in machine_records:
        instance = instances[record.name.removesuffix("-dns") + "-instance"]
        assert instance.urn in record.dependencies, (record.name, record.dependencies)
