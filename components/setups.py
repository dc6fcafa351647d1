"""The seed's three setups, each composing the components as its diagram shows.

- `PairHA` (setup 1): N machines, each a Quorum + Tessera pair talking over the local tm.ipc.
- `FullHA` (setup 2): N Quorum machines and M Tessera machines; a proxy on each Quorum machine
  listens on tm.ipc and balances Q2T over every Tessera.
- `TesseraHA` (setup 3): one Quorum machine (with that IPC proxy) and M Tessera machines.

In all three the standalone proxy (ECS behind the NLB) fronts RPC 22000, third-party 9081 and P2P
9001, every Tessera shares one key pair and one database, and every Quorum one account.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.monitoring import (
    AlarmTopic,
    AlarmTopicArgs,
    MonitoredMachine,
    Monitoring,
    MonitoringArgs,
)
from components.network import (
    Network,
    NetworkArgs,
    SecurityGroups,
    SecurityGroupsArgs,
    VpcPeering,
    VpcPeeringArgs,
)
from components.nodes import MachineSpec, Nodes, NodesArgs
from components.proxy_service import ProxyService, ProxyServiceArgs
from components.settings import Settings
from components.settings.network import ExistingNetwork, NewNetwork, StackReferenceNetwork
from components.shared_keys import SharedKeys, SharedKeysArgs, readable_secret_arns
from components.tessera_database import (
    CrossRegionReplica,
    TesseraDatabase,
    TesseraDatabaseArgs,
)
from domain import naming
from domain.naming import PROJECT
from domain.ports import (
    QUORUM_P2P_PORT,
    QUORUM_RPC_PORT,
    TESSERA_P2P_PORT,
    TESSERA_THIRD_PARTY_PORT,
)
from domain.setups import (
    ROLES_BY_SETUP,
    SETUPS,
    MachineRole,
    runs_ipc_proxy,
    runs_quorum,
    runs_tessera,
)
from node_bootstrap import render_standalone_proxy_config
from node_bootstrap.context import NodeBootContext
from node_bootstrap.proxy import q2t_servers


@dataclass(frozen=True)
class MachineGroup:
    """Machines of one role: how many, on which instance type."""

    role: MachineRole
    count: int
    instance_type: str


def enode_url(public_key: str, host: str) -> str:
    # discport=0: the HA nodes know each other statically; discovery is not how they meet.
    return f"enode://{public_key}@{host}:{QUORUM_P2P_PORT}?discport=0"


class ClientNode(pulumi.ComponentResource):
    """What every setup shares; subclasses say which machines run what."""

    TYPE = "quorum-ha:setups:ClientNode"

    outputs: dict[str, pulumi.Input[Any]]

    def __init__(
        self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        # The type token is in every child's URN: aliased to the other setups' tokens, a change
        # of `setup` finds the keys, database, network and provider where they were.
        aliases = pulumi.ResourceOptions(
            aliases=[pulumi.Alias(type_=t) for t in SETUP_TYPES if t != self.TYPE]
        )
        super().__init__(self.TYPE, name, None, pulumi.ResourceOptions.merge(aliases, opts))
        self._name = name
        self._settings = settings
        stack = settings.stack
        self.zone_name = naming.zone_name(stack)
        self.log_prefix = naming.log_group_prefix(stack)
        self.node_role_path = naming.role_path(stack, "nodes")
        self.proxy_role_path = naming.role_path(stack, "proxy")
        self.provider = self._create_provider()
        self.groups = self.machine_groups()
        self.dns_names = {
            g.role: tuple(naming.node_dns_name(g.role, i, self.zone_name) for i in range(g.count))
            for g in self.groups
        }

        self.network = self._create_network()
        self.security_groups = SecurityGroups(
            f"{name}-sg",
            SecurityGroupsArgs(
                vpc_id=self.network.vpc_id,
                vpc_cidr=self.network.vpc_cidr,
                ingress=settings.ingress,
                q2t_over_network=any(map(runs_ipc_proxy, ROLES_BY_SETUP[settings.setup])),
            ),
            opts=self._child_opts(),
        )
        self.keys = self._create_keys()
        self.alarm_topic = AlarmTopic(
            f"{name}-alarm",
            AlarmTopicArgs(name_prefix=settings.name_prefix, alarms=settings.alarms),
            opts=self._child_opts(),
        )
        self.proxy = self._create_proxy()
        self.database = self._create_database()
        self.nodes = [self._create_nodes(group) for group in self.groups]
        self.monitoring = self._create_monitoring()
        self.outputs = self._collect_outputs()
        self.register_outputs(self.outputs)

    # --- what differs between setups -------------------------------------------------------
    def machine_groups(self) -> list[MachineGroup]:
        raise NotImplementedError

    @property
    def quorum_dns_names(self) -> tuple[str, ...]:
        return self._names_of(runs_quorum)

    @property
    def tessera_dns_names(self) -> tuple[str, ...]:
        return self._names_of(runs_tessera)

    def _names_of(self, runs: Callable[[str], bool]) -> tuple[str, ...]:
        """The DNS names of the machines that run something (one group does, in every setup)."""
        (names,) = [names for role, names in self.dns_names.items() if runs(role)]
        return names

    # --- shared composition ------------------------------------------------------------------
    def _child_opts(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, providers={"aws": self.provider})

    def _create_provider(self) -> aws.Provider:
        settings = self._settings
        tags = {
            **settings.tags,
            f"{PROJECT}:project": settings.project,
            f"{PROJECT}:stack": settings.stack,
            f"{PROJECT}:setup": settings.setup,
        }
        return aws.Provider(
            f"{self._name}-aws",
            region=settings.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_network(self) -> Network:
        settings = self._settings
        network = settings.network
        if isinstance(network, NewNetwork):
            args = NetworkArgs(
                zone_name=self.zone_name, cidr=network.cidr, az_count=network.az_count
            )
        elif isinstance(network, ExistingNetwork):
            args = NetworkArgs(
                zone_name=self.zone_name,
                vpc_id=network.vpc_id,
                private_subnet_ids=list(network.private_subnet_ids),
                public_subnet_ids=list(network.public_subnet_ids),
            )
        else:
            args = self._network_from_stack(network)
        args.instance_types = [g.instance_type for g in self.groups]
        return Network(f"{self._name}-network", args, opts=self._child_opts())

    def _network_from_stack(self, network: StackReferenceNetwork) -> NetworkArgs:
        reference = pulumi.StackReference(
            f"{self._name}-network-stack",
            stack_name=network.stack,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return NetworkArgs(
            zone_name=self.zone_name,
            vpc_id=reference.require_output(network.vpc_id_output),
            private_subnet_ids=reference.require_output(network.private_subnet_ids_output),
            public_subnet_ids=reference.get_output(network.public_subnet_ids_output).apply(
                lambda ids: list(ids or [])
            ),
        )

    def _create_keys(self) -> SharedKeys:
        settings = self._settings
        return SharedKeys(
            f"{self._name}-keys",
            SharedKeysArgs(
                name_prefix=settings.name_prefix,
                secret_prefix=naming.secret_prefix(settings.stack),
                quorum_node_count=len(self.quorum_dns_names),
                node_role_path=self.node_role_path,
                log_group_prefix=self.log_prefix,
                protect=settings.deletion_protection,
                secret_recovery_days=settings.secret_recovery_days,
                replica_region=settings.database.replica_region,
                existing=settings.keys,
            ),
            opts=self._child_opts(),
        )

    def _create_proxy(self) -> ProxyService:
        settings = self._settings
        internal = settings.proxy.internal_nlb
        # The public key lets the proxy's deep check ask each Tessera's GET /keys for it.
        config = self.keys.tessera_public_key.apply(self._proxy_config)
        return ProxyService(
            f"{self._name}-proxy",
            ProxyServiceArgs(
                name_prefix=settings.name_prefix,
                vpc_id=self.network.vpc_id,
                task_subnet_ids=self.network.private_subnet_ids,
                nlb_subnet_ids=(
                    self.network.private_subnet_ids if internal else self.network.public_subnet_ids
                ),
                nlb_security_group_id=self.security_groups.nlb_id,
                task_security_group_id=self.security_groups.proxy_id,
                kms_key_arn=self.keys.key_arn,
                log_group_name=naming.log_group_name(settings.stack, "proxy"),
                region=settings.region,
                role_path=self.proxy_role_path,
                proxy_config_json=config,
                settings=settings.proxy,
                deletion_protection=settings.deletion_protection,
                tls=settings.tls,
                metrics_agent=True,
            ),
            opts=self._child_opts(),
        )

    def _proxy_config(self, tessera_public_key: str | None = None) -> str:
        """The standalone proxy's config; without the key (what the alarms read of it: its
        upstreams and servers) the Tessera checks are plain /upcheck."""
        return render_standalone_proxy_config(
            quorum_dns_names=self.quorum_dns_names,
            tessera_dns_names=self.tessera_dns_names,
            tessera_public_key=tessera_public_key,
        )

    def _create_monitoring(self) -> Monitoring:
        settings = self._settings
        quorum_count = len(self.quorum_dns_names)
        return Monitoring(
            f"{self._name}-monitoring",
            MonitoringArgs(
                name_prefix=settings.name_prefix,
                region=settings.region,
                alarms=settings.alarms,
                topic_arn=self.alarm_topic.arn,
                nlb_arn=self.proxy.nlb_arn,
                target_group_arns=self.proxy.target_group_arns,
                cluster_name=self.proxy.cluster_name,
                service_name=self.proxy.service_name,
                proxy_config=json.loads(self._proxy_config()),
                quorum_dns_names=self.quorum_dns_names,
                # The other HA Quorum machines and the network's static peers.
                expected_peers=(
                    settings.alarms.min_peers
                    if settings.alarms.min_peers is not None
                    else quorum_count - 1 + len(settings.quorum_network.quorum_peers)
                ),
                machines=[
                    MonitoredMachine(dns_name=dns_name, instance_id=instance_id)
                    for nodes in self.nodes
                    for dns_name, instance_id in zip(
                        nodes.dns_names, nodes.instance_ids, strict=True
                    )
                ],
                db_primary_identifier=self.database.primary_identifier,
                db_replica_identifier=self.database.replica_identifier,
                db_replica_region=self.database.replica_region,
                db_allocated_storage_gib=settings.database.allocated_storage,
                # Quorum machines run the IPC proxy where Tessera has machines of its own.
                q2t_servers=(
                    q2t_servers(self.dns_names["tessera"]) if "tessera" in self.dns_names else ()
                ),
                title=f"quorum-ha {settings.stack} ({settings.setup})",
            ),
            opts=self._child_opts(),
        )

    def edge_url(self, nlb_dns_name: str, port: int) -> str:
        """The URL clients and other organisations use for one NLB listener: https at the name
        the certificate covers when the NLB terminates TLS there, else http at the NLB's name."""
        tls = self._settings.tls
        if tls is not None and port in tls.ports:
            return f"https://{tls.dns_name}:{port}"
        return f"http://{nlb_dns_name}:{port}"

    def _create_database(self) -> TesseraDatabase:
        settings = self._settings
        return TesseraDatabase(
            f"{self._name}-db",
            TesseraDatabaseArgs(
                name_prefix=settings.name_prefix,
                subnet_ids=self.network.private_subnet_ids,
                security_group_id=self.security_groups.database_id,
                kms_key_arn=self.keys.key_arn,
                username=self.keys.db_username,
                password=self.keys.db_password,
                settings=settings.database,
                deletion_protection=settings.deletion_protection,
                non_production=settings.non_production,
                cross_region_replica=self._create_replica_placement(),
            ),
            opts=self._child_opts(),
        )

    def _create_replica_placement(self) -> CrossRegionReplica | None:
        """A DR VPC in the replica region, peered with the machines' VPC."""
        database = self._settings.database
        region = database.replica_region
        if region is None or self.keys.replica_key_arn is None:
            return None
        remote = Network(
            f"{self._name}-replica-network",
            NetworkArgs(
                zone_name=None,
                cidr=database.replica_vpc_cidr,
                az_count=2,
                with_egress=False,
                region=region,
            ),
            opts=self._child_opts(),
        )
        VpcPeering(
            f"{self._name}-replica-peering",
            VpcPeeringArgs(
                vpc_id=self.network.vpc_id,
                vpc_cidr=self.network.vpc_cidr,
                route_table_ids=self.network.private_route_table_ids,
                peer_vpc_id=remote.vpc_id,
                peer_vpc_cidr=remote.vpc_cidr,
                peer_route_table_ids=remote.private_route_table_ids,
                peer_region=region,
                route_table_count=self.network.private_route_table_count,
                peer_route_table_count=remote.private_route_table_count,
            ),
            opts=self._child_opts(),
        )
        return CrossRegionReplica(
            region=region,
            vpc_id=remote.vpc_id,
            subnet_ids=remote.private_subnet_ids,
            kms_key_arn=self.keys.replica_key_arn,
            client_cidr=self.network.vpc_cidr,
        )

    def _boot_context(self, role: MachineRole, index: int) -> pulumi.Output[NodeBootContext]:
        """Everything one machine boots from, resolved from the other components' outputs."""
        settings = self._settings
        quorum_network = settings.quorum_network
        keys = self.keys
        quorum_count = len(self.quorum_dns_names)
        node_key_index = index if runs_quorum(role) else index % quorum_count
        dns_name = self.dns_names[role][index]
        return pulumi.Output.all(
            nlb=self.proxy.nlb_dns_name,
            jdbc=self.database.jdbc_url,
            account=keys.quorum_account_secret_arn,
            node_key=keys.node_key_secret_arns[node_key_index],
            db=keys.db_secret_arn,
            image=self.proxy.image_uri,
            enode_keys=pulumi.Output.all(*keys.node_public_keys),
            vpc_cidr=self.network.vpc_cidr,
        ).apply(
            lambda v: NodeBootContext(
                setup=settings.setup,
                role=role,
                index=index,
                region=settings.region,
                node_dns_name=dns_name,
                quorum_dns_names=self.quorum_dns_names,
                tessera_dns_names=self.tessera_dns_names,
                # What Tessera advertises (serverAddress): https when the NLB terminates TLS.
                p2p_url=self.edge_url(v["nlb"], TESSERA_P2P_PORT),
                third_party_url=self.edge_url(v["nlb"], TESSERA_THIRD_PARTY_PORT),
                tessera_key_id=keys.tessera_key_id,
                quorum_account_secret_arn=v["account"],
                quorum_node_key_secret_arn=v["node_key"],
                db_secret_arn=v["db"],
                jdbc_url=v["jdbc"],
                quorum_version=settings.nodes.quorum_version,
                tessera_version=settings.nodes.tessera_version,
                proxy_image_uri=v["image"] if runs_ipc_proxy(role) else None,
                genesis_json=json.dumps(quorum_network.genesis, sort_keys=True),
                ha_enodes=tuple(
                    enode_url(key, host)
                    for key, host in zip(v["enode_keys"], self.quorum_dns_names, strict=True)
                ),
                peer_enodes=quorum_network.quorum_peers,
                tessera_peer_urls=quorum_network.tessera_peers,
                network_id=quorum_network.network_id,
                log_group_name=naming.log_group_name(settings.stack, role),
            )
        )

    def _create_nodes(self, group: MachineGroup) -> Nodes:
        settings = self._settings
        quorum = runs_quorum(group.role)
        tessera = runs_tessera(group.role)
        security_groups = []
        if quorum:
            security_groups.append(self.security_groups.quorum_id)
        if tessera:
            security_groups.append(self.security_groups.tessera_id)
        machines = [
            MachineSpec(
                dns_name=dns_name,
                boot_context=self._boot_context(group.role, index),
                secret_arns=readable_secret_arns(
                    self.keys,
                    tessera=tessera,
                    quorum=quorum,
                    node_index=index if quorum else None,
                ),
            )
            for index, dns_name in enumerate(self.dns_names[group.role])
        ]
        return Nodes(
            f"{self._name}-{group.role}",
            NodesArgs(
                role=group.role,
                instance_type=group.instance_type,
                machines=machines,
                subnet_ids=self.network.private_subnet_ids,
                security_group_ids=security_groups,
                zone_id=self.network.zone_id,
                kms_key_arn=self.keys.key_arn,
                role_path=self.node_role_path,
                log_group_name=naming.log_group_name(settings.stack, group.role),
                region=settings.region,
                ecr_repository_arn=(
                    self.proxy.repository_arn if runs_ipc_proxy(group.role) else None
                ),
                # The network's other nodes name Quorum machines by IP (haEnodes).
                fixed_address=quorum,
                alarm_topic_arn=self.alarm_topic.arn,
            ),
            opts=self._child_opts(),
        )

    def _quorum_nodes(self) -> Nodes:
        """The machines that run Quorum (pairs, or Quorum machines)."""
        (nodes,) = [n for g, n in zip(self.groups, self.nodes, strict=True) if runs_quorum(g.role)]
        return nodes

    def _enodes(self, hosts: Sequence[pulumi.Input[str]]) -> pulumi.Output[list[str]]:
        """Enode URLs of the Quorum machines, in node-key order, at the given hosts."""
        return pulumi.Output.all(
            keys=pulumi.Output.all(*self.keys.node_public_keys), hosts=pulumi.Output.all(*hosts)
        ).apply(
            lambda v: [
                enode_url(key, host) for key, host in zip(v["keys"], v["hosts"], strict=True)
            ]
        )

    def _collect_outputs(self) -> dict[str, pulumi.Input[Any]]:
        nlb = self.proxy.nlb_dns_name
        groups = self.security_groups
        return {
            "setup": self._settings.setup,
            "rpcEndpoint": nlb.apply(lambda host: self.edge_url(host, QUORUM_RPC_PORT)),
            "thirdPartyUrl": nlb.apply(lambda host: self.edge_url(host, TESSERA_THIRD_PARTY_PORT)),
            "p2pUrl": nlb.apply(lambda host: self.edge_url(host, TESSERA_P2P_PORT)),
            # A name the operator manages (tls without hostedZoneId) is a CNAME to this.
            "nlbDnsName": nlb,
            "tesseraPublicKey": self.keys.tessera_public_key,
            "quorumAccountAddress": self.keys.quorum_account_address,
            # By kept IP: GoQuorum resolves an enode's host when it parses static/permissioned
            # nodes and drops what does not resolve, and only this VPC resolves the names
            # (ConsenSys/quorum p2p/enode/urlv4.go parseComplete: net.LookupIP; node/config.go
            # parsePersistentNodes and permission/core/permissions.go: log and `continue`).
            "haEnodes": self._enodes(self._quorum_nodes().private_ips),
            "haEnodeDnsNames": self._enodes(self.quorum_dns_names),
            "securityGroupIds": {
                "nlb": groups.nlb_id,
                "proxy": groups.proxy_id,
                "quorum": groups.quorum_id,
                "tessera": groups.tessera_id,
                "database": groups.database_id,
            },
            "vpcId": self.network.vpc_id,
            "subnetIds": {
                "private": self.network.private_subnet_ids,
                "public": self.network.public_subnet_ids,
            },
            "dbEndpoints": {
                "primary": self.database.primary_address,
                "replica": self.database.replica_address,
            },
            "jdbcUrl": self.database.jdbc_url,
            "privateZone": {"id": self.network.zone_id, "name": self.zone_name},
            "nodeDnsNames": {role: list(names) for role, names in self.dns_names.items()},
            "secretArns": {
                "tesseraPublicKey": self.keys.tessera_secret_arns[0],
                "tesseraPrivateKey": self.keys.tessera_secret_arns[1],
                "quorumAccount": self.keys.quorum_account_secret_arn,
                "quorumNodeKeys": pulumi.Output.all(*self.keys.node_key_secret_arns),
                "database": self.keys.db_secret_arn,
            },
            "kmsKeyArn": self.keys.key_arn,
            "proxyImageUri": self.proxy.image_uri,
            "alarmTopicArn": self.alarm_topic.arn,
            "dashboardName": self.monitoring.dashboard_name,
        }


class PairHA(ClientNode):
    """Setup 1: each machine runs Quorum and Tessera, joined by the local tm.ipc."""

    TYPE = "quorum-ha:setups:PairHA"

    def machine_groups(self) -> list[MachineGroup]:
        nodes = self._settings.nodes
        return [MachineGroup("pair", nodes.quorum_count, nodes.quorum_instance_type)]


class FullHA(ClientNode):
    """Setup 2: Quorum and Tessera on separate machines; IPC proxy on each Quorum machine."""

    TYPE = "quorum-ha:setups:FullHA"

    def machine_groups(self) -> list[MachineGroup]:
        nodes = self._settings.nodes
        return [
            MachineGroup("quorum", nodes.quorum_count, nodes.quorum_instance_type),
            MachineGroup("tessera", nodes.tessera_count, nodes.tessera_instance_type),
        ]


class TesseraHA(FullHA):
    """Setup 3: one Quorum machine (IPC proxy) and several Tessera machines."""

    TYPE = "quorum-ha:setups:TesseraHA"


SETUP_CLASSES: dict[str, type[ClientNode]] = dict(
    zip(SETUPS, (PairHA, FullHA, TesseraHA), strict=True)
)
# Every setup's type token, for the aliases that let `setup` change on a living stack.
SETUP_TYPES = tuple(setup.TYPE for setup in SETUP_CLASSES.values())


def build(settings: Settings) -> ClientNode:
    """The setup the settings ask for, named after the project."""
    return SETUP_CLASSES[settings.setup](PROJECT, settings)
