"""The one database every Tessera of the client node shares: RDS PostgreSQL, Multi-AZ, with a
read replica that an operator can promote, and the JDBC URL that names both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.settings.database import DatabaseSettings
from domain.database import DB_NAME, jdbc_url
from domain.ports import DB_PORT


@dataclass
class CrossRegionReplica:
    """Where a replica in another region lives; its VPC is peered with the machines' VPC."""

    region: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    kms_key_arn: pulumi.Input[str]  # a replica of the multi-Region customer key
    client_cidr: pulumi.Input[str]  # the machines' VPC, reaching the replica over peering


@dataclass
class TesseraDatabaseArgs:
    name_prefix: str
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    username: str
    password: pulumi.Input[str]
    # Class, storage, engine, backups; replica_multi_az: a standby for the replica too (promoted,
    # it is the primary; changed in place, no replace). The replica's region and VPC arrive as
    # cross_region_replica.
    settings: DatabaseSettings
    deletion_protection: bool
    # A throwaway stack (domain/stacks.py) deletes the database without a final snapshot,
    # whatever its deletion protection says.
    non_production: bool
    cross_region_replica: CrossRegionReplica | None = None


class TesseraDatabase(pulumi.ComponentResource):
    """PostgreSQL primary (Multi-AZ, TLS forced, KMS-encrypted) and its read replica."""

    primary_address: pulumi.Output[str]
    replica_address: pulumi.Output[str]
    jdbc_url: pulumi.Output[str]
    # For alarms and event subscriptions: RDS metrics and events name instances by identifier.
    primary_identifier: pulumi.Output[str]
    replica_identifier: pulumi.Output[str]
    replica_region: str | None  # None: the stack's region

    def __init__(
        self, name: str, args: TesseraDatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:tessera_database:TesseraDatabase", name, None, opts)
        self._name = name
        self._args = args
        self._family = f"postgres{args.settings.engine_version.split('.')[0]}"
        # A pinned minor (16.4) is the operator's: once RDS upgraded it automatically, the
        # provider would plan a downgrade RDS refuses (hashicorp/terraform-provider-aws#39579).
        # A bare major (16) lets RDS keep the newest minor.
        self._auto_minor_version_upgrade = "." not in args.settings.engine_version
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.subnet_ids,
            description="Tessera database: private subnets",
            opts=pulumi.ResourceOptions(parent=self),
        )
        parameters = self._create_parameter_group(None)
        primary = self._create_primary(subnet_group, parameters)
        replica = self._create_replica(primary, parameters)
        self.primary_address = primary.address
        self.replica_address = replica.address
        self.primary_identifier = primary.identifier
        self.replica_identifier = replica.identifier
        remote = args.cross_region_replica
        self.replica_region = remote.region if remote is not None else None
        self.jdbc_url = pulumi.Output.all(primary.address, replica.address).apply(
            lambda hosts: jdbc_url(hosts[0], hosts[1])
        )
        self.register_outputs(
            {
                "primaryAddress": self.primary_address,
                "replicaAddress": self.replica_address,
                "jdbcUrl": self.jdbc_url,
            }
        )

    def _create_parameter_group(self, region: str | None) -> aws.rds.ParameterGroup:
        suffix = "-replica" if region else ""
        return aws.rds.ParameterGroup(
            f"{self._name}-params{suffix}",
            family=self._family,
            description="Tessera database: TLS only",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_connections", value="1"),
            ],
            region=region,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_primary(
        self, subnet_group: aws.rds.SubnetGroup, parameters: aws.rds.ParameterGroup
    ) -> aws.rds.Instance:
        args = self._args
        protect = args.deletion_protection
        identifier = f"{args.name_prefix}-tessera"
        non_production = args.non_production
        return aws.rds.Instance(
            f"{self._name}-primary",
            identifier=identifier,
            engine="postgres",
            engine_version=args.settings.engine_version,
            instance_class=args.settings.instance_class,
            allocated_storage=args.settings.allocated_storage,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            multi_az=True,
            db_name=DB_NAME,
            username=args.username,
            password=pulumi.Output.secret(args.password),
            port=DB_PORT,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[args.security_group_id],
            parameter_group_name=parameters.name,
            publicly_accessible=False,
            backup_retention_period=args.settings.backup_retention_days,
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=self._auto_minor_version_upgrade,
            # ModifyDBInstance refuses a new major EngineVersion without it; the provider sends
            # it only with an engine_version change (terraform-provider-aws, instance update).
            allow_major_version_upgrade=True,
            # In-place changes (instance class, pinned minor, major) restart or fail over the
            # database: they wait for the maintenance window unless the operator applies them
            # now (docs/runbooks.md, "Upgrading PostgreSQL").
            apply_immediately=False,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=args.kms_key_arn,
            deletion_protection=protect,
            skip_final_snapshot=non_production,
            final_snapshot_identifier=None if non_production else f"{identifier}-final",
            opts=pulumi.ResourceOptions(parent=self, protect=protect, retain_on_delete=protect),
        )

    def _create_replica(
        self, primary: aws.rds.Instance, parameters: aws.rds.ParameterGroup
    ) -> aws.rds.Instance:
        args = self._args
        protect = args.deletion_protection
        common: dict[str, Any] = {
            "identifier": f"{args.name_prefix}-tessera-replica",
            "instance_class": args.settings.instance_class,
            "storage_type": "gp3",
            "storage_encrypted": True,
            "publicly_accessible": False,
            # CreateDBInstanceReadReplica MultiAZ: the replica gets its own standby, whatever
            # the source's deployment.
            "multi_az": args.settings.replica_multi_az,
            # Kept so a promoted replica starts life with backups already on (PostgreSQL 14.1+).
            "backup_retention_period": args.settings.backup_retention_days,
            "auto_minor_version_upgrade": self._auto_minor_version_upgrade,
            "apply_immediately": False,
            "performance_insights_enabled": True,
            "deletion_protection": protect,
            "skip_final_snapshot": True,
            "opts": pulumi.ResourceOptions(parent=self, protect=protect, retain_on_delete=protect),
        }
        remote = args.cross_region_replica
        if remote is None:
            return aws.rds.Instance(
                f"{self._name}-replica",
                replicate_source_db=primary.identifier,
                # No kms_key_id: CreateDBInstanceReadReplica says a same-region replica always
                # uses its source's key, and RDS refuses one (InvalidParameterCombination).
                performance_insights_kms_key_id=args.kms_key_arn,
                vpc_security_group_ids=[args.security_group_id],
                parameter_group_name=parameters.name,
                **common,
            )
        remote_subnets = aws.rds.SubnetGroup(
            f"{self._name}-replica-subnets",
            subnet_ids=remote.subnet_ids,
            description="Tessera database replica: private subnets",
            region=remote.region,
            opts=pulumi.ResourceOptions(parent=self),
        )
        remote_group = aws.ec2.SecurityGroup(
            f"{self._name}-replica-sg",
            vpc_id=remote.vpc_id,
            description="Tessera database replica: PostgreSQL from the peered VPC of the machines",
            region=remote.region,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Security groups cannot reference a group across regions: admit the peered VPC.
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-replica-5432-from-peer",
            security_group_id=remote_group.id,
            ip_protocol="tcp",
            from_port=DB_PORT,
            to_port=DB_PORT,
            cidr_ipv4=remote.client_cidr,
            description="PostgreSQL from the VPC of the machines, over peering",
            region=remote.region,
            opts=pulumi.ResourceOptions(parent=self),
        )
        remote_parameters = self._create_parameter_group(remote.region)
        return aws.rds.Instance(
            f"{self._name}-replica",
            replicate_source_db=primary.arn,
            # Another region needs a key of that region (CreateDBInstanceReadReplica KmsKeyId).
            kms_key_id=remote.kms_key_arn,
            performance_insights_kms_key_id=remote.kms_key_arn,
            db_subnet_group_name=remote_subnets.name,
            vpc_security_group_ids=[remote_group.id],
            parameter_group_name=remote_parameters.name,
            region=remote.region,
            **common,
        )
