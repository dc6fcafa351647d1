"""A group of machines of one role (pair, quorum or tessera): EC2 x86_64 in private subnets.

Each machine gets its own role (it reads only its own secrets), an encrypted data volume, a
stable name in the private zone, automatic recovery, and user data rendered by `node_bootstrap`
from a `NodeBootContext` that carries names and ARNs only. Machines that run Quorum also keep
their private IP across replacements (a network interface of their own), because the network's
other nodes name them by IP in their static and permissioned nodes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component, trust_policy
from domain.metrics import EC2_SYSTEM_CHECK, HOST_NAMESPACE
from domain.paths import DATA_DEVICE_NAME
from domain.user_data import UserDataTooLargeError
from node_bootstrap import render_packed_user_data
from node_bootstrap.context import NodeBootContext

# Amazon Linux 2023, x86_64: Tessera publishes no arm64 image.
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
SSM_CORE_POLICY = "AmazonSSMManagedInstanceCore"  # AWS-managed, in the stack's partition
# docs/runbooks.md's section on machine status checks (a test checks that it exists).
RECOVER_RUNBOOK_ANCHOR = "machine-status-check-failed"


def _packed_user_data(ctx: NodeBootContext) -> str:
    try:
        return render_packed_user_data(ctx)
    except UserDataTooLargeError as error:
        # RunError: the engine shows the one line, not a traceback (also from inside apply).
        raise pulumi.RunError(str(error)) from None


@dataclass
class MachineSpec:
    """One machine: its name, what it boots from, and the secrets it may read."""

    dns_name: str
    boot_context: pulumi.Input[NodeBootContext]
    secret_arns: Sequence[pulumi.Input[str]]


@dataclass
class NodesArgs:
    role: str  # pair | quorum | tessera
    instance_type: str
    machines: Sequence[MachineSpec]
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_ids: Sequence[pulumi.Input[str]]
    zone_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    role_path: str  # the KMS key lets roles under this path decrypt through Secrets Manager
    log_group_name: str
    region: str
    # Quorum machines of setups 2 and 3 pull the IPC proxy image from this repository.
    ecr_repository_arn: pulumi.Input[str] | None = None
    # Boot each machine on a network interface the program keeps, so its IP outlives it.
    fixed_address: bool = False
    data_volume_gib: int = 100
    log_retention_days: int = 90
    # The operator's alarm topic: the recover alarms tell it when they act.
    alarm_topic_arn: pulumi.Input[str] | None = None


class Nodes(Component[NodesArgs]):
    """EC2 machines of one role, with their roles, volumes, DNS names and recovery alarms."""

    instance_ids: list[pulumi.Output[str]]
    private_ips: list[pulumi.Output[str]]
    role_arns: list[pulumi.Output[str]]
    dns_names: list[str]
    log_group_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: NodesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:nodes:Nodes", name, args, opts)
        ami = aws.ssm.get_parameter(name=AMI_PARAMETER, opts=pulumi.InvokeOptions(parent=self))
        self._ami = ami.value
        self._partition = aws.get_partition(opts=pulumi.InvokeOptions(parent=self)).partition
        self.log_group_arn = self._create_log_group()
        self.instance_ids = []
        self.private_ips = []
        self.role_arns = []
        self.dns_names = [m.dns_name for m in args.machines]
        for index, machine in enumerate(args.machines):
            self._create_machine(index, machine)
        self.register_outputs(
            {
                "instanceIds": self.instance_ids,
                "privateIps": self.private_ips,
                "roleArns": self.role_arns,
                "dnsNames": self.dns_names,
            }
        )

    def _create_log_group(self) -> pulumi.Output[str]:
        args = self._args
        group = self._log_group(
            self._name, args.log_group_name, args.kms_key_arn, args.log_retention_days
        )
        return group.arn

    def _create_machine(self, index: int, machine: MachineSpec) -> None:
        args = self._args
        node = f"{self._name}-{index}"
        role = self._create_role(node, machine)
        profile = aws.iam.InstanceProfile(
            f"{node}-profile", role=role.name, path=args.role_path, opts=self._opts()
        )
        subnet_id = pulumi.Output.from_input(args.subnet_ids).apply(
            lambda ids: ids[index % len(ids)]
        )
        zone = aws.ec2.get_subnet_output(
            id=subnet_id, opts=pulumi.InvokeOutputOptions(parent=self)
        ).availability_zone
        volume = aws.ebs.Volume(
            f"{node}-data",
            availability_zone=zone,
            size=args.data_volume_gib,
            type="gp3",
            encrypted=True,
            kms_key_id=args.kms_key_arn,
            tags={"Name": f"{machine.dns_name}-data"},
            opts=self._opts(),
        )
        # The volume outlives its machine (replacement keeps the chain data): it is created
        # first, in the subnet's AZ, and the boot finds it by id.
        user_data = pulumi.Output.all(machine.boot_context, volume.id).apply(
            lambda v: _packed_user_data(replace(v[0], data_volume_id=v[1]))
        )
        placement, address = self._placement(node, machine, subnet_id)
        instance = aws.ec2.Instance(
            f"{node}-instance",
            ami=self._ami,
            instance_type=args.instance_type,
            **placement,
            iam_instance_profile=profile.name,
            # One gzip over the whole cloud-config: EC2's 16 KiB counts the decoded bytes.
            user_data_base64=user_data,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                # Every container runs with the host network: no extra hop to allow.
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True,
                kms_key_id=args.kms_key_arn,
                volume_type="gp3",
                volume_size=30,
            ),
            maintenance_options=aws.ec2.InstanceMaintenanceOptionsArgs(auto_recovery="default"),
            monitoring=True,
            disable_api_termination=False,
            tags={"Name": machine.dns_name, "quorum-ha/role": args.role},
            # Neither a newer AMI nor new user data may touch every machine in one update: a
            # user-data change would stop and start them all together, and cloud-init would not
            # re-run on the same instance anyway. Roll machines on purpose, one at a time
            # (docs/runbooks.md, "Replacing a node").
            # A kept interface attaches to one instance at a time: the old instance must be gone
            # before its replacement boots on it (Pulumi creates the new one first by default).
            opts=self._opts(
                ignore_changes=["ami", "userDataBase64"], delete_before_replace=args.fixed_address
            ),
        )
        address = address or instance.private_ip
        aws.ec2.VolumeAttachment(
            f"{node}-data-attachment",
            device_name=DATA_DEVICE_NAME,
            volume_id=volume.id,
            instance_id=instance.id,
            opts=self._opts(),
        )
        aws.route53.Record(
            f"{node}-dns",
            zone_id=args.zone_id,
            name=machine.dns_name,
            type="A",
            ttl=60,
            records=[address],
            # The name appears with its machine, not with the kept interface: the proxy's
            # readiness does not wait for names that do not resolve yet, so a first deploy's
            # proxy tasks become ready before the machines (which wait for the database) exist.
            opts=self._opts(depends_on=[instance]),
        )
        aws.cloudwatch.MetricAlarm(
            f"{node}-recover",
            alarm_description=(
                f"Recover {machine.dns_name} when its host fails. Runbook: "
                f"docs/runbooks.md#{RECOVER_RUNBOOK_ANCHOR}"
            ),
            namespace=EC2_SYSTEM_CHECK.namespace,
            metric_name=EC2_SYSTEM_CHECK.name,
            dimensions={"InstanceId": instance.id},
            statistic="Maximum",
            period=60,
            evaluation_periods=2,
            threshold=1,
            comparison_operator="GreaterThanOrEqualToThreshold",
            alarm_actions=[
                f"arn:{self._partition}:automate:{args.region}:ec2:recover",
                *([args.alarm_topic_arn] if args.alarm_topic_arn is not None else []),
            ],
            ok_actions=[args.alarm_topic_arn] if args.alarm_topic_arn is not None else None,
            opts=self._opts(),
        )
        self.instance_ids.append(instance.id)
        self.private_ips.append(address)
        self.role_arns.append(role.arn)

    def _placement(
        self, node: str, machine: MachineSpec, subnet_id: pulumi.Output[str]
    ) -> tuple[dict[str, Any], pulumi.Output[str] | None]:
        """The instance's network arguments, and its kept IP when it has one."""
        args = self._args
        if not args.fixed_address:
            return {
                "subnet_id": subnet_id,
                "vpc_security_group_ids": list(args.security_group_ids),
                "associate_public_ip_address": False,
            }, None
        # EC2 assigns the IP from the subnet (no clash with what else lives there); it stays the
        # interface's until the interface is deleted, whatever happens to the instance.
        interface = aws.ec2.NetworkInterface(
            f"{node}-eni",
            subnet_id=subnet_id,
            # With a network interface given, RunInstances takes the groups from it only.
            security_groups=list(args.security_group_ids),
            description=f"{machine.dns_name}: its address outlives its instances",
            tags={"Name": machine.dns_name},
            opts=self._opts(),
        )
        # pulumi-aws 7.51.1 Instance.primary_network_interface (network_interface is deprecated).
        # RunInstances InstanceNetworkInterfaceSpecification: an existing interface gets no
        # public IP and cannot be deleted on termination (only one EC2 creates can).
        return {
            "primary_network_interface": aws.ec2.InstancePrimaryNetworkInterfaceArgs(
                network_interface_id=interface.id, delete_on_termination=False
            )
        }, interface.private_ip

    def _create_role(self, node: str, machine: MachineSpec) -> aws.iam.Role:
        args = self._args
        role = aws.iam.Role(
            f"{node}-role",
            path=args.role_path,
            assume_role_policy=trust_policy("ec2.amazonaws.com"),
            opts=self._opts(),
        )
        aws.iam.RolePolicyAttachment(
            f"{node}-ssm",
            role=role.name,
            policy_arn=f"arn:{self._partition}:iam::aws:policy/{SSM_CORE_POLICY}",
            opts=self._opts(),
        )
        policy = pulumi.Output.all(
            secrets=pulumi.Output.all(*machine.secret_arns),
            key=args.kms_key_arn,
            logs=self.log_group_arn,
            repository=args.ecr_repository_arn,
        ).apply(lambda v: json.dumps(machine_policy(region=args.region, **v)))
        aws.iam.RolePolicy(f"{node}-policy", role=role.id, policy=policy, opts=self._opts())
        return role


def machine_policy(
    *, secrets: Sequence[str], key: str, logs: str, repository: str | None, region: str
) -> dict[str, Any]:
    """What one machine may do: read its own secrets, write its logs, pull the proxy image."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadOwnSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            "Resource": sorted(secrets),
        },
        {
            "Sid": "DecryptOwnSecrets",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key,
            "Condition": {
                "StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
            },
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [logs, f"{logs}:*"],
        },
        {
            "Sid": "PublishMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            # PutMetricData has no resource type; the namespace condition scopes it.
            "Resource": "*",
            "Condition": {
                "StringLike": {"cloudwatch:namespace": [HOST_NAMESPACE, f"{HOST_NAMESPACE}/*"]}
            },
        },
    ]
    if repository:
        statements += [
            {
                "Sid": "PullProxyImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": repository,
            },
            {
                "Sid": "LogInToEcr",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                # GetAuthorizationToken has no resource type.
                "Resource": "*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}
