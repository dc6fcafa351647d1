"""A Mermaid architecture diagram drawn from what a program declared under mocks.

Boxes are the declared resources that matter to an operator (NLB listeners, the proxy service,
nodes, databases, secrets, the key), grouped by the component that declared them. Arrows are
found, not assumed: A -> B when A's inputs name B (its ARN, id, DNS name, address or IP),
directly or through glue resources (task definitions, DNS records, IAM roles and policies).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from domain.resource_types import DB_INSTANCE as DATABASE
from domain.resource_types import ECR_REPOSITORY as REPOSITORY
from domain.resource_types import ECS_SERVICE as SERVICE
from domain.resource_types import (
    INSTANCE,
    KMS_KEY,
    LISTENER,
    LOAD_BALANCER,
    SECRET,
    TARGET_GROUP,
)
from domain.user_data import user_data_texts
from tools.offline import DeclaredResource, OfflineRun, walk

SETUP_TITLES = {
    "pair": "Setup 1: Quorum + Tessera pairs",
    "full": "Setup 2: full HA (Quorum and Tessera machines apart)",
    "tessera": "Setup 3: Tessera-only HA",
}

# The program tags each machine with what runs on it; the Name tag is its stable DNS name.
ROLE_TAG = "quorum-ha/role"
ROLE_TITLES = {"pair": "Quorum + Tessera", "quorum": "Quorum", "tessera": "Tessera"}

SHOWN = (LISTENER, SERVICE, INSTANCE, DATABASE, SECRET, KMS_KEY, REPOSITORY)
# Resources nearly everything names (network plumbing): paths never run through them.
HUBS = re.compile(
    r"^(pulumi:providers:|aws:ec2/(vpc|subnet|securityGroup|routeTable|internetGateway|"
    r"natGateway|eip|vpcEndpoint|launchTemplate)|aws:vpc/|aws:route53/zone|aws:ecs/cluster|"
    r"aws:cloudwatch/|aws:rds/(subnetGroup|parameterGroup)|aws:lb/loadBalancer)"
)
# Glue that points *at* what it attaches to (a policy at its role): followed backwards too.
ATTACHMENTS = re.compile(r"^aws:iam/(rolePolicy|rolePolicyAttachment|policyAttachment):")
# State keys whose values identify a resource when another resource's inputs mention them.
IDENTITY_KEYS = (
    "arn",
    "dnsName",
    "address",
    "endpoint",
    "privateIp",
    "privateDns",
    "repositoryUrl",
    "identifier",
)
NAMED_TYPES = re.compile(
    r"^aws:(secretsmanager/secret:|ssm/parameter:|route53/record:|iam/(role|instanceProfile):|"
    r"ecr/repository:)"
)
MIN_TOKEN = 6


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""
    dotted: bool = False


def natural_key(resource: DeclaredResource) -> tuple[object, ...]:
    """Order resources by name with numbers compared as numbers (tessera-2 before tessera-10).

    Registration order under the mocks is not stable (outputs resolve concurrently), so every
    listing is sorted to keep the text identical run to run.
    """
    parts = re.split(r"(\d+)", resource.name)
    return (*[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts], resource.type)


def _strings(resource: DeclaredResource) -> str:
    texts: list[str] = []
    for path, value in walk(resource.inputs):
        if not isinstance(value, str):
            continue
        if path in ("userData", "userDataBase64"):
            # Boot files are often packed (gz+b64): read what the machine will read.
            texts.extend(text for _, text in user_data_texts(value))
        else:
            texts.append(value)
    return "\n".join(texts)


def _tokens(resource: DeclaredResource) -> set[str]:
    state = resource.state
    found: set[str] = set()
    for key in IDENTITY_KEYS:
        value = state.get(key)
        if isinstance(value, str):
            found.add(value)
            if key == "arn":
                # What follows the ARN's last colon is how some resources are named (RDS ids).
                found.add(value.rsplit(":", 1)[-1])
    resource_id = getattr(resource, "id", None)
    if isinstance(resource_id, str):
        found.add(resource_id)
    if NAMED_TYPES.match(resource.type):
        for name in (resource.inputs.get("name"), state.get("name")):
            if isinstance(name, str):
                found.add(name.rstrip("."))
    return {t for t in found if len(t) >= MIN_TOKEN}


class References:
    """Who names whom among the declared resources."""

    def __init__(self, resources: list[DeclaredResource]) -> None:
        self.resources = resources
        owner: dict[str, str] = {}
        shown_owner: set[str] = set()
        for resource in resources:
            for token in _tokens(resource):
                # Two resources may carry one identity (a kept network interface and the
                # instance booted on it share an IP): the one drawn is the one meant.
                if token not in owner or (resource.type in SHOWN and token not in shown_owner):
                    owner[token] = resource.urn
                    if resource.type in SHOWN:
                        shown_owner.add(token)
        self.forward: dict[str, set[str]] = {r.urn: set() for r in resources}
        self.backward: dict[str, set[str]] = {r.urn: set() for r in resources}
        if not owner:
            return
        alternatives = "|".join(re.escape(t) for t in sorted(owner, key=len, reverse=True))
        pattern = re.compile(rf"(?<![A-Za-z0-9_.\-])(?:{alternatives})(?![A-Za-z0-9_])")
        for resource in resources:
            for match in pattern.finditer(_strings(resource)):
                target = owner[match.group(0)]
                if target != resource.urn:
                    self.forward[resource.urn].add(target)
                    self.backward[target].add(resource.urn)
        self.by_urn = {r.urn: r for r in resources}

    def reached(self, start: str, shown: set[str]) -> set[str]:
        """The shown resources `start` names, directly or through glue resources."""
        found: set[str] = set()
        seen = {start}
        frontier = [start]
        while frontier:
            urn = frontier.pop()
            steps = set(self.forward[urn])
            steps |= {b for b in self.backward[urn] if ATTACHMENTS.match(self.by_urn[b].type)}
            for nxt in steps - seen:
                seen.add(nxt)
                if nxt in shown:
                    found.add(nxt)
                elif not HUBS.match(self.by_urn[nxt].type):
                    frontier.append(nxt)
        return found


def _node_id(resource: DeclaredResource, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9]", "_", resource.name).strip("_") or "r"
    candidate, n = base, 2
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    used.add(candidate)
    return candidate


def _short_name(resource: DeclaredResource, components: dict[str, DeclaredResource]) -> str:
    """The name without its component's name in front (`quorum-ha-proxy-rpc` -> `rpc`)."""
    parent = components.get(resource.parent_urn)
    prefix = f"{parent.name}-" if parent is not None else ""
    return resource.name.removeprefix(prefix) if resource.name != prefix else resource.name


def _label(resource: DeclaredResource, components: dict[str, DeclaredResource]) -> str:
    inputs = resource.inputs
    if resource.type == LISTENER:
        port = inputs.get("port")
        port_text = int(port) if isinstance(port, float) else port
        return f":{port_text} {str(inputs.get('protocol', '')).lower()}".strip()
    if resource.type == SERVICE:
        count = inputs.get("desiredCount")
        tasks = f"{int(count)} tasks" if isinstance(count, int | float) else "tasks"
        return f"ECS proxy service {resource.name}<br/>{tasks} ({inputs.get('launchType', '')})"
    if resource.type == INSTANCE:
        tags = inputs.get("tags") or {}
        role = ROLE_TITLES.get(str(tags.get(ROLE_TAG)), "EC2")
        where = tags.get("Name") if isinstance(tags.get("Name"), str) else resource.name
        return f"{role} ({inputs.get('instanceType', 'EC2')})<br/>{where}"
    if resource.type == DATABASE:
        role = "read replica" if inputs.get("replicateSourceDb") else "primary"
        if isinstance(inputs.get("region"), str):
            role += f" in {inputs['region']}"
        multi_az = ", Multi-AZ" if inputs.get("multiAz") else ""
        engine = inputs.get("engine", "postgres")
        return f"RDS {engine} {role}{multi_az}<br/>{resource.name}"
    if resource.type == KMS_KEY:
        rotation = "rotation on" if inputs.get("enableKeyRotation") else "no rotation"
        return f"KMS key {resource.name}<br/>{rotation}"
    if resource.type == REPOSITORY:
        return f"ECR {resource.name}"
    return resource.name


def _shape(resource: DeclaredResource, label: str) -> str:
    text = label.replace('"', "'")
    if resource.type == DATABASE:
        return f'[("{text}")]'
    if resource.type in (SECRET, KMS_KEY):
        return f'{{{{"{text}"}}}}'
    if resource.type == LISTENER:
        return f'(["{text}"])'
    return f'["{text}"]'


INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"


def _client_cidrs(run: OfflineRun) -> str:
    """The CIDRs the load balancers' security groups admit: who the clients can be."""
    groups = {
        g for lb in run.of_type(LOAD_BALANCER) for g in lb.inputs.get("securityGroups") or []
    }
    cidrs: set[str] = set()
    for rule in run.of_type(INGRESS_RULE):
        if rule.inputs.get("securityGroupId") in groups:
            cidrs.update(
                c for c in (rule.inputs.get("cidrIpv4"), rule.inputs.get("cidrIpv6")) if c
            )
    for rule in run.of_type(GROUP_RULE):
        if rule.inputs.get("type") == "ingress" and rule.inputs.get("securityGroupId") in groups:
            cidrs.update(rule.inputs.get("cidrBlocks") or [])
    return ", ".join(sorted(cidrs)) if cidrs else "allowed CIDRs"


def _secrets_box(box: str, secrets: list[DeclaredResource]) -> str:
    names = [str(r.inputs.get("name") or r.name).rsplit("/", 1)[-1] for r in secrets]
    rows = [", ".join(names[i : i + 3]) for i in range(0, len(names), 3)]
    return f'{box}{{{{"Secrets Manager ({len(names)})<br/>{"<br/>".join(rows)}"}}}}'


def _components(run: OfflineRun) -> dict[str, DeclaredResource]:
    return {r.urn: r for r in run.resources if not r.custom and not r.type.startswith("pulumi:")}


def _component_of(resource: DeclaredResource, components: dict[str, DeclaredResource]) -> str:
    parent = resource.parent_urn
    by_urn = {c.urn: c for c in components.values()}
    return parent if parent in by_urn else ""


def _listener_edges(
    run: OfflineRun, ids: dict[str, str], components: dict[str, DeclaredResource]
) -> Iterator[Edge]:
    """Listener -> the service its target group feeds (the TG itself is not drawn)."""
    groups = {r.state.get("arn"): r for r in run.of_type(TARGET_GROUP)}
    services = run.of_type(SERVICE)
    for listener in run.of_type(LISTENER):
        for action in listener.inputs.get("defaultActions") or []:
            group = groups.get(action.get("targetGroupArn"))
            if group is None:
                continue
            arn = group.state.get("arn")
            for service in services:
                feeds = service.inputs.get("loadBalancers") or []
                if any(lb.get("targetGroupArn") == arn for lb in feeds):
                    yield Edge(ids[listener.urn], ids[service.urn], _short_name(group, components))


@dataclass
class _Layout:
    """Box ids and which component (urn, "" for the stack) holds which lines of text."""

    ids: dict[str, str]
    component_ids: dict[str, str]
    components: dict[str, DeclaredResource]
    members: dict[str, list[str]]


def _layout(run: OfflineRun, shown: list[DeclaredResource]) -> _Layout:
    used: set[str] = {"clients"}
    ids = {r.urn: _node_id(r, used) for r in shown}
    components = dict(sorted(_components(run).items(), key=lambda kv: natural_key(kv[1])))
    component_ids = {urn: _node_id(c, used) for urn, c in components.items()}
    members: dict[str, list[str]] = {}

    # Secrets of one component share a box; arrows to any of them go to the box.
    secret_groups: dict[str, list[DeclaredResource]] = {}
    for resource in shown:
        if resource.type == SECRET:
            secret_groups.setdefault(_component_of(resource, components), []).append(resource)
    for group, grouped in secret_groups.items():
        box = f"{component_ids[group]}_secrets" if group else "secrets"
        ids.update((r.urn, box) for r in grouped)
        members.setdefault(group, []).append(_secrets_box(box, grouped))

    # Listeners sit inside their NLB's box; everything else in its component's.
    load_balancers = {r.state.get("arn"): r for r in run.of_type(LOAD_BALANCER)}
    listeners: dict[str, list[str]] = {}
    for resource in shown:
        if resource.type == SECRET:
            continue
        line = f"{ids[resource.urn]}{_shape(resource, _label(resource, components))}"
        lb = load_balancers.get(resource.inputs.get("loadBalancerArn"))
        if resource.type == LISTENER and lb is not None:
            listeners.setdefault(lb.urn, []).append(f"  {line}")
        else:
            members.setdefault(_component_of(resource, components), []).append(line)
    for lb in sorted(load_balancers.values(), key=natural_key):
        if lb.urn in listeners:
            scheme = "internal" if lb.inputs.get("internal") else "internet-facing"
            block = [
                f'subgraph {_node_id(lb, used)}["NLB {lb.name} ({scheme})"]',
                *listeners[lb.urn],
                "end",
            ]
            members.setdefault(_component_of(lb, components), []).extend(block)
    return _Layout(ids, component_ids, components, members)


def render_mermaid(run: OfflineRun, setup: str) -> str:
    """The setup's diagram as Mermaid flowchart text (ends with a newline)."""
    shown = sorted((r for r in run.resources if r.type in SHOWN), key=natural_key)
    layout = _layout(run, shown)
    children: dict[str, list[str]] = {}
    for urn, component in layout.components.items():
        children.setdefault(_component_of(component, layout.components), []).append(urn)

    def has_content(urn: str) -> bool:
        return bool(layout.members.get(urn)) or any(has_content(c) for c in children.get(urn, []))

    def emit(urn: str, indent: str) -> Iterator[str]:
        yield from (f"{indent}{line}" for line in layout.members.get(urn, []))
        for child in filter(has_content, children.get(urn, [])):
            component = layout.components[child]
            kind = component.type.rsplit(":", 1)[-1]
            yield f'{indent}subgraph {layout.component_ids[child]}["{kind}: {component.name}"]'
            yield from emit(child, indent + "  ")
            yield f"{indent}end"

    lines = [
        f"%% {SETUP_TITLES.get(setup, setup)}: drawn by tools/diagram.py from the resources",
        "%% the program declared under mocks (python -m tools.plan --all-setups).",
        "flowchart LR",
        f'  clients(["clients<br/>{_client_cidrs(run)}"])',
        *emit("", "  "),
    ]
    for edge in sorted(_edges(run, shown, layout), key=_edge_key):
        arrow = "-.->" if edge.dotted else "-->"
        label = f"|{edge.label}|" if edge.label else ""
        lines.append(f"  {edge.source} {arrow}{label} {edge.target}")
    return "\n".join(lines) + "\n"


def _edge_key(edge: Edge) -> tuple[int, str, str]:
    # Traffic first (clients, listeners, proxy, nodes), then the dotted relations.
    return (int(edge.dotted), edge.source, edge.target)


def _edges(run: OfflineRun, shown: list[DeclaredResource], layout: _Layout) -> Iterable[Edge]:
    ids, components = layout.ids, layout.components
    shown_urns = {r.urn for r in shown}
    refs = References(run.resources)
    by_urn = {r.urn: r for r in run.resources}
    emitted: set[tuple[str, str]] = set()

    def once(edge: Edge) -> Iterator[Edge]:
        if (edge.source, edge.target) not in emitted:
            emitted.add((edge.source, edge.target))
            yield edge

    for listener in sorted(run.of_type(LISTENER), key=natural_key):
        yield from once(Edge("clients", ids[listener.urn]))
    for edge in _listener_edges(run, ids, components):
        yield from once(edge)
    for resource in shown:
        targets = [by_urn[u] for u in refs.reached(resource.urn, shown_urns)]
        for target in sorted(targets, key=natural_key):
            found = _edge_for(resource, target, ids)
            if found is not None:
                yield from once(found)


def _role(resource: DeclaredResource) -> str:
    tags = resource.inputs.get("tags") or {}
    return str(tags.get(ROLE_TAG, ""))


def _machine_link(source: DeclaredResource, target: DeclaredResource) -> str:
    """What one machine naming another means: Quorum to Tessera is Q2T, Quorum to Quorum P2P."""
    roles = (_role(source), _role(target))
    if roles == ("quorum", "tessera"):
        return "q2t"
    if set(roles) <= {"quorum", "pair"} and "" not in roles:
        return "devp2p"
    return "names"


def _edge_for(
    source: DeclaredResource, target: DeclaredResource, ids: dict[str, str]
) -> Edge | None:
    """The arrow (if any) for `source` naming `target`, drawn in the direction data flows."""
    if source.type == INSTANCE and target.type == INSTANCE:
        return Edge(ids[source.urn], ids[target.urn], _machine_link(source, target))
    if (source.type, target.type) in ((SERVICE, INSTANCE), (INSTANCE, DATABASE)):
        return Edge(ids[source.urn], ids[target.urn])
    if source.type == DATABASE and target.type == DATABASE:
        # The replica names its source: data flows primary -> replica.
        return Edge(ids[target.urn], ids[source.urn], "replicates", dotted=True)
    if source.type in (SERVICE, INSTANCE) and target.type == SECRET:
        return Edge(ids[source.urn], ids[target.urn], "reads", dotted=True)
    if source.type in (SECRET, DATABASE) and target.type == KMS_KEY:
        return Edge(ids[source.urn], ids[target.urn], "encrypted by", dotted=True)
    if source.type == SERVICE and target.type == REPOSITORY:
        return Edge(ids[target.urn], ids[source.urn], "image", dotted=True)
    return None
