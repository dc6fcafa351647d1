"""TesseraDatabase: Multi-AZ primary with TLS forced, a replica, and the JDBC URL naming both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain.database import jdbc_url
from tools.offline import DeclaredResource, OfflineRun


def split(run: OfflineRun) -> tuple[DeclaredResource, DeclaredResource]:
    databases = run.of_type("aws:rds/instance:Instance")
    (primary,) = [d for d in databases if "replicateSourceDb" not in d.inputs]
    (replica,) = [d for d in databases if "replicateSourceDb" in d.inputs]
    return primary, replica


def test_jdbc_url_lists_primary_then_replica() -> None:
    url = jdbc_url("a.rds", "b.rds")
    assert url == (
        "jdbc:postgresql://a.rds:5432,b.rds:5432/tessera?targetServerType=primary&sslmode=require"
    )


def test_primary_is_multi_az_with_backups_and_forced_tls(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    primary, _ = split(run)
    assert primary.inputs["multiAz"] is True
    assert primary.inputs["backupRetentionPeriod"] >= 7
    assert primary.inputs["publiclyAccessible"] is False
    assert primary.inputs["engine"] == "postgres"
    (parameters,) = [p for p in run.of_type("aws:rds/parameterGroup:ParameterGroup")]
    assert {"name": "rds.force_ssl", "value": "1"} in [
        {k: p[k] for k in ("name", "value")} for p in parameters.inputs["parameters"]
    ]
    assert primary.inputs["parameterGroupName"] == parameters.state["name"]
    (subnets,) = run.of_type("aws:rds/subnetGroup:SubnetGroup")
    assert primary.inputs["dbSubnetGroupName"] == subnets.state["name"]
    assert subnets.inputs["subnetIds"] == run.outputs["subnetIds"]["private"]


def test_replica_follows_the_primary_in_the_same_region(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    primary, replica = split(run)
    assert replica.inputs["replicateSourceDb"] == primary.inputs["identifier"]
    assert replica.inputs["storageEncrypted"] is True
    assert replica.inputs["vpcSecurityGroupIds"] == primary.inputs["vpcSecurityGroupIds"]
    assert "region" not in replica.inputs
    assert run.outputs["jdbcUrl"] == jdbc_url(primary.state["address"], replica.state["address"])


def test_cross_region_replica_has_its_own_key_network_and_peering(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full", replicaRegion="us-west-2")
    primary, replica = split(run)
    assert replica.inputs["region"] == "us-west-2"
    assert replica.inputs["replicateSourceDb"] == primary.state["arn"]
    (key,) = run.of_type("aws:kms/key:Key")
    (replica_key,) = run.of_type("aws:kms/replicaKey:ReplicaKey")
    assert key.inputs["multiRegion"] is True
    assert replica_key.inputs["region"] == "us-west-2"
    assert replica_key.inputs["primaryKeyArn"] == key.state["arn"]
    assert replica.inputs["kmsKeyId"] == replica_key.state["arn"]
    vpcs = run.of_type("aws:ec2/vpc:Vpc")
    assert sorted(v.inputs.get("region", "home") for v in vpcs) == ["home", "us-west-2"]
    (remote_vpc,) = [v for v in vpcs if v.inputs.get("region") == "us-west-2"]
    assert remote_vpc.inputs["cidrBlock"] == "10.1.0.0/16"
    (peering,) = run.of_type("aws:ec2/vpcPeeringConnection:VpcPeeringConnection")
    assert peering.inputs["peerRegion"] == "us-west-2"
    routes = [
        r for r in run.of_type("aws:ec2/route:Route") if "vpcPeeringConnectionId" in r.inputs
    ]
    destinations = sorted(r.inputs["destinationCidrBlock"] for r in routes)
    assert destinations == ["10.0.0.0/16", "10.0.0.0/16", "10.1.0.0/16", "10.1.0.0/16"]
    (remote_rule,) = [
        r
        for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("region") == "us-west-2"
    ]
    assert (
        remote_rule.inputs["cidrIpv4"] == "10.0.0.0/16" and remote_rule.inputs["fromPort"] == 5432
    )
    # The DR VPC runs no machines: no NAT, no endpoints there.
    assert all(
        n.inputs.get("region") != "us-west-2" for n in run.of_type("aws:ec2/natGateway:NatGateway")
    )
    assert run.outputs["dbEndpoints"]["replica"].endswith(".us-west-2.rds.amazonaws.com")


def test_same_region_replica_names_no_kms_key(offline: Callable[..., OfflineRun]) -> None:
    # CreateDBInstanceReadReplica: a same-region replica always uses its source's key, and a
    # KmsKeyId there is refused with InvalidParameterCombination.
    _, replica = split(offline("pair"))
    assert "region" not in replica.inputs
    assert "kmsKeyId" not in replica.inputs


def test_cross_region_replica_is_encrypted_with_the_key_replica_in_its_region(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair", replicaRegion="us-west-2")
    _, replica = split(run)
    (replica_key,) = run.of_type("aws:kms/replicaKey:ReplicaKey")
    assert replica.inputs["kmsKeyId"] == replica_key.state["arn"]
    assert replica_key.inputs["region"] == replica.inputs["region"] == "us-west-2"


@pytest.mark.parametrize(
    ("stack", "extra", "multi_az"),
    [
        ("dev", {}, False),
        ("dev", {"replicaMultiAz": True}, True),
        ("qa", {"deletionProtection": None}, True),
        ("qa", {"deletionProtection": None, "replicaRegion": "us-west-2"}, True),
        ("qa", {"deletionProtection": None, "replicaMultiAz": False}, False),
    ],
)
def test_replica_multi_az_follows_the_setting(
    offline: Callable[..., OfflineRun], stack: str, extra: dict[str, Any], multi_az: bool
) -> None:
    # A promoted replica becomes the primary: Multi-AZ from the start, not after a failover.
    _, replica = split(offline("pair", stack=stack, **extra))
    assert replica.inputs.get("multiAz", False) is multi_az


# Inputs that replace a stateful resource when they change (pulumi-aws, from the Terraform
# provider's ForceNew schema fields; identifier and subnet group kept as they move the data).
REPLACE_ON_CHANGE: dict[str, tuple[str, ...]] = {
    "aws:kms/key:Key": (
        "multiRegion",
        "keyUsage",
        "customerMasterKeySpec",
        "customKeyStoreId",
        "xksKeyId",
    ),
    "aws:rds/instance:Instance": (
        "identifier",
        "engine",
        "kmsKeyId",
        "storageEncrypted",
        "dbName",
        "username",
        "availabilityZone",
        "dbSubnetGroupName",
        "replicateSourceDb",
    ),
    "aws:secretsmanager/secret:Secret": ("name", "namePrefix"),
    "aws:ebs/volume:Volume": ("availabilityZone", "encrypted", "kmsKeyId", "snapshotId"),
    "aws:ecr/repository:Repository": ("name", "encryptionConfigurations"),
    "aws:route53/zone:Zone": ("name",),
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone", "vpcId"),
    # Every input of a random resource replaces it (and with it a key or password).
    "random:index/randomBytes:RandomBytes": ("*",),
    "random:index/randomPassword:RandomPassword": ("*",),
}


def replace_inputs(resource: DeclaredResource) -> dict[str, Any]:
    names = REPLACE_ON_CHANGE[resource.type]
    if names == ("*",):
        return resource.inputs
    return {name: resource.inputs.get(name) for name in names}


@pytest.mark.parametrize("setup", ["pair", "full"])
def test_adding_a_dr_replica_later_keeps_every_stateful_resource(
    offline: Callable[..., OfflineRun], setup: str
) -> None:
    """replicaRegion set on a living stack: the key, the database, the volumes, the secrets,
    the repository and the seeds keep their identity; only the read replica moves region."""
    before = offline(setup)
    after = offline(setup, replicaRegion="us-west-2")
    kept = {r.urn: r for r in after.resources}
    stateful = [r for r in before.resources if r.type in REPLACE_ON_CHANGE]
    assert {r.type for r in stateful} == set(REPLACE_ON_CHANGE)
    moved = []
    for resource in stateful:
        assert resource.urn in kept, f"{resource.urn} is deleted when DR is added"
        if replace_inputs(resource) != replace_inputs(kept[resource.urn]):
            moved.append(resource.name)
    (_, replica) = split(before)
    assert moved == [replica.name]  # a replica in another region is a new instance
    # Removing DR again deletes only what lives in the DR region.
    known = {r.urn for r in before.resources}
    dr_only = [r for r in after.resources if r.urn not in known and r.type in REPLACE_ON_CHANGE]
    assert "aws:ec2/vpc:Vpc" in {r.type for r in dr_only}
    assert all(r.inputs.get("region") == "us-west-2" for r in dr_only), dr_only


# --- final snapshot, engine upgrades ---------------------------------------------------------
@pytest.mark.parametrize(
    ("stack", "extra", "final_snapshot"),
    [
        ("dev", {}, False),
        # The final snapshot follows the one non-production rule (domain/stacks.py), not the
        # deletion protection a production stack may have turned off.
        ("dev", {"deletionProtection": True}, False),
        ("staging", {"deletionProtection": None}, True),
        ("staging", {"deletionProtection": False}, True),
        ("prod", {"deletionProtection": False}, True),
    ],
)
def test_only_non_production_stacks_delete_the_database_without_a_final_snapshot(
    offline: Callable[..., OfflineRun], stack: str, extra: dict[str, Any], final_snapshot: bool
) -> None:
    primary, replica = split(offline("pair", stack=stack, **extra))
    assert primary.inputs["skipFinalSnapshot"] is not final_snapshot
    if final_snapshot:
        assert primary.inputs["finalSnapshotIdentifier"] == f"{primary.inputs['identifier']}-final"
    else:
        assert "finalSnapshotIdentifier" not in primary.inputs
    # DeleteDBInstance SkipFinalSnapshot: true when deleting a read replica.
    assert replica.inputs["skipFinalSnapshot"] is True


def test_a_major_version_change_is_allowed_and_keeps_both_databases(
    offline: Callable[..., OfflineRun],
) -> None:
    # ModifyDBInstance refuses a major EngineVersion without AllowMajorVersionUpgrade; RDS
    # upgrades the in-Region replica with its primary, so the replica names no version.
    before = offline("pair", dbEngineVersion="16")
    after = offline("pair", dbEngineVersion="17")
    primary, replica = split(after)
    assert primary.inputs["allowMajorVersionUpgrade"] is True
    assert "engineVersion" not in replica.inputs
    kept = {r.urn: r for r in after.of_type("aws:rds/instance:Instance")}
    for database in before.of_type("aws:rds/instance:Instance"):
        assert replace_inputs(database) == replace_inputs(kept[database.urn]), database.name
    # Only the parameter group changes family (a replacement, create-before-delete).
    (old_group,) = before.of_type("aws:rds/parameterGroup:ParameterGroup")
    (new_group,) = after.of_type("aws:rds/parameterGroup:ParameterGroup")
    assert (old_group.inputs["family"], new_group.inputs["family"]) == ("postgres16", "postgres17")


def test_changes_wait_for_the_maintenance_window(offline: Callable[..., OfflineRun]) -> None:
    # An instance class change or a pinned minor upgrade restarts or fails over the database:
    # when is the operator's call (docs/runbooks.md "Upgrading PostgreSQL" says how to apply now).
    for database in split(offline("pair")):
        assert database.inputs.get("applyImmediately", False) is False


@pytest.mark.parametrize(("version", "auto_minor"), [("16", True), ("17", True), ("16.4", False)])
def test_a_pinned_minor_version_turns_automatic_minor_upgrades_off(
    offline: Callable[..., OfflineRun], version: str, auto_minor: bool
) -> None:
    # After RDS upgraded a pinned minor and state was refreshed, the provider would plan a
    # downgrade RDS refuses (hashicorp/terraform-provider-aws#39579).
    for database in split(offline("pair", dbEngineVersion=version)):
        assert database.inputs["autoMinorVersionUpgrade"] is auto_minor, database.name
