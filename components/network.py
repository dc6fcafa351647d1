"""The VPC the client node lives in, its private DNS zone, and who may talk to whom.

`Network` either builds a VPC (private subnets for machines, database and proxy tasks; public
subnets for NAT and an internet-facing NLB; VPC endpoints so AWS API traffic stays private) or
adopts an existing one. `SecurityGroups` holds every port rule of the client node in one place.

Not every AZ offers every instance type or endpoint service: a new VPC takes the first AZs (by
name) that offer the machines' instance types and every interface endpoint, and an adopted one
must have its private subnets in AZs that offer the instance types; otherwise the program stops
with one line (subnets taken from another stack are only known later: a warning then). The
choice is made on every run: on a living stack, a later change to an
instance type that one of its AZs lacks would move subnets (a replacement that fails on their
CIDRs), so such a change needs a type those AZs offer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.base import Component
from components.settings.ingress import IngressSettings
from domain.ports import (
    DB_PORT,
    NLB_PORTS,
    PROXY_ADMIN_PORT,
    QUORUM_P2P_PORT,
    QUORUM_RPC_PORT,
    TESSERA_P2P_PORT,
    TESSERA_Q2T_PORT,
    TESSERA_THIRD_PARTY_PORT,
)

# Interface endpoints the machines and proxy tasks need without a public IP: Session Manager,
# secrets, keys, images and logs/metrics.
INTERFACE_ENDPOINTS = (
    "ssm",
    "ssmmessages",
    "ec2messages",
    "secretsmanager",
    "kms",
    "ecr.api",
    "ecr.dkr",
    "logs",
    "monitoring",
    "sts",
)
WORLD = "0.0.0.0/0"


@dataclass
class NetworkArgs:
    """Either `cidr` (build a VPC) or `vpc_id` + `private_subnet_ids` (adopt one)."""

    zone_name: str | None  # the private DNS zone of the machines; None for a DR-only VPC
    cidr: str | None = None
    az_count: int = 2
    vpc_id: pulumi.Input[str] | None = None
    private_subnet_ids: pulumi.Input[Sequence[str]] | None = None
    public_subnet_ids: pulumi.Input[Sequence[str]] | None = None
    # Endpoints and NAT are only worth it where machines run; a DR-only VPC skips them.
    with_egress: bool = True
    region: str | None = None
    # The machines' instance types: every AZ the network uses must offer all of them.
    instance_types: Sequence[str] = ()


class Network(Component[NetworkArgs]):
    """A VPC with private subnets over >= 2 AZs, egress, endpoints and a private DNS zone."""

    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    private_route_table_ids: pulumi.Output[list[str]]
    # Known before deployment, so routes to a peer can be declared one per table.
    private_route_table_count: int
    zone_id: pulumi.Output[str]
    zone_name: str | None

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:network:Network", name, args, opts)
        self._region = args.region
        self._instance_types = sorted(set(args.instance_types))
        self.zone_name = args.zone_name
        if args.cidr is not None:
            self._create_vpc(args.cidr, args.az_count, args.with_egress)
        else:
            if args.vpc_id is None or args.private_subnet_ids is None:
                raise ValueError("Network needs either cidr or vpc_id and private_subnet_ids")
            self._adopt_vpc(args.vpc_id, args.private_subnet_ids, args.public_subnet_ids or [])
        self.zone_id = (
            self._create_zone(args.zone_name) if args.zone_name else pulumi.Output.from_input("")
        )
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "vpcCidr": self.vpc_cidr,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
                "zoneId": self.zone_id,
            }
        )

    def _invoke_opts(self) -> pulumi.InvokeOptions:
        # The parent's explicit provider (the stack's region) answers the invoke.
        return pulumi.InvokeOptions(parent=self)

    def _region_name(self) -> str:
        return self._region or aws.get_region(opts=self._invoke_opts()).region

    def _offered_types(self) -> set[tuple[str, str]]:
        """(AZ, instance type) pairs the region offers, for the machines' instance types."""
        if not self._instance_types:
            return set()
        # DescribeInstanceTypeOfferings, LocationType availability-zone: one row per AZ and type.
        offers = aws.ec2.get_instance_type_offerings(
            location_type="availability-zone",
            filters=[
                aws.ec2.GetInstanceTypeOfferingsFilterArgs(
                    name="instance-type", values=self._instance_types
                )
            ],
            region=self._region,
            opts=self._invoke_opts(),
        )
        return set(zip(offers.locations, offers.instance_types, strict=True))

    def _lacking(
        self, zones: Sequence[str], region: str, with_egress: bool
    ) -> dict[str, list[str]]:
        """AZ -> the instance types and interface endpoint services it does not offer."""
        offered = self._offered_types()
        lacking = {
            zone: [t for t in self._instance_types if (zone, t) not in offered] for zone in zones
        }
        if with_egress:
            # pulumi-aws 7.51.1 get_vpc_endpoint_service takes no region: it asks the parent's
            # provider, the region endpoints are only built in (a DR VPC has no endpoints).
            for service in INTERFACE_ENDPOINTS:
                # DescribeVpcEndpointServices: ServiceDetail.AvailabilityZones.
                detail = aws.ec2.get_vpc_endpoint_service(
                    service_name=f"com.amazonaws.{region}.{service}",
                    service_type="Interface",
                    opts=self._invoke_opts(),
                )
                for zone in zones:
                    if zone not in detail.availability_zones:
                        lacking[zone].append(f"the {service} endpoint")
        return lacking

    def _create_vpc(self, cidr: str, az_count: int, with_egress: bool) -> None:
        # DescribeAvailabilityZones also lists opted-in Local and Wavelength Zones, and in no
        # promised order: regular AZs only, sorted by name.
        available = aws.get_availability_zones(
            state="available",
            filters=[
                aws.GetAvailabilityZonesFilterArgs(name="zone-type", values=["availability-zone"])
            ],
            region=self._region,
            opts=self._invoke_opts(),
        ).names
        region = self._region_name()
        zones = choose_zones(
            region, self._lacking(sorted(available), region, with_egress), az_count
        )
        vpc = aws.ec2.Vpc(
            f"{self._name}-vpc",
            cidr_block=cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            region=self._region,
            tags={"Name": f"{self._name}-vpc"},
            opts=self._opts(),
        )
        # The default group allows all traffic between its members: strip it so nothing uses it.
        aws.ec2.DefaultSecurityGroup(
            f"{self._name}-default-sg",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            region=self._region,
            opts=self._opts(),
        )
        # /16 -> /20 subnets: private ones first, public ones after, room left to grow.
        blocks = list(
            ipaddress.ip_network(cidr).subnets(new_prefix=ipaddress.ip_network(cidr).prefixlen + 4)
        )
        private = [
            self._subnet(vpc, "private", i, zone, str(blocks[i])) for i, zone in enumerate(zones)
        ]
        public: list[aws.ec2.Subnet] = []
        route_tables: list[aws.ec2.RouteTable] = []
        if with_egress:
            public = self._create_public_tier(
                vpc, zones, [str(b) for b in blocks[8 : 8 + len(zones)]]
            )
        for i, subnet in enumerate(private):
            table = aws.ec2.RouteTable(
                f"{self._name}-private-rt-{i}",
                vpc_id=vpc.id,
                region=self._region,
                tags={"Name": f"{self._name}-private-rt-{i}"},
                opts=self._opts(),
            )
            self._associate("private", i, table, subnet)
            route_tables.append(table)
        if with_egress:
            self._create_nat(public, route_tables)
            self._create_endpoints(vpc, cidr, private, route_tables, region)
        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public])
        self.private_route_table_ids = pulumi.Output.all(*[t.id for t in route_tables])
        self.private_route_table_count = len(route_tables)

    def _create_public_tier(
        self, vpc: aws.ec2.Vpc, zones: Sequence[str], blocks: Sequence[str]
    ) -> list[aws.ec2.Subnet]:
        gateway = aws.ec2.InternetGateway(
            f"{self._name}-igw", vpc_id=vpc.id, region=self._region, opts=self._opts()
        )
        table = aws.ec2.RouteTable(
            f"{self._name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=WORLD, gateway_id=gateway.id)],
            region=self._region,
            tags={"Name": f"{self._name}-public-rt"},
            opts=self._opts(),
        )
        subnets = []
        for i, (zone, block) in enumerate(zip(zones, blocks, strict=True)):
            subnet = self._subnet(vpc, "public", i, zone, block)
            self._associate("public", i, table, subnet)
            subnets.append(subnet)
        return subnets

    def _subnet(
        self, vpc: aws.ec2.Vpc, tier: str, index: int, zone: str, block: str
    ) -> aws.ec2.Subnet:
        return aws.ec2.Subnet(
            f"{self._name}-{tier}-{index}",
            vpc_id=vpc.id,
            cidr_block=block,
            availability_zone=zone,
            # No address at launch in either tier: in the public one, NAT gateways and NLB
            # nodes get theirs explicitly, and nothing else lives there.
            map_public_ip_on_launch=False,
            region=self._region,
            tags={"Name": f"{self._name}-{tier}-{zone}", "quorum-ha/tier": tier},
            opts=self._opts(),
        )

    def _associate(
        self, tier: str, index: int, table: aws.ec2.RouteTable, subnet: aws.ec2.Subnet
    ) -> None:
        aws.ec2.RouteTableAssociation(
            f"{self._name}-{tier}-rta-{index}",
            route_table_id=table.id,
            subnet_id=subnet.id,
            region=self._region,
            opts=self._opts(),
        )

    def _create_nat(
        self, public: Sequence[aws.ec2.Subnet], route_tables: Sequence[aws.ec2.RouteTable]
    ) -> None:
        # One NAT per AZ: machines pull Docker Hub images and talk to remote peers, and losing
        # one AZ must not cut the other's egress.
        for i, (subnet, table) in enumerate(zip(public, route_tables, strict=True)):
            eip = aws.ec2.Eip(
                f"{self._name}-nat-eip-{i}", domain="vpc", region=self._region, opts=self._opts()
            )
            nat = aws.ec2.NatGateway(
                f"{self._name}-nat-{i}",
                allocation_id=eip.id,
                subnet_id=subnet.id,
                region=self._region,
                opts=self._opts(),
            )
            aws.ec2.Route(
                f"{self._name}-private-default-{i}",
                route_table_id=table.id,
                destination_cidr_block=WORLD,
                nat_gateway_id=nat.id,
                region=self._region,
                opts=self._opts(),
            )

    def _create_endpoints(
        self,
        vpc: aws.ec2.Vpc,
        cidr: str,
        private: Sequence[aws.ec2.Subnet],
        route_tables: Sequence[aws.ec2.RouteTable],
        region: str,
    ) -> None:
        group = aws.ec2.SecurityGroup(
            f"{self._name}-endpoints-sg",
            vpc_id=vpc.id,
            description="VPC interface endpoints: HTTPS from inside the VPC only",
            region=self._region,
            opts=self._opts(),
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-endpoints-https",
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4=cidr,
            description="HTTPS to AWS APIs from the VPC",
            region=self._region,
            opts=self._opts(),
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{self._name}-{service.replace('.', '-')}-endpoint",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in private],
                security_group_ids=[group.id],
                region=self._region,
                opts=self._opts(),
            )
        # ECR image layers are served from S3.
        aws.ec2.VpcEndpoint(
            f"{self._name}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in route_tables],
            region=self._region,
            opts=self._opts(),
        )

    def _adopt_vpc(
        self,
        vpc_id: pulumi.Input[str],
        private_subnet_ids: pulumi.Input[Sequence[str]],
        public_subnet_ids: pulumi.Input[Sequence[str]],
    ) -> None:
        self.vpc_id = pulumi.Output.from_input(vpc_id)
        self.vpc_cidr = aws.ec2.get_vpc_output(
            id=self.vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)
        ).cidr_block
        self.private_subnet_ids = self._checked_subnets(private_subnet_ids)
        self.public_subnet_ids = pulumi.Output.from_input(public_subnet_ids).apply(list)
        # An adopted network's routing stays its owner's.
        self.private_route_table_ids = pulumi.Output.from_input([])
        self.private_route_table_count = 0

    def _checked_subnets(
        self, subnet_ids: pulumi.Input[Sequence[str]]
    ) -> pulumi.Output[list[str]]:
        """The given private subnets, their AZs checked for the machines' instance types."""
        if not self._instance_types:
            return pulumi.Output.from_input(subnet_ids).apply(list)
        offered = self._offered_types()
        if isinstance(subnet_ids, list | tuple) and all(isinstance(i, str) for i in subnet_ids):
            # Ids given in config: refused now, in one line, before anything is declared.
            ids = [str(i) for i in subnet_ids]
            zones = [
                aws.ec2.get_subnet(id=i, opts=self._invoke_opts()).availability_zone for i in ids
            ]
            gaps = self._gaps(ids, zones, offered)
            if gaps:
                raise pulumi.RunError(gaps)
            return pulumi.Output.from_input(ids)

        # Ids from another stack are known only inside an apply, where a refusal would reach
        # the operator as a traceback per waiting resource: warn instead (EC2 then refuses the
        # machines in those AZs).
        def warn(ids: list[str], zones: list[str]) -> list[str]:
            gaps = self._gaps(ids, zones, offered)
            if gaps:
                pulumi.log.warn(gaps, resource=self)
            return ids

        return pulumi.Output.from_input(subnet_ids).apply(
            lambda ids: pulumi.Output.all(
                *[
                    aws.ec2.get_subnet_output(
                        id=i, opts=pulumi.InvokeOutputOptions(parent=self)
                    ).availability_zone
                    for i in ids
                ]
            ).apply(lambda zones: warn([str(i) for i in ids], zones))
        )

    def _gaps(self, ids: list[str], zones: Sequence[str], offered: set[tuple[str, str]]) -> str:
        """One line naming each subnet whose AZ lacks an instance type; empty when none does."""
        gaps = [
            f"{subnet} ({zone}) lacks {', '.join(missing)}"
            for subnet, zone in zip(ids, zones, strict=True)
            if (missing := [t for t in self._instance_types if (zone, t) not in offered])
        ]
        if not gaps:
            return ""
        return (
            "the network's private subnets must lie in availability zones that offer the "
            f"machines' instance types: {'; '.join(gaps)}; choose other subnets or instance types"
        )

    def _create_zone(self, zone_name: str) -> pulumi.Output[str]:
        zone = aws.route53.Zone(
            f"{self._name}-zone",
            name=zone_name,
            comment="Stable names of the client node's machines",
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=self.vpc_id, vpc_region=self._region)],
            # Records belong to the machines; let a destroy remove what they left behind.
            force_destroy=True,
            opts=self._opts(),
        )
        return zone.zone_id


def choose_zones(region: str, lacking: Mapping[str, Sequence[str]], count: int) -> list[str]:
    """The first `count` AZs by name that lack nothing; otherwise one line saying what is
    missing where (a RunError: the engine shows it without a traceback)."""
    usable = sorted(zone for zone, missing in lacking.items() if not missing)
    if len(usable) >= count:
        return usable[:count]
    gaps = [f"{zone} lacks {', '.join(m)}" for zone, m in sorted(lacking.items()) if m]
    raise pulumi.RunError(
        f"the network needs {count} availability zones of {region} that offer its machines' "
        f"instance types and VPC endpoints; {len(usable)} do "
        f"({', '.join(usable) or 'none'}){': ' + '; '.join(gaps) if gaps else ''}; "
        "choose instance types offered in more zones, fewer zones (network.azCount) or another "
        "region"
    )


@dataclass
class VpcPeeringArgs:
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    route_table_ids: pulumi.Input[Sequence[str]]
    route_table_count: int
    peer_vpc_id: pulumi.Input[str]
    peer_vpc_cidr: pulumi.Input[str]
    peer_route_table_ids: pulumi.Input[Sequence[str]]
    peer_route_table_count: int
    peer_region: str


class VpcPeering(pulumi.ComponentResource):
    """Peering to a VPC in another region, with routes both ways (private route tables)."""

    connection_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: VpcPeeringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:network:VpcPeering", name, None, opts)
        connection = aws.ec2.VpcPeeringConnection(
            f"{name}-connection",
            vpc_id=args.vpc_id,
            peer_vpc_id=args.peer_vpc_id,
            peer_region=args.peer_region,
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        accepter = aws.ec2.VpcPeeringConnectionAccepter(
            f"{name}-accepter",
            vpc_peering_connection_id=connection.id,
            auto_accept=True,
            region=args.peer_region,
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        sides = (
            ("local", args.route_table_ids, args.route_table_count, args.peer_vpc_cidr, None),
            (
                "peer",
                args.peer_route_table_ids,
                args.peer_route_table_count,
                args.vpc_cidr,
                args.peer_region,
            ),
        )
        for side, tables, count, destination, region in sides:
            for i in range(count):
                aws.ec2.Route(
                    f"{name}-{side}-route-{i}",
                    route_table_id=_item(tables, i),
                    destination_cidr_block=destination,
                    vpc_peering_connection_id=accepter.vpc_peering_connection_id,
                    region=region,
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.connection_id = connection.id
        self.register_outputs({"connectionId": self.connection_id})


def _item(values: pulumi.Input[Sequence[str]], index: int) -> pulumi.Output[str]:
    return pulumi.Output.from_input(values).apply(lambda ids: str(ids[index]))


@dataclass
class SecurityGroupsArgs:
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    # Who may reach the NLB listeners besides the VPC itself (allowed_cidrs), and where the
    # Quorum network's other nodes dial devp2p from (quorum_p2p_cidrs, private connectivity).
    ingress: IngressSettings
    # Quorum reaches Tessera over HTTP Q2T (full and tessera setups) rather than a local socket.
    q2t_over_network: bool


class SecurityGroups(pulumi.ComponentResource):
    """Every port rule of the client node: NLB -> proxy tasks -> machines -> database."""

    nlb_id: pulumi.Output[str]
    proxy_id: pulumi.Output[str]
    quorum_id: pulumi.Output[str]
    tessera_id: pulumi.Output[str]
    database_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:network:SecurityGroups", name, None, opts)
        self._name = name
        self._vpc_id = args.vpc_id
        groups = {
            role: self._group(role, description)
            for role, description in (
                ("nlb", "NLB listeners: the configured CIDRs and the VPC"),
                ("proxy", "HA proxy tasks: from the NLB only"),
                ("quorum", "Quorum machines: RPC from the proxy, devp2p from peers"),
                ("tessera", "Tessera machines: P2P and third-party from the proxy"),
                ("database", "Tessera database: PostgreSQL from Tessera machines only"),
            )
        }
        self._create_nlb_rules(groups, args)
        self._create_proxy_rules(groups)
        self._create_node_rules(groups, args)
        self.nlb_id = groups["nlb"].id
        self.proxy_id = groups["proxy"].id
        self.quorum_id = groups["quorum"].id
        self.tessera_id = groups["tessera"].id
        self.database_id = groups["database"].id
        self.register_outputs(
            {
                "nlb": self.nlb_id,
                "proxy": self.proxy_id,
                "quorum": self.quorum_id,
                "tessera": self.tessera_id,
                "database": self.database_id,
            }
        )

    def _group(self, role: str, description: str) -> aws.ec2.SecurityGroup:
        return aws.ec2.SecurityGroup(
            f"{self._name}-{role}",
            vpc_id=self._vpc_id,
            description=description,
            tags={"Name": f"{self._name}-{role}"},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _ingress(
        self,
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int,
        *,
        cidr: pulumi.Input[str] | None = None,
        source: aws.ec2.SecurityGroup | None = None,
        protocol: str = "tcp",
    ) -> None:
        self._rule(aws.vpc.SecurityGroupIngressRule, rule, group, port, protocol, cidr, source)

    def _egress(
        self,
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int | None,
        *,
        cidr: pulumi.Input[str] | None = None,
        target: aws.ec2.SecurityGroup | None = None,
    ) -> None:
        protocol = "tcp" if port is not None else "-1"
        self._rule(aws.vpc.SecurityGroupEgressRule, rule, group, port, protocol, cidr, target)

    def _rule(
        self,
        kind: type[aws.vpc.SecurityGroupIngressRule] | type[aws.vpc.SecurityGroupEgressRule],
        rule: str,
        group: aws.ec2.SecurityGroup,
        port: int | None,
        protocol: str,
        cidr: pulumi.Input[str] | None,
        peer: aws.ec2.SecurityGroup | None,
    ) -> None:
        """One rule of `group`, to or from a CIDR or another group (`peer`)."""
        kind(
            f"{self._name}-{rule}",
            security_group_id=group.id,
            ip_protocol=protocol,
            from_port=port,
            to_port=port,
            cidr_ipv4=cidr,
            referenced_security_group_id=peer.id if peer else None,
            description=rule,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_nlb_rules(
        self, groups: dict[str, aws.ec2.SecurityGroup], args: SecurityGroupsArgs
    ) -> None:
        sources: list[tuple[str, pulumi.Input[str]]] = [("vpc", args.vpc_cidr)]
        sources += [(f"cidr{i}", cidr) for i, cidr in enumerate(args.ingress.allowed_cidrs)]
        for port in NLB_PORTS:
            for label, cidr in sources:
                self._ingress(f"nlb-{port}-from-{label}", groups["nlb"], port, cidr=cidr)
            self._egress(f"nlb-{port}-to-proxy", groups["nlb"], port, target=groups["proxy"])
        self._egress(
            f"nlb-{PROXY_ADMIN_PORT}-to-proxy",
            groups["nlb"],
            PROXY_ADMIN_PORT,
            target=groups["proxy"],
        )

    def _create_proxy_rules(self, groups: dict[str, aws.ec2.SecurityGroup]) -> None:
        for port in (*NLB_PORTS, PROXY_ADMIN_PORT):
            self._ingress(f"proxy-{port}-from-nlb", groups["proxy"], port, source=groups["nlb"])
        self._egress(
            f"proxy-{QUORUM_RPC_PORT}-to-quorum",
            groups["proxy"],
            QUORUM_RPC_PORT,
            target=groups["quorum"],
        )
        for port in (TESSERA_P2P_PORT, TESSERA_THIRD_PARTY_PORT):
            self._egress(
                f"proxy-{port}-to-tessera", groups["proxy"], port, target=groups["tessera"]
            )
        # Image pulls (ECR through the endpoints, layers from S3) and logs.
        self._egress("proxy-443-out", groups["proxy"], 443, cidr=WORLD)

    def _create_node_rules(
        self, groups: dict[str, aws.ec2.SecurityGroup], args: SecurityGroupsArgs
    ) -> None:
        quorum, tessera, database = groups["quorum"], groups["tessera"], groups["database"]
        self._ingress(
            f"quorum-{QUORUM_RPC_PORT}-from-proxy", quorum, QUORUM_RPC_PORT, source=groups["proxy"]
        )
        for protocol in ("tcp", "udp"):
            # The HA nodes peer with each other, and with the network through private links.
            self._ingress(
                f"quorum-p2p-{protocol}-from-quorum",
                quorum,
                QUORUM_P2P_PORT,
                source=quorum,
                protocol=protocol,
            )
            for i, cidr in enumerate(args.ingress.quorum_p2p_cidrs):
                self._ingress(
                    f"quorum-p2p-{protocol}-from-cidr{i}",
                    quorum,
                    QUORUM_P2P_PORT,
                    cidr=cidr,
                    protocol=protocol,
                )
        for port in (TESSERA_P2P_PORT, TESSERA_THIRD_PARTY_PORT):
            self._ingress(f"tessera-{port}-from-proxy", tessera, port, source=groups["proxy"])
        if args.q2t_over_network:
            self._ingress(
                f"tessera-{TESSERA_Q2T_PORT}-from-quorum", tessera, TESSERA_Q2T_PORT, source=quorum
            )
        self._ingress(f"database-{DB_PORT}-from-tessera", database, DB_PORT, source=tessera)
        # Machines pull images, reach remote Tessera/Quorum peers and AWS APIs.
        self._egress("quorum-out", quorum, None, cidr=WORLD)
        self._egress("tessera-out", tessera, None, cidr=WORLD)
