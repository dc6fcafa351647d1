"""Every metric the alarms and the dashboard read: its namespace, name, dimensions and emitter.

The one home of these facts. `components/monitoring.py` builds alarms and the dashboard from
it; the machines' CloudWatch agent (node_bootstrap/user_data.py) and the proxy's sidecar agent
on Fargate (`metrics_agent_container`) turn Prometheus series into CloudWatch metrics from it;
the tests check each scraped metric against what the proxy really exposes.

How scraped metrics reach CloudWatch: the CloudWatch agent's Prometheus scraper writes embedded
metric format (EMF) log events, and CloudWatch Logs extracts from them the metrics each
`metric_declaration` names, with its dimension sets (CloudWatch user guide,
"ContainerInsights-Prometheus-Setup-configure-ECS" and "...-metrics-conversion"). Gauges go as
they are; counters go as the delta since the previous scrape, so a period's Sum is the count
in that period; histograms are dropped by the agent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

# ipc_proxy: the IPC proxy on each Quorum machine of setups 2 and 3, scraped by the machine's
# agent into the machine's namespace, labelled with the machine's `node`.
Source = Literal["aws", "proxy", "geth", "ipc_proxy"]

# The machines' own metrics (CPU, memory, disk) go to HOST_NAMESPACE; every namespace of ours
# is it or under it, which is what the machines' PutMetricData permission names.
HOST_NAMESPACE = "QuorumHA"
PROXY_NAMESPACE = f"{HOST_NAMESPACE}/Proxy"
QUORUM_NAMESPACE = f"{HOST_NAMESPACE}/Quorum"
# The Prometheus job names, matched by each metric declaration's `label_matcher` on `job`.
PROXY_JOB = "proxy"
QUORUM_JOB = "quorum"
# Label the machines' scrape config adds to geth's series: the machine's DNS name.
NODE_LABEL = "node"
SCRAPE_INTERVAL = "1m"


@dataclass(frozen=True)
class Metric:
    """One CloudWatch metric: where it lives, by which dimension sets, and who emits it."""

    namespace: str
    name: str
    dimension_sets: tuple[tuple[str, ...], ...]
    source: Source
    # Prometheus type of a scraped metric (the agent sends counters as deltas).
    kind: Literal["gauge", "counter", "aws"] = "aws"

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _aws(namespace: str, name: str, *dimensions: str) -> Metric:
    return Metric(namespace, name, (dimensions,), "aws")


# --- AWS's own metrics, of resources the stack declares ---------------------------------------
# NLB: TargetGroup `targetgroup/<name>/<id>` and LoadBalancer `net/<name>/<id>`, the final part
# of each ARN (NLB guide, "CloudWatch metrics for your Network Load Balancer", dimensions).
NLB_HEALTHY_HOSTS = _aws("AWS/NetworkELB", "HealthyHostCount", "TargetGroup", "LoadBalancer")
NLB_UNHEALTHY_HOSTS = _aws("AWS/NetworkELB", "UnHealthyHostCount", "TargetGroup", "LoadBalancer")
NLB_NEW_FLOWS = _aws("AWS/NetworkELB", "NewFlowCount", "LoadBalancer")
NLB_TARGET_RESETS = _aws("AWS/NetworkELB", "TCP_Target_Reset_Count", "LoadBalancer")
# Service task counts come from Container Insights, which the proxy's cluster enables
# (CloudWatch user guide, "Amazon ECS Container Insights metrics": ECS/ContainerInsights
# RunningTaskCount and DesiredTaskCount by ClusterName, ServiceName).
ECS_RUNNING_TASKS = _aws("ECS/ContainerInsights", "RunningTaskCount", "ClusterName", "ServiceName")
ECS_DESIRED_TASKS = _aws("ECS/ContainerInsights", "DesiredTaskCount", "ClusterName", "ServiceName")
# RDS user guide, "Amazon CloudWatch metrics for Amazon RDS" (AWS/RDS by DBInstanceIdentifier).
RDS_CPU = _aws("AWS/RDS", "CPUUtilization", "DBInstanceIdentifier")
RDS_FREE_STORAGE = _aws("AWS/RDS", "FreeStorageSpace", "DBInstanceIdentifier")
RDS_CONNECTIONS = _aws("AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier")
RDS_REPLICA_LAG = _aws("AWS/RDS", "ReplicaLag", "DBInstanceIdentifier")
# EC2 user guide, "Instance metrics" (status checks, by InstanceId).
EC2_SYSTEM_CHECK = _aws("AWS/EC2", "StatusCheckFailed_System", "InstanceId")
EC2_INSTANCE_CHECK = _aws("AWS/EC2", "StatusCheckFailed_Instance", "InstanceId")


# --- our proxy's /metrics (proxy_image/quorum_proxy/metrics.py), scraped by the sidecar agent --
def _proxy(name: str, kind: Literal["gauge", "counter"], *sets: tuple[str, ...]) -> Metric:
    return Metric(PROXY_NAMESPACE, name, sets, "proxy", kind)


PROXY_REQUESTS = _proxy(
    "quorum_proxy_http_requests_total", "counter", ("listener",), ("listener", "status")
)
PROXY_TCP_CONNECTIONS = _proxy("quorum_proxy_tcp_connections_total", "counter", ("listener",))
PROXY_RETRIES = _proxy("quorum_proxy_retries_total", "counter", ("listener",))
PROXY_UPSTREAM_FAILURES = _proxy(
    "quorum_proxy_upstream_failures_total", "counter", ("upstream", "server")
)
PROXY_MIRROR = _proxy("quorum_proxy_mirror_requests_total", "counter", ("listener", "result"))
PROXY_UPSTREAM_HEALTHY = _proxy("quorum_proxy_upstream_healthy", "gauge", ("upstream", "server"))
# Client connections closed over the proxy's connection cap (issue 13: the fd limit): a task
# at its capacity shows here before its clients see refusals.
PROXY_SHED_CONNECTIONS = _proxy("quorum_proxy_shed_connections_total", "counter", ("listener",))
# The JSON-RPC listener (issue 13): calls by class (safe, unsafe, invalid), bodies repeated on
# the next node, unsafe calls answered "outcome unknown", changes of primary.
PROXY_JSONRPC_CALLS = _proxy(
    "quorum_proxy_jsonrpc_calls_total", "counter", ("listener",), ("listener", "class")
)
PROXY_JSONRPC_REPEATS = _proxy("quorum_proxy_jsonrpc_repeats_total", "counter", ("listener",))
PROXY_JSONRPC_UNKNOWN_OUTCOMES = _proxy(
    "quorum_proxy_jsonrpc_unknown_outcomes_total", "counter", ("listener",)
)
PROXY_PRIMARY_CHANGES = _proxy("quorum_proxy_primary_changes_total", "counter", ("listener",))
# Items 3 and 4 of issue 12 (the proxy's Tessera deep check, each Tessera's party count).
TESSERA_DEEP_CHECK = Metric(
    PROXY_NAMESPACE,
    "quorum_proxy_tessera_deep_check_up",
    (("upstream", "server"),),
    "proxy",
    "gauge",
)
TESSERA_PARTY_COUNT = Metric(
    PROXY_NAMESPACE,
    "quorum_proxy_tessera_party_count",
    (("upstream", "server"),),
    "proxy",
    "gauge",
)
# Which of the proxy's upstreams the Tessera checks label: the deep check asks the third-party
# API (GET /keys), the party count the P2P API (GET /partyinfo/keys).
TESSERA_DEEP_CHECK_UPSTREAM = "third_party"
TESSERA_PARTY_COUNT_UPSTREAM = "p2p"
# The proxy answers these to clients when no upstream could (http_exchange.py: 502, 503, 504).
SERVER_ERROR_STATUSES = ("502", "503", "504")
# Mirror copies that did not reach their Tessera (metrics.py: ok is the only success).
MIRROR_FAILURE_RESULTS = ("http_error", "error", "timeout", "dropped")


# --- geth's /debug/metrics/prometheus on each Quorum machine, scraped by the machine's agent ---
def _geth(name: str) -> Metric:
    return Metric(QUORUM_NAMESPACE, name, ((NODE_LABEL,),), "geth", "gauge")


# geth names `chain/head/block` and `p2p/peers` chain_head_block and p2p_peers in Prometheus
# format (go-ethereum metrics/prometheus: "/" becomes "_").
QUORUM_CHAIN_HEAD = _geth("chain_head_block")
QUORUM_PEERS = _geth("p2p_peers")
QUORUM_TXPOOL_PENDING = _geth("txpool_pending")
# Q2T as each Quorum machine's IPC proxy sees its Tessera servers (setups 2 and 3).
Q2T_UPSTREAM_HEALTHY = Metric(
    QUORUM_NAMESPACE,
    "quorum_proxy_upstream_healthy",
    ((NODE_LABEL, "upstream", "server"),),
    "ipc_proxy",
    "gauge",
)

CATALOG: tuple[Metric, ...] = (
    NLB_HEALTHY_HOSTS,
    NLB_UNHEALTHY_HOSTS,
    NLB_NEW_FLOWS,
    NLB_TARGET_RESETS,
    ECS_RUNNING_TASKS,
    ECS_DESIRED_TASKS,
    RDS_CPU,
    RDS_FREE_STORAGE,
    RDS_CONNECTIONS,
    RDS_REPLICA_LAG,
    EC2_SYSTEM_CHECK,
    EC2_INSTANCE_CHECK,
    PROXY_REQUESTS,
    PROXY_TCP_CONNECTIONS,
    PROXY_RETRIES,
    PROXY_UPSTREAM_FAILURES,
    PROXY_MIRROR,
    PROXY_UPSTREAM_HEALTHY,
    PROXY_SHED_CONNECTIONS,
    PROXY_JSONRPC_CALLS,
    PROXY_JSONRPC_REPEATS,
    PROXY_JSONRPC_UNKNOWN_OUTCOMES,
    PROXY_PRIMARY_CHANGES,
    TESSERA_DEEP_CHECK,
    TESSERA_PARTY_COUNT,
    QUORUM_CHAIN_HEAD,
    QUORUM_PEERS,
    QUORUM_TXPOOL_PENDING,
    Q2T_UPSTREAM_HEALTHY,
)
BY_KEY: dict[tuple[str, str], Metric] = {m.key: m for m in CATALOG}


def scraped(source: Source) -> tuple[Metric, ...]:
    """The catalog's metrics one Prometheus endpoint emits."""
    return tuple(m for m in CATALOG if m.source == source)


def metric_declarations(source: Source, job: str) -> list[dict[str, Any]]:
    """The agent's `emf_processor.metric_declaration` for one job: each catalog metric of the
    source, with its dimension sets (one CloudWatch metric per set)."""
    return [
        {
            "source_labels": ["job"],
            "label_matcher": f"^{job}$",
            "dimensions": [list(dims) for dims in metric.dimension_sets],
            "metric_selectors": [f"^{metric.name}$"],
        }
        for metric in scraped(source)
    ]


@dataclass(frozen=True)
class ScrapeJob:
    """One local Prometheus endpoint the agent scrapes."""

    job: str
    target: str
    metrics_path: str


def prometheus_scrape_config(
    jobs: Sequence[ScrapeJob], labels: Mapping[str, str] | None = None
) -> str:
    """A Prometheus scrape config (YAML) for local targets, as the agent reads it."""
    configs = []
    for job in jobs:
        static: dict[str, Any] = {"targets": [job.target]}
        if labels:
            static["labels"] = dict(labels)
        configs.append(
            {"job_name": job.job, "metrics_path": job.metrics_path, "static_configs": [static]}
        )
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "10s"},
            "scrape_configs": configs,
        },
        sort_keys=False,
    )


def prometheus_section(
    *,
    sources: Mapping[str, Source],
    namespace: str,
    log_group: str,
    config_path: str,
) -> dict[str, Any]:
    """The agent config's `logs.metrics_collected.prometheus`: one namespace (the agent has
    one Prometheus pipeline), the catalog's metrics of each job's source."""
    return {
        "log_group_name": log_group,
        "prometheus_config_path": config_path,
        "emf_processor": {
            "metric_namespace": namespace,
            "metric_declaration": [
                declaration
                for job, source in sources.items()
                for declaration in metric_declarations(source, job)
            ],
        },
    }


# The CloudWatch agent image for the proxy's sidecar (Amazon ECR Public gallery,
# cloudwatch-agent/cloudwatch-agent), pinned: an agent upgrade is a change we review.
CLOUDWATCH_AGENT_IMAGE = "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:1.300059.0b1207"
METRICS_AGENT_CONTAINER = "cloudwatch-agent"


def metrics_agent_container(*, admin_port: int, log_group: str, region: str) -> dict[str, Any]:
    """The CloudWatch agent beside the proxy in its Fargate task: scrapes the proxy's /metrics
    on localhost (one network namespace per awsvpc task) and writes EMF to the log group.

    Config through the environment, as AWS's ECS Prometheus templates do (CW_CONFIG_CONTENT,
    and PROMETHEUS_CONFIG_CONTENT read through `env:`; amazon-cloudwatch-container-insights
    ecs-task-definition-templates cwagent-prometheus). Not essential: a failed agent costs
    metrics, never traffic.
    """
    agent_config = {
        "agent": {"region": region},
        "logs": {
            "metrics_collected": {
                "prometheus": prometheus_section(
                    sources={PROXY_JOB: "proxy"},
                    namespace=PROXY_NAMESPACE,
                    log_group=log_group,
                    config_path="env:PROMETHEUS_CONFIG_CONTENT",
                )
            },
            "force_flush_interval": 5,
        },
    }
    scrape = prometheus_scrape_config(
        [ScrapeJob(PROXY_JOB, f"127.0.0.1:{admin_port}", "/metrics")]
    )
    return {
        "name": METRICS_AGENT_CONTAINER,
        "image": CLOUDWATCH_AGENT_IMAGE,
        "essential": False,
        "environment": [
            {"name": "CW_CONFIG_CONTENT", "value": json.dumps(agent_config, sort_keys=True)},
            {"name": "PROMETHEUS_CONFIG_CONTENT", "value": scrape},
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": METRICS_AGENT_CONTAINER,
            },
        },
    }


def prometheus_families(text: str) -> set[str]:
    """The metric family names a Prometheus text exposition declares (# TYPE lines)."""
    return {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(line.split()) >= 4
    }


def series_labels(text: str, family: str) -> Iterable[frozenset[str]]:
    """The label names of each sample of one family in a Prometheus text exposition."""
    for line in text.splitlines():
        if not line.startswith(family + "{"):
            continue
        inner = line[len(family) + 1 : line.index("}")]
        yield frozenset(part.split("=", 1)[0] for part in _split_labels(inner))


def _split_labels(inner: str) -> Sequence[str]:
    parts, current, quoted, escaped = [], "", False, False
    for char in inner:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == '"':
            current, quoted = current + char, not quoted
        elif char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts
