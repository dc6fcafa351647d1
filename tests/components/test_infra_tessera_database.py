"""TesseraDatabase: Multi-AZ primary with TLS forced, a replica, and the JDBC URL naming both."""

from __future__ import annotations

from collections.abc import Callable

from components.tessera_database import jdbc_url
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
