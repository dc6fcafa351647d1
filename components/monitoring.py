"""What tells the operator that the HA path lost a spare: CloudWatch alarms to one SNS topic, an
RDS event subscription, and one dashboard, all read from the metric catalog (domain/metrics.py).

`AlarmTopic` comes first (the machines' recover alarms notify it too); `Monitoring` comes last,
once the proxy, database and machines it watches exist. Every alarm's description names the
runbook section (docs/runbooks.md) that says what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import Component
from components.settings.alarms import ALARM_RATE_MINUTES, AlarmSettings
from domain import metrics as m
from domain.metrics import Metric
from node_bootstrap.proxy import Q2T_UPSTREAM

RUNBOOKS = "docs/runbooks.md"
# docs/runbooks.md, "Alarms": one section per alarm family (a test checks each exists).
RUNBOOK_TARGET_GROUP = "target-group-degraded-or-down"
RUNBOOK_PROXY_TASKS = "proxy-tasks-below-desired"
RUNBOOK_UPSTREAM_DOWN = "upstream-server-down"
RUNBOOK_UPSTREAM_ERRORS = "upstream-failures-retries-mirror-failures-and-5xx"
RUNBOOK_CHAIN_STALLED = "quorum-chain-head-not-advancing"
RUNBOOK_PEERS = "quorum-peers-below-expected"
RUNBOOK_BEHIND = "quorum-node-behind-the-other"
RUNBOOK_DEEP_CHECK = "tessera-deep-check-failing"
RUNBOOK_PARTIES = "tessera-party-counts-diverging"
RUNBOOK_DATABASE = "database-cpu-storage-connections-or-replica-lag"
RUNBOOK_DB_EVENTS = "database-events-failover"
RUNBOOK_MACHINE = "machine-status-check-failed"

# CreateEventSubscription EventCategories for db-instance (RDS user guide, "Amazon RDS event
# categories and event messages"): failover and failure are the HA path's; the others say the
# instance went away, ran low on storage or its replica broke.
DB_EVENT_CATEGORIES = ("availability", "failover", "failure", "low storage", "read replica")
MINUTE = 60
RATE_PERIOD = ALARM_RATE_MINUTES * MINUTE
GIB = 1024**3


def load_balancer_dimension(arn: str) -> str:
    """`net/<name>/<id>`: the LoadBalancer dimension, the ARN's part after `loadbalancer/`."""
    _, sep, suffix = arn.partition(":loadbalancer/")
    if not sep or not suffix.startswith("net/"):
        raise ValueError(f"not a Network Load Balancer ARN: {arn!r}")
    return suffix


def target_group_dimension(arn: str) -> str:
    """`targetgroup/<name>/<id>`: the TargetGroup dimension, the ARN's last part."""
    suffix = arn.rsplit(":", 1)[-1]
    if not suffix.startswith("targetgroup/"):
        raise ValueError(f"not a target group ARN: {arn!r}")
    return suffix


def proxy_upstreams(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Upstream name -> its servers (`host:port`), the labels the proxy's metrics carry."""
    return {name: list(up["servers"]) for name, up in config["upstreams"].items()}


def proxy_listeners(config: Mapping[str, Any]) -> dict[str, str]:
    """Listener name -> protocol (`tcp`, `http` or `jsonrpc`)."""
    return {lst["name"]: lst.get("protocol", "http") for lst in config["listeners"]}


def mirroring_listeners(config: Mapping[str, Any]) -> list[str]:
    """Listeners with a route that mirrors requests (the /partyinfo mirror)."""
    return [
        lst["name"]
        for lst in config["listeners"]
        if any("mirror" in route for route in lst.get("routes", []))
    ]


def stall_seconds(config: Mapping[str, Any]) -> int:
    """The proxy's stalled-chain rule (`stall_after` of the Quorum health check), in seconds."""
    for upstream in config["upstreams"].values():
        stall = upstream.get("health_check", {}).get("stall_after")
        if stall is not None:
            text = str(stall)
            return int(text[:-1]) * (MINUTE if text.endswith("m") else 1)
    raise ValueError("no upstream health check has stall_after")


def dimensions_of(metric: Metric, dimensions: Mapping[str, Any]) -> dict[str, Any]:
    """The dimensions, checked against the catalog: a metric exists only by its declared sets."""
    if tuple(sorted(dimensions)) not in {tuple(sorted(s)) for s in metric.dimension_sets}:
        raise ValueError(
            f"{metric.name} has dimension sets {metric.dimension_sets}, not {sorted(dimensions)}"
        )
    return dict(dimensions)


# --- the topic ---------------------------------------------------------------------------------
@dataclass
class AlarmTopicArgs:
    name_prefix: str
    alarms: AlarmSettings


class AlarmTopic(pulumi.ComponentResource):
    """The SNS topic every alarm notifies: the operator's own, or one with email subscriptions.

    Not encrypted: alarm and RDS event messages carry names and states, no data, and a topic
    under a customer key needs that key's policy to admit CloudWatch and RDS as well.
    """

    arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:monitoring:AlarmTopic", name, None, opts)
        alarms = args.alarms
        if alarms.topic_arn is not None:
            self.arn = pulumi.Output.from_input(alarms.topic_arn)
        else:
            topic = aws.sns.Topic(
                f"{name}-topic",
                name=f"{args.name_prefix}-alarms",
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.arn = topic.arn
            for email in alarms.emails:
                # Named by the address, not its position: reordering the list keeps every
                # confirmed subscription (a new one waits for its recipient to confirm).
                digest = hashlib.sha256(email.lower().encode()).hexdigest()[:8]
                aws.sns.TopicSubscription(
                    f"{name}-email-{digest}",
                    topic=topic.arn,
                    protocol="email",
                    endpoint=email,
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({"arn": self.arn})


# --- alarms and dashboard ----------------------------------------------------------------------
@dataclass
class MonitoredMachine:
    dns_name: str
    instance_id: pulumi.Input[str]


@dataclass
class MonitoringArgs:
    name_prefix: str
    region: str
    alarms: AlarmSettings
    topic_arn: pulumi.Input[str]
    nlb_arn: pulumi.Input[str]
    target_group_arns: Mapping[str, pulumi.Input[str]]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    proxy_config: Mapping[str, Any]  # the standalone proxy's config (labels of its metrics)
    quorum_dns_names: Sequence[str]
    expected_peers: int  # what the network config implies for each Quorum
    machines: Sequence[MonitoredMachine]
    db_primary_identifier: pulumi.Input[str]
    db_replica_identifier: pulumi.Input[str]
    db_replica_region: str | None  # None: the stack's region
    db_allocated_storage_gib: int
    # The Tessera servers of the IPC proxy on each Quorum machine (setups 2 and 3; else none).
    q2t_servers: Sequence[str] = ()
    title: str = ""


@dataclass(frozen=True)
class Query:
    """One metric of an alarm's math expression."""

    id: str
    metric: Metric
    dimensions: Mapping[str, pulumi.Input[str]]
    stat: str


class Monitoring(Component[MonitoringArgs]):
    """Alarms on every spare of the HA path, an RDS event subscription and one dashboard."""

    alarm_arns: list[pulumi.Output[str]]
    dashboard_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:monitoring:Monitoring", name, args, opts)
        self.alarm_arns = []
        self._load_balancer = pulumi.Output.from_input(args.nlb_arn).apply(load_balancer_dimension)
        self._target_groups = {
            role: pulumi.Output.from_input(arn).apply(target_group_dimension)
            for role, arn in args.target_group_arns.items()
        }
        self._upstreams = proxy_upstreams(args.proxy_config)
        self._listeners = proxy_listeners(args.proxy_config)
        self._target_group_alarms()
        self._proxy_task_alarm()
        self._upstream_alarms()
        self._listener_alarms()
        self._quorum_alarms()
        self._tessera_alarms()
        self._database_alarms()
        self._machine_alarms()
        self.dashboard_name = self._create_dashboard()
        self.register_outputs({"alarmArns": self.alarm_arns, "dashboardName": self.dashboard_name})

    # --- helpers ----------------------------------------------------------------------------
    def _alarm(
        self, key: str, title: str, what: str, runbook: str, **kwargs: Any
    ) -> aws.cloudwatch.MetricAlarm:
        topic = self._args.topic_arn
        alarm = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{key}",
            name=f"{self._args.name_prefix}: {title}",
            alarm_description=f"{what} Runbook: {RUNBOOKS}#{runbook}",
            alarm_actions=[topic],
            ok_actions=[topic],
            **kwargs,
            opts=self._opts(),
        )
        self.alarm_arns.append(alarm.arn)
        return alarm

    def _single(
        self,
        metric: Metric,
        dimensions: Mapping[str, pulumi.Input[str]],
        *,
        stat: str,
        period: int = MINUTE,
        periods: int,
        threshold: float,
        operator: str,
        missing: str = "missing",
    ) -> dict[str, Any]:
        """The arguments of an alarm on one catalog metric.

        By default it reads one-minute periods, and a series not sent leaves it without a verdict
        (INSUFFICIENT_DATA); an alarm that means otherwise says so.
        """
        return {
            "namespace": metric.namespace,
            "metric_name": metric.name,
            "dimensions": dimensions_of(metric, dimensions),
            "statistic": stat,
            "period": period,
            "evaluation_periods": periods,
            "datapoints_to_alarm": periods,
            "threshold": threshold,
            "comparison_operator": operator,
            "treat_missing_data": missing,
        }

    def _math(
        self,
        expression: str,
        queries: Sequence[Query],
        *,
        period: int = MINUTE,
        periods: int,
        threshold: float,
        operator: str,
        missing: str = "missing",
    ) -> dict[str, Any]:
        """The arguments of an alarm on a metric math expression over catalog metrics."""
        metric_queries = [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id="e1", expression=expression, label=expression[:255], return_data=True
            ),
            *(
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id=q.id,
                    metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                        namespace=q.metric.namespace,
                        metric_name=q.metric.name,
                        dimensions=dimensions_of(q.metric, q.dimensions),
                        period=period,
                        stat=q.stat,
                    ),
                    return_data=False,
                )
                for q in queries
            ),
        ]
        return {
            "metric_queries": metric_queries,
            "evaluation_periods": periods,
            "datapoints_to_alarm": periods,
            "threshold": threshold,
            "comparison_operator": operator,
            "treat_missing_data": missing,
        }

    def _rate_count(
        self, metric: Metric, dimensions: Mapping[str, pulumi.Input[str]], threshold: float
    ) -> dict[str, Any]:
        """An alarm on one counter over the rate window; no series sent means none counted."""
        return self._single(
            metric,
            dimensions,
            stat="Sum",
            period=RATE_PERIOD,
            periods=1,
            threshold=threshold,
            operator="GreaterThanThreshold",
            missing="notBreaching",
        )

    def _rate_sum(self, queries: Sequence[Query], threshold: float) -> dict[str, Any]:
        """An alarm on the sum of counters over the rate window; a series not sent is 0."""
        return self._math(
            " + ".join(f"FILL({q.id}, 0)" for q in queries),
            queries,
            period=RATE_PERIOD,
            periods=1,
            threshold=threshold,
            operator="GreaterThanThreshold",
            missing="notBreaching",
        )

    def _down(self, metric: Metric, dimensions: Mapping[str, pulumi.Input[str]]) -> dict[str, Any]:
        """An alarm on a 1 (up) / 0 (down) gauge: down for two minutes; no series, no verdict."""
        return self._single(
            metric,
            dimensions,
            stat="Minimum",
            periods=2,
            threshold=1,
            operator="LessThanThreshold",
        )

    def _spread(
        self, queries: Sequence[Query], *, periods: int, threshold: float
    ) -> dict[str, Any]:
        """An alarm on the gap between the highest and the lowest of like gauges, each minute."""
        ids = ", ".join(q.id for q in queries)
        return self._math(
            f"MAX([{ids}]) - MIN([{ids}])",
            queries,
            periods=periods,
            threshold=threshold,
            operator="GreaterThanThreshold",
        )

    # --- the alarms ---------------------------------------------------------------------------
    def _target_group_alarms(self) -> None:
        for role, target_group in self._target_groups.items():
            dims = {"TargetGroup": target_group, "LoadBalancer": self._load_balancer}
            self._alarm(
                f"{role}-targets-degraded",
                f"{role} target group degraded",
                f"A proxy task is unhealthy in the {role} target group of the NLB: fewer "
                "healthy targets than registered.",
                RUNBOOK_TARGET_GROUP,
                **self._single(
                    m.NLB_UNHEALTHY_HOSTS,
                    dims,
                    stat="Maximum",
                    periods=3,
                    threshold=1,
                    operator="GreaterThanOrEqualToThreshold",
                    missing="notBreaching",
                ),
            )
            self._alarm(
                f"{role}-targets-down",
                f"{role} target group down",
                f"No healthy target in the {role} target group of the NLB: the port is down "
                "(the NLB fails open to unhealthy targets).",
                RUNBOOK_TARGET_GROUP,
                **self._single(
                    m.NLB_HEALTHY_HOSTS,
                    dims,
                    stat="Minimum",
                    periods=2,
                    threshold=1,
                    operator="LessThanThreshold",
                    missing="breaching",
                ),
            )

    def _proxy_task_alarm(self) -> None:
        args = self._args
        dims = {"ClusterName": args.cluster_name, "ServiceName": args.service_name}
        self._alarm(
            "proxy-tasks",
            "proxy tasks below desired",
            "Fewer proxy tasks run than the service wants, for 5 minutes.",
            RUNBOOK_PROXY_TASKS,
            **self._math(
                "desired - running",
                [
                    Query("desired", m.ECS_DESIRED_TASKS, dims, "Maximum"),
                    Query("running", m.ECS_RUNNING_TASKS, dims, "Minimum"),
                ],
                periods=5,
                threshold=1,
                operator="GreaterThanOrEqualToThreshold",
            ),
        )

    def _upstream_alarms(self) -> None:
        alarms = self._args.alarms
        for upstream, servers in self._upstreams.items():
            for index, server in enumerate(servers):
                dims = {"upstream": upstream, "server": server}
                self._alarm(
                    f"{upstream}-{index}-down",
                    f"{upstream} server {server} down",
                    f"The proxy marks {server} of upstream {upstream} down (health checks).",
                    RUNBOOK_UPSTREAM_DOWN,
                    **self._down(m.PROXY_UPSTREAM_HEALTHY, dims),
                )
                self._alarm(
                    f"{upstream}-{index}-failures",
                    f"{upstream} server {server} failing",
                    f"More than {alarms.upstream_failures} failed attempts on {server} of "
                    f"upstream {upstream} in {ALARM_RATE_MINUTES} minutes.",
                    RUNBOOK_UPSTREAM_ERRORS,
                    **self._rate_count(m.PROXY_UPSTREAM_FAILURES, dims, alarms.upstream_failures),
                )

    def _listener_alarms(self) -> None:
        alarms = self._args.alarms
        for listener, protocol in self._listeners.items():
            self._alarm(
                f"{listener}-retries",
                f"{listener} retries",
                f"More than {alarms.retries} requests or connections on {listener} sent again "
                f"to another server in {ALARM_RATE_MINUTES} minutes.",
                RUNBOOK_UPSTREAM_ERRORS,
                **self._rate_count(m.PROXY_RETRIES, {"listener": listener}, alarms.retries),
            )
            if protocol == "jsonrpc":
                # its 5xx: a failed call is answered as a JSON-RPC error, and an unsafe one
                # (eth_sendTransaction...) leaves its client not knowing whether it was sent
                self._alarm(
                    f"{listener}-unknown-outcomes",
                    f"{listener} unknown outcomes",
                    f"More than {alarms.server_errors} calls on {listener} that sign or send "
                    f"with the node's account were cut by a failing Quorum in "
                    f"{ALARM_RATE_MINUTES} minutes: their clients were told the outcome is "
                    f"unknown.",
                    RUNBOOK_UPSTREAM_ERRORS,
                    **self._rate_count(
                        m.PROXY_JSONRPC_UNKNOWN_OUTCOMES,
                        {"listener": listener},
                        alarms.server_errors,
                    ),
                )
            if protocol != "http":
                continue
            queries = [
                Query(
                    f"s{status}", m.PROXY_REQUESTS, {"listener": listener, "status": status}, "Sum"
                )
                for status in m.SERVER_ERROR_STATUSES
            ]
            self._alarm(
                f"{listener}-5xx",
                f"{listener} 5xx to clients",
                f"More than {alarms.server_errors} answers 502/503/504 to clients on "
                f"{listener} in {ALARM_RATE_MINUTES} minutes: no upstream could answer.",
                RUNBOOK_UPSTREAM_ERRORS,
                **self._rate_sum(queries, alarms.server_errors),
            )
        for listener in mirroring_listeners(self._args.proxy_config):
            queries = [
                Query(f"r{i}", m.PROXY_MIRROR, {"listener": listener, "result": result}, "Sum")
                for i, result in enumerate(m.MIRROR_FAILURE_RESULTS)
            ]
            self._alarm(
                f"{listener}-mirror-failures",
                f"{listener} mirror failures",
                f"More than {alarms.mirror_failures} mirrored copies on {listener} did not "
                f"reach their Tessera in {ALARM_RATE_MINUTES} minutes.",
                RUNBOOK_UPSTREAM_ERRORS,
                **self._rate_sum(queries, alarms.mirror_failures),
            )

    def _quorum_alarms(self) -> None:
        args = self._args
        alarms = args.alarms
        stall = stall_seconds(args.proxy_config)
        stall_periods = max(1, alarms.chain_stall_minutes * MINUTE // stall)
        for index, node in enumerate(args.quorum_dns_names):
            dims = {m.NODE_LABEL: node}
            # The proxy's rule: a head that did not move within stall_after is stalled.
            self._alarm(
                f"quorum-{index}-stalled",
                f"{node} chain head not advancing",
                f"The chain head of {node} did not move for {alarms.chain_stall_minutes} "
                "minutes (the proxy's stall rule).",
                RUNBOOK_CHAIN_STALLED,
                **self._math(
                    "DIFF(head)",
                    [Query("head", m.QUORUM_CHAIN_HEAD, dims, "Maximum")],
                    period=stall,
                    periods=stall_periods,
                    threshold=0,
                    operator="LessThanOrEqualToThreshold",
                    # A stopped geth or machine sends no head at all: a stall as well, not
                    # INSUFFICIENT_DATA (CloudWatch, "treat missing data").
                    missing="breaching",
                ),
            )
            for server_index, server in enumerate(args.q2t_servers):
                self._alarm(
                    f"quorum-{index}-q2t-{server_index}-down",
                    f"{node} q2t server {server} down",
                    f"The IPC proxy on {node} marks its Tessera {server} down (Q2T: private "
                    "transactions from this Quorum go to the other Tessera).",
                    RUNBOOK_UPSTREAM_DOWN,
                    **self._down(
                        m.Q2T_UPSTREAM_HEALTHY,
                        {m.NODE_LABEL: node, "upstream": Q2T_UPSTREAM, "server": server},
                    ),
                )
            if args.expected_peers > 0:
                self._alarm(
                    f"quorum-{index}-peers",
                    f"{node} peers below {args.expected_peers}",
                    f"{node} has fewer than {args.expected_peers} peers, what the network "
                    "config implies.",
                    RUNBOOK_PEERS,
                    **self._single(
                        m.QUORUM_PEERS,
                        dims,
                        stat="Minimum",
                        periods=5,
                        threshold=args.expected_peers,
                        operator="LessThanThreshold",
                    ),
                )
        if len(args.quorum_dns_names) > 1:
            queries = [
                Query(f"h{i}", m.QUORUM_CHAIN_HEAD, {m.NODE_LABEL: node}, "Maximum")
                for i, node in enumerate(args.quorum_dns_names)
            ]
            self._alarm(
                "quorum-behind",
                "a Quorum node behind the other",
                f"One HA Quorum node is more than {alarms.block_lag} blocks behind another.",
                RUNBOOK_BEHIND,
                **self._spread(queries, periods=3, threshold=alarms.block_lag),
            )

    def _tessera_alarms(self) -> None:
        alarms = self._args.alarms
        deep = m.TESSERA_DEEP_CHECK_UPSTREAM
        for index, server in enumerate(self._upstreams[deep]):
            self._alarm(
                f"tessera-{index}-deep-check",
                f"Tessera {server} deep check failing",
                f"Tessera {server} answers /upcheck but fails the deep check (database or "
                "shared key).",
                RUNBOOK_DEEP_CHECK,
                **self._down(m.TESSERA_DEEP_CHECK, {"upstream": deep, "server": server}),
            )
        parties = m.TESSERA_PARTY_COUNT_UPSTREAM
        queries = [
            Query(f"p{i}", m.TESSERA_PARTY_COUNT, {"upstream": parties, "server": s}, "Minimum")
            for i, s in enumerate(self._upstreams[parties])
        ]
        self._alarm(
            "tessera-parties",
            "Tessera party counts diverging",
            f"The HA Tessera processes know different numbers of parties for "
            f"{alarms.party_divergence_minutes} minutes (clients get 'Recipient not found').",
            RUNBOOK_PARTIES,
            **self._spread(queries, periods=alarms.party_divergence_minutes, threshold=0),
        )

    def _database_alarms(self) -> None:
        args = self._args
        alarms = args.alarms
        instances = [("db-primary", "primary", args.db_primary_identifier)]
        # Alarms take actions in their own region only (PutMetricAlarm AlarmActions): a replica
        # in another region is on the dashboard, and the event subscription's, not here.
        if args.db_replica_region is None:
            instances.append(("db-replica", "replica", args.db_replica_identifier))
        free_gib = alarms.db_free_storage_gib or max(1, args.db_allocated_storage_gib // 10)
        for key, role, identifier in instances:
            dims = {"DBInstanceIdentifier": identifier}
            checks: list[tuple[str, str, Metric, str, float, str]] = [
                ("cpu", f"CPU above {alarms.db_cpu_percent}%", m.RDS_CPU, "Average",
                 alarms.db_cpu_percent, "GreaterThanThreshold"),
                ("storage", f"free storage below {free_gib} GiB", m.RDS_FREE_STORAGE,
                 "Minimum", free_gib * GIB, "LessThanThreshold"),
                ("connections", f"connections above {alarms.db_connections}",
                 m.RDS_CONNECTIONS, "Maximum", alarms.db_connections, "GreaterThanThreshold"),
            ]  # fmt: skip
            if role == "replica":
                checks.append(
                    ("lag", f"replica lag above {alarms.replica_lag_seconds} s",
                     m.RDS_REPLICA_LAG, "Maximum", alarms.replica_lag_seconds,
                     "GreaterThanThreshold")
                )  # fmt: skip
            for check, title, metric, stat, threshold, operator in checks:
                self._alarm(
                    f"{key}-{check}",
                    f"database {role} {title}",
                    f"The Tessera database {role}: {title}, for 5 minutes.",
                    RUNBOOK_DATABASE,
                    **self._single(
                        metric,
                        dims,
                        stat=stat,
                        periods=5,
                        threshold=threshold,
                        operator=operator,
                    ),
                )
        aws.rds.EventSubscription(
            f"{self._name}-db-events",
            name=f"{args.name_prefix}-tessera-db",
            sns_topic=args.topic_arn,
            source_type="db-instance",
            source_ids=[identifier for _, _, identifier in instances],
            event_categories=list(DB_EVENT_CATEGORIES),
            opts=self._opts(),
        )

    def _machine_alarms(self) -> None:
        for index, machine in enumerate(self._args.machines):
            self._alarm(
                f"machine-{index}-status",
                f"{machine.dns_name} instance status check failed",
                f"{machine.dns_name} fails its instance status check (its OS or its boot); "
                "the recover alarm handles host failures.",
                RUNBOOK_MACHINE,
                **self._single(
                    m.EC2_INSTANCE_CHECK,
                    {"InstanceId": machine.instance_id},
                    stat="Maximum",
                    periods=3,
                    threshold=1,
                    operator="GreaterThanOrEqualToThreshold",
                ),
            )

    # --- the dashboard ------------------------------------------------------------------------
    def _create_dashboard(self) -> pulumi.Output[str]:
        args = self._args
        resolved = pulumi.Output.all(
            load_balancer=self._load_balancer,
            target_groups=pulumi.Output.all(**self._target_groups),
            cluster=args.cluster_name,
            service=args.service_name,
            primary=args.db_primary_identifier,
            replica=args.db_replica_identifier,
            alarms=pulumi.Output.all(*self.alarm_arns),
        )
        body = resolved.apply(
            lambda v: json.dumps(
                dashboard_body(
                    DashboardView(
                        title=args.title,
                        region=args.region,
                        load_balancer=v["load_balancer"],
                        target_groups=v["target_groups"],
                        cluster_name=v["cluster"],
                        service_name=v["service"],
                        upstreams=self._upstreams,
                        listeners=self._listeners,
                        mirroring_listeners=mirroring_listeners(args.proxy_config),
                        quorum_nodes=tuple(args.quorum_dns_names),
                        q2t_servers=tuple(args.q2t_servers),
                        db_instances=(
                            (v["primary"], args.region),
                            (v["replica"], args.db_replica_region or args.region),
                        ),
                        alarm_arns=tuple(v["alarms"]),
                    )
                ),
                sort_keys=True,
            )
        )
        dashboard = aws.cloudwatch.Dashboard(
            f"{self._name}-dashboard",
            dashboard_name=f"{args.name_prefix}-ha",
            dashboard_body=body,
            opts=self._opts(),
        )
        return dashboard.dashboard_name


@dataclass(frozen=True)
class DashboardView:
    """Everything the dashboard shows, resolved to plain values."""

    title: str
    region: str
    load_balancer: str
    target_groups: Mapping[str, str]
    cluster_name: str
    service_name: str
    upstreams: Mapping[str, Sequence[str]]
    listeners: Mapping[str, str]
    mirroring_listeners: Sequence[str]
    quorum_nodes: Sequence[str]
    q2t_servers: Sequence[str]
    db_instances: Sequence[tuple[str, str]]  # (identifier, region)
    alarm_arns: Sequence[str]


def widget_metric(metric: Metric, dimensions: Mapping[str, str], **options: Any) -> list[Any]:
    """One entry of a widget's `metrics`: namespace, name, dimension pairs, options."""
    entry: list[Any] = [metric.namespace, metric.name]
    for name, value in dimensions_of(metric, dimensions).items():
        entry += [name, value]
    return [*entry, options] if options else entry


def _graph(title: str, metrics: list[list[Any]], region: str, stat: str) -> dict[str, Any]:
    return {
        "type": "metric",
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": False,
            "stat": stat,
            "period": MINUTE,
            "metrics": metrics,
        },
    }


def dashboard_body(view: DashboardView) -> dict[str, Any]:
    """The dashboard: the HA path as an operator reads it, left to right, top to bottom."""
    region = view.region
    # a jsonrpc listener counts HTTP requests (its WebSocket streams aside)
    http = [name for name, protocol in view.listeners.items() if protocol != "tcp"]
    tcp = [name for name, protocol in view.listeners.items() if protocol == "tcp"]
    lb = view.load_balancer
    ecs = {"ClusterName": view.cluster_name, "ServiceName": view.service_name}
    graphs = [
        _graph(
            "Requests per listener (proxy)",
            [widget_metric(m.PROXY_REQUESTS, {"listener": name}) for name in http]
            + [widget_metric(m.PROXY_TCP_CONNECTIONS, {"listener": name}) for name in tcp],
            region,
            "Sum",
        ),
        _graph(
            "5xx answered to clients",
            [
                widget_metric(m.PROXY_REQUESTS, {"listener": name, "status": status})
                for name in http
                for status in m.SERVER_ERROR_STATUSES
            ],
            region,
            "Sum",
        ),
        _graph(
            "NLB targets: healthy and unhealthy",
            [
                widget_metric(
                    metric, {"TargetGroup": tg, "LoadBalancer": lb}, label=f"{role} {label}"
                )
                for role, tg in view.target_groups.items()
                for metric, label in (
                    (m.NLB_HEALTHY_HOSTS, "healthy"),
                    (m.NLB_UNHEALTHY_HOSTS, "unhealthy"),
                )
            ],
            region,
            "Minimum",
        ),
        _graph(
            "Proxy tasks: running and desired",
            [widget_metric(m.ECS_RUNNING_TASKS, ecs), widget_metric(m.ECS_DESIRED_TASKS, ecs)],
            region,
            "Average",
        ),
        _graph(
            "Upstream servers up (1) or down (0)",
            [
                widget_metric(m.PROXY_UPSTREAM_HEALTHY, {"upstream": up, "server": server})
                for up, servers in view.upstreams.items()
                for server in servers
            ],
            region,
            "Minimum",
        ),
        _graph(
            "Retries, mirror copies and upstream failures",
            [widget_metric(m.PROXY_RETRIES, {"listener": name}) for name in view.listeners]
            + [
                widget_metric(m.PROXY_MIRROR, {"listener": name, "result": result})
                for name in view.mirroring_listeners
                for result in ("ok", *m.MIRROR_FAILURE_RESULTS)
            ]
            + [
                widget_metric(m.PROXY_UPSTREAM_FAILURES, {"upstream": up, "server": server})
                for up, servers in view.upstreams.items()
                for server in servers
            ],
            region,
            "Sum",
        ),
        _graph(
            "Chain head of each Quorum",
            [widget_metric(m.QUORUM_CHAIN_HEAD, {m.NODE_LABEL: n}) for n in view.quorum_nodes],
            region,
            "Maximum",
        ),
        _graph(
            "Q2T: Tessera servers as each Quorum's IPC proxy sees them",
            [
                widget_metric(
                    m.Q2T_UPSTREAM_HEALTHY,
                    {m.NODE_LABEL: node, "upstream": Q2T_UPSTREAM, "server": server},
                )
                for node in view.quorum_nodes
                for server in view.q2t_servers
            ],
            region,
            "Minimum",
        ),
        _graph(
            "Peers of each Quorum",
            [widget_metric(m.QUORUM_PEERS, {m.NODE_LABEL: n}) for n in view.quorum_nodes],
            region,
            "Minimum",
        ),
        _graph(
            "Tessera deep check (1 up) and parties known",
            [
                widget_metric(
                    m.TESSERA_DEEP_CHECK,
                    {"upstream": m.TESSERA_DEEP_CHECK_UPSTREAM, "server": server},
                )
                for server in view.upstreams[m.TESSERA_DEEP_CHECK_UPSTREAM]
            ]
            + [
                widget_metric(
                    m.TESSERA_PARTY_COUNT,
                    {"upstream": m.TESSERA_PARTY_COUNT_UPSTREAM, "server": server},
                    yAxis="right",
                )
                for server in view.upstreams[m.TESSERA_PARTY_COUNT_UPSTREAM]
            ],
            region,
            "Minimum",
        ),
        _graph(
            "Database: CPU % and connections",
            [
                widget_metric(metric, {"DBInstanceIdentifier": ident}, region=db_region)
                for ident, db_region in view.db_instances
                for metric in (m.RDS_CPU, m.RDS_CONNECTIONS)
            ],
            region,
            "Maximum",
        ),
        _graph(
            "Database: free storage (bytes) and replica lag (s)",
            [
                widget_metric(m.RDS_FREE_STORAGE, {"DBInstanceIdentifier": ident}, region=r)
                for ident, r in view.db_instances
            ]
            + [
                widget_metric(
                    m.RDS_REPLICA_LAG, {"DBInstanceIdentifier": ident}, region=r, yAxis="right"
                )
                for ident, r in view.db_instances[1:]
            ],
            region,
            "Minimum",
        ),
        _graph(
            "NLB: new flows and target resets",
            [
                widget_metric(m.NLB_NEW_FLOWS, {"LoadBalancer": lb}),
                widget_metric(m.NLB_TARGET_RESETS, {"LoadBalancer": lb}),
            ],
            region,
            "Sum",
        ),
    ]
    header = {
        "type": "text",
        "x": 0,
        "y": 0,
        "width": 24,
        "height": 2,
        "properties": {
            "markdown": f"# {view.title or 'quorum-ha'}\nEach alarm names its runbook "
            f"section in {RUNBOOKS}. Dashboard generated from domain/metrics.py."
        },
    }
    alarms = {
        "type": "alarm",
        "x": 0,
        "y": 2,
        "width": 24,
        "height": 6,
        "properties": {"title": "HA alarms", "alarms": list(view.alarm_arns)},
    }
    widgets = [header, alarms]
    # Setup 1 has no IPC proxy: no empty graph.
    graphs = [g for g in graphs if g["properties"]["metrics"]]
    for index, graph in enumerate(graphs):
        graph.update(x=(index % 2) * 12, y=8 + (index // 2) * 6, width=12, height=6)
        widgets.append(graph)
    return {"widgets": widgets}
