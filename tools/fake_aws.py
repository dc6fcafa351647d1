"""AWS as the mocks answer it: ids, ARNs and computed outputs shaped as AWS shapes them, and the
answers to the data sources (invokes) the program calls.

Only calls the program makes are answered (`INVOKES`); any other raises `UnansweredCallError`, so
a new data source in the program fails loudly here instead of reading an empty answer.
tests/tools/test_fake_aws.py proves every entry of `INVOKES` is called, and every resource type
shaped here declared, by some run of the program.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from pulumi.runtime import rpc

from tools.aws_rules import AUTONAMED, auto_name, prefixed_name

ACCOUNT_ID = "123456789012"


class UnansweredCallError(Exception):
    """The program made a call (or asked a form of it) that the fake AWS does not answer."""


def _digest(*parts: str, size: int = 32) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256("/".join((*parts, str(counter))).encode()).digest()
        counter += 1
    return out[:size]


def _service_of(type_: str) -> str:
    # "aws:ec2/instance:Instance" -> "ec2"
    return type_.split(":")[1].split("/", maxsplit=1)[0] if type_.count(":") >= 2 else "resource"


_ELB_ARN = "arn:aws:elasticloadbalancing"


def _arn(type_: str, name: str, inputs: dict[str, Any], region: str, token: str) -> str:
    """ARNs shaped as AWS shapes them, so code that parses or validates them sees real forms."""
    region = str(inputs.get("region") or region)
    physical = str(inputs.get("name") or auto_name(name, token))
    if type_ == "aws:secretsmanager/secret:Secret":
        return f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{physical}-{token[:6]}"
    if type_ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
        kind = "role" if type_.endswith("Role") else "instance-profile"
        path = str(inputs.get("path") or "/")
        return f"arn:aws:iam::{ACCOUNT_ID}:{kind}{path}{physical}"
    if type_ == "aws:cloudwatch/logGroup:LogGroup":
        return f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{physical}"
    if type_ in ("aws:kms/key:Key", "aws:kms/replicaKey:ReplicaKey"):
        return f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/mrk-{token}"
    if type_ == "aws:ecr/repository:Repository":
        return f"arn:aws:ecr:{region}:{ACCOUNT_ID}:repository/{physical}"
    if type_ == "aws:rds/instance:Instance":
        return f"arn:aws:rds:{region}:{ACCOUNT_ID}:db:{inputs.get('identifier') or physical}"
    if type_ == "aws:lb/loadBalancer:LoadBalancer":
        return f"{_ELB_ARN}:{region}:{ACCOUNT_ID}:loadbalancer/net/{physical}/{token}"
    if type_ == "aws:lb/targetGroup:TargetGroup":
        return f"{_ELB_ARN}:{region}:{ACCOUNT_ID}:targetgroup/{physical}/{token}"
    return f"arn:aws:{_service_of(type_)}:{region}:{ACCOUNT_ID}:{name}-{token}"


def _identity(type_: str, name: str, inputs: dict[str, Any], token: str) -> dict[str, Any]:
    """Ids and names shaped as AWS shapes them (vol-, i-, sg-, subnet-, vpc-...)."""
    prefixes = {
        "aws:ebs/volume:Volume": "vol",
        "aws:ec2/instance:Instance": "i",
        "aws:ec2/securityGroup:SecurityGroup": "sg",
        "aws:ec2/subnet:Subnet": "subnet",
        "aws:ec2/vpc:Vpc": "vpc",
    }
    out: dict[str, Any] = {}
    if type_ in prefixes:
        out["id"] = f"{prefixes[type_]}-{token}"
    if type_ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
        out["name"] = inputs.get("name") or auto_name(name, token)
        if type_ == "aws:iam/role:Role":
            out["id"] = out["name"]
    elif type_ == "docker-build:index:Image":
        digest = "sha256:" + hashlib.sha256(f"image/{name}".encode()).hexdigest()
        tags = inputs.get("tags") or [f"{name}:latest"]
        out["digest"] = digest
        out["ref"] = f"{tags[0]}@{digest}"
    return out


def resource_state(type_: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible provider-computed outputs, deterministic per resource name (with its `id`)."""
    token = hashlib.sha256(f"{type_}/{name}".encode()).hexdigest()[:12]
    state: dict[str, Any] = {
        "arn": _arn(type_, name, inputs, region, token),
        "id": f"{name}-{token}",
    }
    autonamed = AUTONAMED.get(type_)
    if autonamed and not inputs.get(autonamed) and inputs.get("namePrefix"):
        state[autonamed] = prefixed_name(str(inputs["namePrefix"]), token)
    elif autonamed and not inputs.get(autonamed):
        # pulumi-aws auto-names it as the logical name, "-" and 7 hex characters (random for
        # real; here derived from the resource, so runs are repeatable).
        state[autonamed] = auto_name(name, token)
    if type_ == "aws:secretsmanager/secret:Secret":
        state["id"] = state["arn"]
    state.update(_identity(type_, name, inputs, token))
    if type_ == "aws:lb/loadBalancer:LoadBalancer":
        state["dnsName"] = f"{name}-{token}.elb.{region}.amazonaws.com"
        state["zoneId"] = "Z26RNL4JYFTOTI"
    elif type_ in ("aws:rds/instance:Instance",):
        db_region = str(inputs.get("region") or region)
        host = f"{inputs.get('identifier') or name}.{token}.{db_region}.rds.amazonaws.com"
        state["address"] = host
        state["endpoint"] = f"{host}:5432"
        state["port"] = inputs.get("port", 5432)
        state["identifier"] = inputs.get("identifier", name)
    elif type_ == "aws:ec2/instance:Instance":
        octet = int(token[:2], 16)
        state["privateIp"] = f"10.0.{octet}.{int(token[2:4], 16) or 1}"
        state["privateDns"] = f"ip-10-0-{octet}.{region}.compute.internal"
        state["availabilityZone"] = f"{region}a"
    elif type_ == "aws:ecr/repository:Repository":
        repo = str(inputs.get("name") or state.get("name") or name)  # auto-named if unnamed
        state["repositoryUrl"] = f"{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com/{repo}"
        state["registryId"] = ACCOUNT_ID
        state["name"] = repo
    elif type_ == "aws:kms/key:Key":
        state["keyId"] = f"{token}-key"
    elif type_ == "aws:route53/zone:Zone":
        state["zoneId"] = f"Z{token.upper()}"
    elif type_ == "aws:ec2/vpc:Vpc":
        state["defaultSecurityGroupId"] = f"sg-default-{token}"
    elif type_ == "random:index/randomPassword:RandomPassword":
        length = int(inputs.get("length", 32))
        state["result"] = rpc.wrap_rpc_secret(_digest(type_, name, size=length).hex()[:length])
    elif type_ == "random:index/randomBytes:RandomBytes":
        raw = _digest(type_, name, size=int(inputs.get("length", 32)))
        state["base64"] = rpc.wrap_rpc_secret(base64.b64encode(raw).decode())
        state["hex"] = rpc.wrap_rpc_secret(raw.hex())
    state.update(_network_interface_state(type_, inputs, token))
    return state


# ---------------------------------------------------------------- the invokes the program makes
# Each answer takes the invoke's arguments and the region it is asked in.
Answer = Callable[[dict[str, Any], str], dict[str, Any]]


def _region(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {"name": region, "region": region, "id": region}


def _caller_identity(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci", "id": "x"}


def _partition(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}


def _availability_zones(args: dict[str, Any], region: str) -> dict[str, Any]:
    names = [f"{region}{s}" for s in _MOCK_ZONE_SUFFIXES]
    return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 4)], "id": region}


def _subnet(args: dict[str, Any], region: str) -> dict[str, Any]:
    subnet = str(args.get("id", "subnet-0"))
    zone = _MOCK_ZONE_SUFFIXES[int(hashlib.sha256(subnet.encode()).hexdigest(), 16) % 3]
    return {"id": subnet, "availabilityZone": f"{region}{zone}", "vpcId": "vpc-mock"}


def _vpc(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {"id": args.get("id", "vpc-mock"), "cidrBlock": "10.20.0.0/16"}


def _ssm_parameter(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {"value": "ami-0123456789abcdef0", "name": args.get("name", ""), "id": "x"}


def _ecr_authorization_token(args: dict[str, Any], region: str) -> dict[str, Any]:
    return {
        "userName": "AWS",
        "password": rpc.wrap_rpc_secret("ecr-token"),
        "proxyEndpoint": f"https://{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com",
        "authorizationToken": rpc.wrap_rpc_secret("ecr-token"),
        "id": region,
    }


# ---------------------------------------- what each AZ offers, and kept network interfaces
# (availability zone, instance type or endpoint service short name such as "ecr.dkr") pairs the
# mocked region does NOT offer. Everything else is offered in every AZ. Tests patch this (with
# monkeypatch) to make one AZ lack a type or a service.
MISSING_OFFERINGS: frozenset[tuple[str, str]] = frozenset()
_MOCK_ZONE_SUFFIXES = "abc"  # the AZs getAvailabilityZones answers
_MOCK_INSTANCE_TYPES = ("m6i.large", "m6i.xlarge", "m6i.2xlarge", "m7i.large", "c6i.large")


def _instance_type_offerings(args: dict[str, Any], region: str) -> dict[str, Any]:
    """DescribeInstanceTypeOfferings as AWS answers it: only what is offered, per AZ."""
    zones = [f"{region}{suffix}" for suffix in _MOCK_ZONE_SUFFIXES]
    location_type = str(args.get("locationType") or "region")
    types = list(_MOCK_INSTANCE_TYPES)
    for spec in args.get("filters") or []:
        if spec.get("name") == "instance-type":
            # Any x86_64 type the settings accept is offered unless a test says otherwise.
            types = list(spec.get("values", []))
    rows = [(t, z) for z in zones for t in types if (z, t) not in MISSING_OFFERINGS]
    if location_type == "region":
        rows = sorted({(t, region) for t, _ in rows})
    elif location_type != "availability-zone":
        raise UnansweredCallError(f"mock offerings: locationType {location_type!r} not mocked")
    return {
        "id": region,
        "instanceTypes": [t for t, _ in rows],
        "locations": [z for _, z in rows],
        "locationTypes": [location_type] * len(rows),
        "locationType": location_type,
    }


def _vpc_endpoint_service(args: dict[str, Any], region: str) -> dict[str, Any]:
    """DescribeVpcEndpointServices as AWS answers it: the AZs that offer the service."""
    zones = [f"{region}{suffix}" for suffix in _MOCK_ZONE_SUFFIXES]
    name = str(args.get("serviceName") or f"com.amazonaws.{region}.{args.get('service')}")
    short = name.removeprefix(f"com.amazonaws.{region}.")
    return {
        "id": name,
        "serviceName": name,
        "serviceType": args.get("serviceType") or "Interface",
        "serviceId": "vpce-svc-" + hashlib.sha256(name.encode()).hexdigest()[:17],
        "availabilityZones": [z for z in zones if (z, short) not in MISSING_OFFERINGS],
        "acceptanceRequired": False,
        "owner": "amazon",
    }


def _interface_address(interface_id: str) -> str:
    """The private IP EC2 gave a network interface (a function of its id, so an instance booted
    on the interface reports the same address)."""
    digest = hashlib.sha256(interface_id.encode()).hexdigest()
    return f"10.0.{int(digest[:2], 16)}.{int(digest[2:4], 16) or 1}"


def _network_interface_state(type_: str, inputs: dict[str, Any], token: str) -> dict[str, Any]:
    """A network interface's id and kept private IP; an instance booted on one takes its IP."""
    if type_ == "aws:ec2/networkInterface:NetworkInterface":
        address = _interface_address(f"eni-{token}")
        return {"id": f"eni-{token}", "privateIp": address, "privateIps": [address]}
    primary = inputs.get("primaryNetworkInterface")
    if type_ == "aws:ec2/instance:Instance" and isinstance(primary, dict):
        interface_id = str(primary.get("networkInterfaceId", ""))
        return {
            "privateIp": _interface_address(interface_id),
            "primaryNetworkInterfaceId": interface_id,
        }
    return {}


# The call table: every data source the program calls, and nothing else.
INVOKES: dict[str, Answer] = {
    "aws:index/getRegion:getRegion": _region,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
    "aws:index/getPartition:getPartition": _partition,
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _instance_type_offerings,
    "aws:ec2/getVpcEndpointService:getVpcEndpointService": _vpc_endpoint_service,
    "aws:ec2/getSubnet:getSubnet": _subnet,
    "aws:ec2/getVpc:getVpc": _vpc,
    "aws:ssm/getParameter:getParameter": _ssm_parameter,
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": _ecr_authorization_token,
}


def invoke_result(token: str, args: dict[str, Any], region: str) -> dict[str, Any]:
    """The answer to one invoke; pulumi-aws v7 invokes may name their own region."""
    answer = INVOKES.get(token)
    if answer is None:
        raise UnansweredCallError(f"the fake AWS does not answer {token!r}: add it to INVOKES")
    return answer(args, str(args.get("region") or region))
