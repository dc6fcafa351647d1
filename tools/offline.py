"""Run the Pulumi program fully offline under Pulumi's mock runtime and record what it declares.

Used by the tests and by `tools.plan`. Each run gets a fresh event loop and a fresh context, so
runs do not leak the root stack, config or outstanding RPCs into each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import gc
import hashlib
import json
import re
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.sync_await import _sync_await

from domain.naming import PROJECT
from domain.user_data import cloud_config_files, unpack_user_data
from tools.aws_rules import AUTONAMED, auto_name, prefixed_name

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"
MASK = "[secret]"


@dataclass(frozen=True)
class DeclaredResource:
    """One resource the program registered, as the engine would have received it."""

    urn: str
    type: str
    name: str
    parent_urn: str
    custom: bool
    inputs: dict[str, Any]  # secrets appear unwrapped here; see `secret_paths`
    secret_paths: frozenset[str]
    state: dict[str, Any]
    provider: str = ""  # "<provider urn>::<id>" when one was given explicitly or inherited
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()
    id: str = ""  # the provider-assigned id (mocked), as `resource.id` resolves
    # The URN the real engine gives it: the mock monitor keeps only the parent's last type, the
    # engine the whole chain of parent types (see `real_urn`).
    real_urn: str = ""
    # The aliases the SDK sent, as alias specs (name/type/stack/project/parentUrn/noParent,
    # parentUrn being a mock URN) or {"urn": ...}; the engine, not the SDK, adds inherited ones.
    aliases: tuple[dict[str, Any], ...] = ()
    # Mock URNs of what it waits for: depends_on and every resource whose outputs it takes.
    dependencies: tuple[str, ...] = ()

    @property
    def masked_inputs(self) -> dict[str, Any]:
        return _mask(self.inputs, self.secret_paths, "")


@dataclass
class OfflineRun:
    """What one offline run of the program declared and exported."""

    resources: list[DeclaredResource]
    outputs: dict[str, Any]
    secret_outputs: frozenset[str]
    invokes: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[DeclaredResource]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> DeclaredResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources are named {name!r}")
        return found[0]

    def children_of(self, parent: DeclaredResource) -> list[DeclaredResource]:
        return [r for r in self.resources if r.parent_urn == parent.urn]


class OfflineProgramError(Exception):
    """The program stopped (bad config, or a bug); the message is what the operator would see."""


def _mask(value: Any, secret_paths: frozenset[str], path: str) -> Any:
    if path in secret_paths:
        return MASK
    if isinstance(value, dict):
        return {k: _mask(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _unwrap(value: Any, path: str, secrets: set[str]) -> Any:
    """Strip the RPC secret wrappers, remembering where they were."""
    if rpc.is_rpc_secret(value):
        secrets.add(path)
        return _unwrap(rpc.unwrap_rpc_secret(value), path, secrets)
    if isinstance(value, dict):
        return {
            k: _unwrap(v, f"{path}.{k}" if path else k, secrets)
            for k, v in value.items()
            if k != rpc._special_sig_key
        }
    if isinstance(value, list):
        return [_unwrap(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


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


def _computed_state(type_: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible provider-computed outputs, deterministic per resource name."""
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
    elif type_ == "random:index/randomId:RandomId":
        raw = _digest(type_, name, size=int(inputs.get("byteLength", 8)))
        state["hex"] = raw.hex()
        state["b64Url"] = raw.hex()
        state["dec"] = str(int.from_bytes(raw, "big"))
    state.update(_network_interface_state(type_, inputs, token))
    return state


def _call_result(token: str, args: dict[str, Any], region: str) -> dict[str, Any]:
    """Answers for the data sources (invokes) the program may call."""
    # pulumi-aws v7 invokes take a per-call region.
    region = str(args.get("region") or region)
    offerings = _offerings_result(token, args, region)
    if offerings is not None:
        return offerings
    if token == "aws:index/getRegion:getRegion":
        return {"name": region, "region": region, "id": region}
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci", "id": "x"}
    if token == "aws:index/getPartition:getPartition":
        return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        names = [f"{region}{s}" for s in "abc"]
        return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 4)], "id": region}
    if token == "aws:ec2/getAmi:getAmi":
        return {"id": "ami-0123456789abcdef0", "architecture": "x86_64", "name": "al2023-ami"}
    if token == "aws:ec2/getSubnet:getSubnet":
        subnet = str(args.get("id", "subnet-0"))
        zone = "abc"[int(hashlib.sha256(subnet.encode()).hexdigest(), 16) % 3]
        return {"id": subnet, "availabilityZone": f"{region}{zone}", "vpcId": "vpc-mock"}
    if token == "aws:ec2/getVpc:getVpc":
        return {"id": args.get("id", "vpc-mock"), "cidrBlock": "10.20.0.0/16"}
    if token == "aws:ssm/getParameter:getParameter":
        return {"value": "ami-0123456789abcdef0", "name": args.get("name", ""), "id": "x"}
    if token == "aws:iam/getPolicyDocument:getPolicyDocument":
        return {"json": json.dumps({"Version": "2012-10-17", "Statement": args.get("statements")})}
    if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
        return {
            "userName": "AWS",
            "password": rpc.wrap_rpc_secret("ecr-token"),
            "proxyEndpoint": f"https://{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com",
            "authorizationToken": rpc.wrap_rpc_secret("ecr-token"),
            "id": region,
        }
    return {}


# --- What each AZ offers (instance types, endpoint services), and kept network interfaces ------
# (availability zone, instance type or endpoint service short name such as "ecr.dkr") pairs the
# mocked region does NOT offer. Everything else is offered in every AZ. Tests patch this (with
# monkeypatch) to make one AZ lack a type or a service.
MISSING_OFFERINGS: frozenset[tuple[str, str]] = frozenset()
_MOCK_ZONE_SUFFIXES = "abc"  # the AZs getAvailabilityZones answers
_MOCK_INSTANCE_TYPES = ("m6i.large", "m6i.xlarge", "m6i.2xlarge", "m7i.large", "c6i.large")


def _offerings_result(token: str, args: dict[str, Any], region: str) -> dict[str, Any] | None:
    """DescribeInstanceTypeOfferings and DescribeVpcEndpointServices as AWS answers them: only
    what is offered, per AZ; None for any other invoke."""
    zones = [f"{region}{suffix}" for suffix in _MOCK_ZONE_SUFFIXES]
    if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
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
            raise OfflineProgramError(f"mock offerings: locationType {location_type!r} not mocked")
        return {
            "id": region,
            "instanceTypes": [t for t, _ in rows],
            "locations": [z for _, z in rows],
            "locationTypes": [location_type] * len(rows),
            "locationType": location_type,
        }
    if token == "aws:ec2/getVpcEndpointService:getVpcEndpointService":
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
    return None


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


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, region: str, stack_outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self.region = region
        self.stack_outputs = stack_outputs
        self.invokes: list[str] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict]:
        if args.typ == "pulumi:pulumi:StackReference":
            ref = str(args.inputs.get("name", args.name))
            if ref not in self.stack_outputs:
                raise OfflineProgramError(f"no outputs given for stack reference {ref!r}")
            outputs = dict(self.stack_outputs[ref])
            return ref, {**args.inputs, "name": ref, "outputs": outputs, "secretOutputNames": []}
        state = _computed_state(args.typ, args.name, args.inputs, self.region)
        resource_id = state.pop("id")
        return resource_id, {**args.inputs, **state}

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict:  # type: ignore[override]
        self.invokes.append(args.token)
        return _call_result(args.token, args.args, self.region)


ROOT_STACK_TYPE = "pulumi:pulumi:Stack"


def urn_parts(urn: str) -> tuple[str, str, str, str]:
    """(stack, project, qualified type, name) of a URN."""
    stack, project, qualified, name = urn.removeprefix("urn:pulumi:").split("::", 3)
    return stack, project, qualified, name


def real_urn(parent_urn: str, type_: str, name: str, stack: str = "", project: str = "") -> str:
    """The URN the engine gives a resource: its parent's whole type chain, `$`, its own type
    (pulumi/pulumi sdk/go/common/resource/urn.go NewURN; a child of the root stack has only its
    own type). Stack and project default to those of `parent_urn`, else the running program's."""
    qualified = type_
    if parent_urn:
        parent_stack, parent_project, parent_type, _ = urn_parts(parent_urn)
        stack, project = stack or parent_stack, project or parent_project
        if parent_type != ROOT_STACK_TYPE:
            qualified = f"{parent_type}${type_}"
    stack = stack or pulumi.get_stack()
    project = project or pulumi.get_project()
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


def _alias(alias: Any) -> dict[str, Any]:
    """One alias of a register request, as plain data."""
    if alias.WhichOneof("alias") == "urn":
        return {"urn": alias.urn}
    spec = alias.spec
    return {
        "name": spec.name,
        "type": spec.type,
        "stack": spec.stack,
        "project": spec.project,
        "parentUrn": spec.parentUrn,
        "noParent": spec.noParent,
    }


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.declared: list[DeclaredResource] = []
        self.real_urns: dict[str, str] = {}  # mock URN -> the real engine's URN

    def _real_urn(self, mock_urn: str, parent: str, type_: str, name: str) -> str:
        real = real_urn(self.real_urns.get(parent, ""), type_, name)
        self.real_urns[mock_urn] = real
        return real

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.real_urns[response.urn] = response.urn
            return response
        secrets: set[str] = set()
        inputs = _unwrap(rpc.deserialize_properties(request.object), "", secrets)
        urn = self.make_urn(request.parent, request.type, request.name)
        state = _unwrap(self.resources[urn].state, "", set())
        self.declared.append(
            DeclaredResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent_urn=request.parent,
                custom=bool(request.custom),
                inputs=inputs,
                secret_paths=frozenset(secrets),
                state=state,
                provider=request.provider,
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                ignore_changes=tuple(request.ignoreChanges),
                id=str(response.id or ""),
                real_urn=self._real_urn(urn, request.parent, request.type, request.name),
                aliases=tuple(_alias(a) for a in request.aliases),
                dependencies=tuple(request.dependencies),
            )
        )
        return response

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        """Reads (StackReferences, `get`s) are declarations too: record them."""
        response = super().ReadResource(request)
        secrets: set[str] = set()
        inputs = _unwrap(rpc.deserialize_properties(request.properties), "", secrets)
        urn = response.urn
        self.declared.append(
            DeclaredResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent_urn=request.parent,
                custom=True,
                inputs=inputs,
                secret_paths=frozenset(secrets),
                state=_unwrap(self.resources[urn].state, "", set()),
                provider=request.provider,
                id=str(request.id or ""),
                real_urn=self._real_urn(urn, request.parent, request.type, request.name),
            )
        )
        return response


def load_stack_config(stack: str, root: Path = ROOT) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml, keys as written (`quorum-ha:setup`)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path.name} in {root}")
    data = yaml.safe_load(path.read_text()) or {}
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path.name}: 'config' must be a mapping")
    return config


def _engine_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Pulumi hands structured values to the program as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise OfflineProgramError(
                f"config {key!r} is encrypted in the stack file; pass its value in secrets="
            )
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def _resolve(value: Any) -> tuple[Any, bool]:
    output = pulumi.Output.from_input(value)
    resolved = _sync_await(output.future(with_unknowns=True))
    secret = bool(_sync_await(output.is_secret()))
    return resolved, secret


def run_offline(
    config: Mapping[str, Any],
    *,
    stack: str = "dev",
    secrets: Mapping[str, Any] | None = None,
    stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    program: Path | Callable[[], None] = ROOT / "__main__.py",
    region: str | None = None,
) -> OfflineRun:
    """Run the program (a path to run, or a callable) under mocks and return what it declared.

    `config` keys are full (`quorum-ha:setup`); `secrets` are extra config values marked secret;
    `stack_outputs` answers StackReferences by stack name.
    """
    context = contextvars.copy_context()
    return context.run(
        _run_in_context, config, stack, secrets or {}, stack_outputs or {}, program, region
    )


def _run_in_context(
    config: Mapping[str, Any],
    stack: str,
    secrets: Mapping[str, Any],
    stack_outputs: Mapping[str, Mapping[str, Any]],
    program: Path | Callable[[], None],
    region: str | None,
) -> OfflineRun:
    all_config = {**config, **secrets}
    region = region or str(all_config.get("aws:region", "us-east-1"))
    all_config.setdefault("aws:region", region)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_settings.ROOT.set(None)
        set_all_config(_engine_config(all_config), list(secrets))
        mocks = _Mocks(region, stack_outputs)
        monitor = _RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor
        )
        root = pulumi_settings.get_root_resource()
        try:
            if callable(program):
                program()
            else:
                with _program_on_path(program.parent):
                    runpy.run_path(str(program), run_name="__main__")
            _sync_await(pulumi.runtime.stack.wait_for_rpcs())
        except pulumi.RunError as error:
            # Let the RPCs already queued finish so the loop closes clean.
            with contextlib.suppress(Exception):
                _sync_await(pulumi.runtime.stack.wait_for_rpcs())
            raise OfflineProgramError(str(error)) from error
        except Exception:
            # A failure inside a mock or an apply: drain as well, or the next run inherits
            # tasks bound to this run's closed loop.
            with contextlib.suppress(Exception):
                _sync_await(pulumi.runtime.stack.wait_for_rpcs())
            raise
        outputs: dict[str, Any] = {}
        secret_outputs: set[str] = set()
        for name, value in getattr(root, "outputs", {}).items():
            resolved, is_secret = _resolve(value)
            outputs[name] = _unwrap(resolved, name, secret_outputs)
            if is_secret:
                secret_outputs.add(name)
        return OfflineRun(
            resources=list(monitor.declared),
            outputs=outputs,
            secret_outputs=frozenset(secret_outputs),
            invokes=list(mocks.invokes),
        )
    finally:
        _discard_pending(loop)
        asyncio.set_event_loop(None)
        loop.close()
        if sys.exc_info()[0] is not None:
            # A failed apply leaves Output futures holding its exception in reference cycles.
            # Collect them now: collected later, inside some ast.parse, their finalizers trip
            # CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905).
            gc.collect()


def _discard_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Pulumi's RPC manager and output list are process-wide: a failed run must not hand its
    half-finished tasks (bound to a loop about to close) to the next run."""
    settings = pulumi_settings.SETTINGS
    settings.rpc_manager.clear()
    with settings.lock:
        settings.outputs.clear()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


class _program_on_path:  # noqa: N801 - used as a context manager, reads like one
    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)

    def __enter__(self) -> None:
        sys.path.insert(0, self.directory)

    def __exit__(self, *exc: object) -> None:
        sys.path.remove(self.directory)


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, leaf) in a nested inputs/outputs value, for invariant checks."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, value


def instance_user_data(inputs: Mapping[str, Any]) -> str | None:
    """The plain user data of a declared instance's inputs (userData or userDataBase64)."""
    for key in ("userData", "userDataBase64"):
        value = inputs.get(key)
        if isinstance(value, str) and value:
            return unpack_user_data(value)
    return None


def policy_documents(run: OfflineRun) -> list[tuple[DeclaredResource, dict[str, Any]]]:
    """Every IAM policy the program declared (inline, managed, key and trust policies)."""
    fields = {
        "aws:iam/rolePolicy:RolePolicy": "policy",
        "aws:iam/policy:Policy": "policy",
        "aws:iam/role:Role": "assumeRolePolicy",
        "aws:kms/key:Key": "policy",
        "aws:kms/replicaKey:ReplicaKey": "policy",
    }
    found = []
    for resource in run.resources:
        text = resource.inputs.get(fields.get(resource.type, ""), None)
        if isinstance(text, str) and text:
            found.append((resource, json.loads(text)))
    return found


def _is_under(path: str, roots: frozenset[str]) -> bool:
    return any(path == r or path.startswith((f"{r}.", f"{r}[")) for r in roots)


_SECRET_FIELD = re.compile(r"(password|token|secret|private|ciphertext)", re.IGNORECASE)


def _texts(value: Any) -> Iterator[str]:
    """A secret's text, and the secret-named strings inside it when it is a JSON document
    (the password beside a keystore, not the keystore's cipher name)."""
    if not isinstance(value, str):
        return
    yield value
    try:
        parsed = json.loads(value)
    except ValueError:
        return
    if isinstance(parsed, dict | list):
        for path, leaf in walk(parsed):
            if isinstance(leaf, str) and _SECRET_FIELD.search(re.split(r"[.\[]", path)[-1]):
                yield leaf


def secret_texts(run: OfflineRun, *, min_length: int = 8) -> set[str]:
    """Every secret string the run declared: secret inputs (and the strings inside them) and
    the secret results of random resources. Short strings are left out: they match by chance.

    When the engine marks a whole structure secret (a list of registry logins, say), only the
    fields named like secrets count: the registry's address beside its password is not one.
    """
    found: set[str] = set()
    for resource in run.resources:
        for path, leaf in walk(resource.inputs):
            if path in resource.secret_paths:
                found.update(_texts(leaf))
            elif _is_under(path, resource.secret_paths):
                field_name = re.split(r"[.\[]", path)[-1]
                if _SECRET_FIELD.search(field_name):
                    found.update(_texts(leaf))
        if resource.type.startswith("random:"):
            for name in ("result", "base64", "hex"):
                found.update(_texts(resource.state.get(name)))
    return {text for text in found if len(text) >= min_length}


def public_texts(run: OfflineRun) -> Iterator[tuple[str, str]]:
    """(where, text) of everything the run shows in clear: non-secret inputs, the files in
    user data, and non-secret outputs."""
    for resource in run.resources:
        for path, leaf in walk(resource.inputs):
            if isinstance(leaf, str) and not _is_under(path, resource.secret_paths):
                yield f"{resource.name}.{path}", leaf
        user_data = instance_user_data(resource.inputs)
        if user_data is not None and user_data.startswith("#cloud-config"):
            yield f"{resource.name} user data", user_data
            for file_path, text in cloud_config_files(user_data).items():
                yield f"{resource.name} user data {file_path}", text
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            yield f"output {name}", json.dumps(value)


# ---------------------------------------------------------------- the engine's alias matching


def _collapse_alias(
    alias: Mapping[str, Any], resource: DeclaredResource, mock_to_real: Mapping[str, str]
) -> str:
    """An alias spec as the URN it stands for (engine: stepGenerator.collapseAliasToUrn)."""
    if "urn" in alias:
        return str(alias["urn"])
    if alias.get("noParent"):
        parent = ""
    elif alias.get("parentUrn"):
        parent = mock_to_real.get(alias["parentUrn"], alias["parentUrn"])
    else:
        parent = mock_to_real.get(resource.parent_urn, "")
    stack, project, _, _ = urn_parts(resource.real_urn)
    return real_urn(
        parent,
        alias.get("type") or resource.type,
        alias.get("name") or resource.name,
        alias.get("stack") or stack,
        alias.get("project") or project,
    )


def _inherited_alias(child_type: str, child_name: str, parent_name: str, parent_alias: str) -> str:
    """engine: stepGenerator.inheritedChildAlias. A child named after its parent takes the
    aliased parent's name in its own name too."""
    stack, project, parent_type, alias_name = urn_parts(parent_alias)
    if child_name.startswith(parent_name):
        child_name = alias_name + child_name[len(parent_name) :]
    return f"urn:pulumi:{stack}::{project}::{parent_type}${child_type}::{child_name}"


def previous_urns(before: OfflineRun, after: OfflineRun) -> dict[str, str | None]:
    """For each resource of `after` (by real URN), the real URN of the `before` resource the
    engine would take it to be, or None when it would create it anew.

    As pulumi/pulumi pkg/resource/deploy/step_generator.go does it: the resource's own URN
    first, then its aliases (own aliases; the alias its parent was matched by, inherited; and
    each own alias under that one), the first present in the old state winning; a parent matched
    through an alias passes only that alias on to its children.
    """
    olds = {r.real_urn for r in before.resources}
    mock_to_real = {r.urn: r.real_urn for r in after.resources}
    matched_alias: dict[str, str] = {}  # after real URN -> the old URN it was matched by
    result: dict[str, str | None] = {}
    for resource in after.resources:  # registration order: parents come first
        own = resource.real_urn
        candidates = [_collapse_alias(a, resource, mock_to_real) for a in resource.aliases]
        parent_real = mock_to_real.get(resource.parent_urn, "")
        parent_alias = matched_alias.get(parent_real)
        if parent_alias is not None:
            parent_name = urn_parts(parent_real)[3]
            inherited = [_inherited_alias(resource.type, resource.name, parent_name, parent_alias)]
            for alias in list(candidates):
                _, _, qualified, name = urn_parts(alias)
                inherited.append(
                    _inherited_alias(qualified.split("$")[-1], name, parent_name, parent_alias)
                )
            candidates += inherited
        if own in olds:
            result[own] = own
            continue
        found = next((c for c in candidates if c in olds), None)
        if found is not None:
            matched_alias[own] = found
        result[own] = found
    return result
