"""Issue 12 items 1, 2, 5, 7: every alarm and dashboard widget reads a catalog metric that
something in this stack emits, with dimensions naming this stack's resources, and notifies the
topic; each alarm names a runbook section that exists."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from components.monitoring import (
    DB_EVENT_CATEGORIES,
    load_balancer_dimension,
    proxy_upstreams,
    target_group_dimension,
)
from domain import metrics as m
from domain.metrics import BY_KEY, METRICS_AGENT_CONTAINER, Metric
from domain.user_data import cloud_config_files
from tests.conftest import RunProgram
from tools.offline import ROOT, OfflineProgramError, OfflineRun, load_stack_config, run_offline

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def runbook_anchors() -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


@dataclass
class Emitted:
    """What this stack's resources and agents emit: the dimension values that exist."""

    run: OfflineRun

    def __post_init__(self) -> None:
        run = self.run
        (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
        (cluster,) = run.of_type("aws:ecs/cluster:Cluster")
        (service,) = run.of_type("aws:ecs/service:Service")
        (task,) = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
        containers = {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}
        env = {e["name"]: e["value"] for e in containers["proxy"]["environment"]}
        self.proxy_config = json.loads(env["QUORUM_PROXY_CONFIG"])
        self.agent = containers.get(METRICS_AGENT_CONTAINER)
        self.load_balancer = load_balancer_dimension(nlb.state["arn"])
        self.target_groups = {
            target_group_dimension(tg.state["arn"])
            for tg in run.of_type("aws:lb/targetGroup:TargetGroup")
        }
        self.ecs = (cluster.state["name"], service.state["name"])
        region = self._region()
        self.db_identifiers = {
            db.inputs["identifier"]
            for db in run.of_type("aws:rds/instance:Instance")
            if db.inputs.get("region") in (None, region)
        }
        self.instance_ids = {i.id for i in run.of_type("aws:ec2/instance:Instance")}
        roles = run.outputs["nodeDnsNames"]
        self.quorum_nodes = set(roles.get("pair") or roles["quorum"])
        self.upstreams = proxy_upstreams(self.proxy_config)
        self.listeners = {lst["name"] for lst in self.proxy_config["listeners"]}
        # Each Quorum machine's IPC proxy (setups 2 and 3), as its boot writes its config.
        ipc = self._machine_files().get("/etc/quorum-ha/proxy/config.yaml")
        self.ipc_upstreams = proxy_upstreams(yaml.safe_load(ipc)) if ipc else {}

    def _machine_files(self) -> dict[str, str]:
        (instance, *_) = [
            i
            for i in self.run.of_type("aws:ec2/instance:Instance")
            if i.inputs["tags"]["quorum-ha/role"] in ("pair", "quorum")
        ]
        return cloud_config_files(instance.inputs["userDataBase64"])

    def _region(self) -> str:
        (provider,) = [
            p for p in self.run.of_type("pulumi:providers:aws") if p.name == "quorum-ha-aws"
        ]
        return str(provider.inputs["region"])

    def declared(self, source: str) -> dict[str, list[list[str]]]:
        """Metric name -> dimension sets an agent declares for this source."""
        if source == "proxy":
            assert self.agent is not None, "no metrics agent beside the proxy"
            env = {e["name"]: e["value"] for e in self.agent["environment"]}
            prometheus = json.loads(env["CW_CONFIG_CONTENT"])["logs"]["metrics_collected"]
        else:
            agent = json.loads(self._machine_files()["/etc/quorum-ha/cloudwatch-agent.json"])
            prometheus = agent["logs"]["metrics_collected"]
        section = prometheus["prometheus"]
        namespace = section["emf_processor"]["metric_namespace"]
        declared: dict[str, list[list[str]]] = {}
        for declaration in section["emf_processor"]["metric_declaration"]:
            for selector in declaration["metric_selectors"]:
                name = selector.strip("^$")
                declared[f"{namespace}/{name}"] = declaration["dimensions"]
        return declared

    def problems(self, namespace: str, name: str, dimensions: dict[str, str]) -> list[str]:
        """Why this metric would not exist in CloudWatch for this stack (empty: it does)."""
        metric = BY_KEY.get((namespace, name))
        where = f"{namespace}/{name} {dimensions}"
        if metric is None:
            return [f"{where}: not in the catalog"]
        if tuple(sorted(dimensions)) not in {tuple(sorted(s)) for s in metric.dimension_sets}:
            return [f"{where}: not one of the catalog's dimension sets"]
        if metric.source != "aws":
            sets = self.declared(metric.source).get(f"{namespace}/{name}", [])
            if sorted(dimensions) not in [sorted(s) for s in sets]:
                return [f"{where}: no agent declares it with these dimensions"]
        return [f"{where}: {problem}" for problem in self._values(metric, dimensions)]

    def _values(self, metric: Metric, dims: dict[str, str]) -> Iterator[str]:
        upstreams = self.ipc_upstreams if metric.source == "ipc_proxy" else self.upstreams
        known: dict[str, set[str]] = {
            "TargetGroup": self.target_groups,
            "LoadBalancer": {self.load_balancer},
            "ClusterName": {self.ecs[0]},
            "ServiceName": {self.ecs[1]},
            "DBInstanceIdentifier": self.db_identifiers,
            "InstanceId": self.instance_ids,
            m.NODE_LABEL: self.quorum_nodes if metric.source != "proxy" else set(),
            "upstream": set(upstreams),
            "listener": self.listeners,
            "status": set(m.SERVER_ERROR_STATUSES),
            "result": {"ok", *m.MIRROR_FAILURE_RESULTS},
        }
        for name, value in dims.items():
            if name == "server":
                if value not in upstreams.get(dims.get("upstream", ""), []):
                    yield f"server {value!r} is not in upstream {dims.get('upstream')!r}"
            elif value not in known.get(name, set()):
                yield f"{name}={value!r} names nothing this stack declares"


def alarm_metrics(alarm: Any) -> list[tuple[str, str, dict[str, str]]]:
    inputs = alarm.inputs
    if inputs.get("metricName"):
        return [(inputs["namespace"], inputs["metricName"], inputs.get("dimensions") or {})]
    found = []
    for query in inputs.get("metricQueries") or []:
        if "metric" in query:
            metric = query["metric"]
            found.append((metric["namespace"], metric["metricName"], metric["dimensions"]))
    return found


def monitoring_alarms(run: OfflineRun) -> list[Any]:
    return [a for a in run.of_type(ALARM) if "-monitoring-" in a.name]


@pytest.fixture(scope="module")
def prod_run() -> OfflineRun:
    return run_offline(load_stack_config("prod"), stack="prod")


def runs(shaped_run: OfflineRun, prod_run: OfflineRun) -> list[OfflineRun]:
    return [shaped_run, prod_run]


def test_every_alarm_reads_a_metric_this_stack_emits_and_notifies_the_topic(
    shaped_run: OfflineRun, prod_run: OfflineRun
) -> None:
    for run in runs(shaped_run, prod_run):
        emitted = Emitted(run)
        (topic,) = run.of_type("aws:sns/topic:Topic")
        alarms = run.of_type(ALARM)
        assert len(alarms) > len(emitted.instance_ids)
        problems = []
        for alarm in alarms:
            assert topic.state["arn"] in alarm.inputs["alarmActions"], alarm.name
            assert alarm.inputs["okActions"] == [topic.state["arn"]], alarm.name
            metrics = alarm_metrics(alarm)
            assert metrics, f"{alarm.name} reads no metric"
            for namespace, name, dims in metrics:
                problems += [f"{alarm.name}: {p}" for p in emitted.problems(namespace, name, dims)]
        assert problems == []


def test_each_spare_of_the_ha_path_has_its_alarm(
    shaped_run: OfflineRun, shape: tuple[str, int, int]
) -> None:
    emitted = Emitted(shaped_run)
    read: dict[tuple[str, str], list[dict[str, str]]] = {}
    for alarm in monitoring_alarms(shaped_run):
        for namespace, name, dims in alarm_metrics(alarm):
            read.setdefault((namespace, name), []).append(dims)

    def values(metric: Metric, dimension: str) -> set[str]:
        return {d[dimension] for d in read.get(metric.key, [])}

    assert values(m.NLB_HEALTHY_HOSTS, "TargetGroup") == emitted.target_groups
    assert values(m.NLB_UNHEALTHY_HOSTS, "TargetGroup") == emitted.target_groups
    assert values(m.ECS_RUNNING_TASKS, "ServiceName") == {emitted.ecs[1]}
    servers = {s for servers in emitted.upstreams.values() for s in servers}
    assert values(m.PROXY_UPSTREAM_HEALTHY, "server") == servers
    assert values(m.PROXY_UPSTREAM_FAILURES, "server") == servers
    assert values(m.PROXY_RETRIES, "listener") == emitted.listeners
    assert values(m.PROXY_REQUESTS, "listener") == {"third-party", "p2p"}
    # the JSON-RPC listener (22000): calls told "outcome unknown" after a node failed them
    assert values(m.PROXY_JSONRPC_UNKNOWN_OUTCOMES, "listener") == {"quorum-rpc"}
    assert values(m.PROXY_MIRROR, "listener") == {"p2p"}
    assert values(m.QUORUM_CHAIN_HEAD, m.NODE_LABEL) == emitted.quorum_nodes
    assert values(m.TESSERA_DEEP_CHECK, "server") == set(emitted.upstreams["third_party"])
    assert values(m.TESSERA_PARTY_COUNT, "server") == set(emitted.upstreams["p2p"])
    assert values(m.RDS_REPLICA_LAG, "DBInstanceIdentifier") == {"qha-dev-tessera-replica"}
    assert values(m.EC2_INSTANCE_CHECK, "InstanceId") == emitted.instance_ids
    # Setups 2 and 3: each Quorum's IPC proxy, for each of its Tessera servers.
    q2t = {(d[m.NODE_LABEL], d["server"]) for d in read.get(m.Q2T_UPSTREAM_HEALTHY.key, [])}
    ipc_servers = emitted.ipc_upstreams.get("q2t", [])
    assert q2t == {(node, s) for node in emitted.quorum_nodes for s in ipc_servers}
    assert bool(ipc_servers) is (shape[0] != "pair")
    # One HA Quorum has no other to fall behind; one with peers has a peer floor.
    lag = [a for a in monitoring_alarms(shaped_run) if a.name.endswith("quorum-behind")]
    assert len(lag) == (1 if shape[1] > 1 else 0)
    assert len(read.get(m.QUORUM_PEERS.key, [])) == (shape[1] if shape[1] > 1 else 0)


def test_party_alarm_fires_when_any_two_tessera_disagree(shaped_run: OfflineRun) -> None:
    (alarm,) = [a for a in monitoring_alarms(shaped_run) if a.name.endswith("tessera-parties")]
    queries = alarm.inputs["metricQueries"]
    (expression,) = [q for q in queries if q.get("returnData")]
    ids = [q["id"] for q in queries if "metric" in q]
    assert expression["expression"] == f"MAX([{', '.join(ids)}]) - MIN([{', '.join(ids)}])"
    assert alarm.inputs["threshold"] == 0
    assert alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm.inputs["evaluationPeriods"] == 10 == alarm.inputs["datapointsToAlarm"]


def test_chain_stall_alarm_uses_the_proxys_stall_rule(offline: RunProgram) -> None:
    run = offline("full", 2, 2, alarms=json.dumps({"chainStallMinutes": 4}))
    stall = Emitted(run).proxy_config["upstreams"]["quorum"]["health_check"]["stall_after"]
    assert stall == "60s"
    stalled = [a for a in monitoring_alarms(run) if a.name.endswith("-stalled")]
    assert len(stalled) == 2
    for alarm in stalled:
        (expression,) = [q for q in alarm.inputs["metricQueries"] if q.get("returnData")]
        (head,) = [q for q in alarm.inputs["metricQueries"] if "metric" in q]
        assert expression["expression"] == f"DIFF({head['id']})"
        assert head["metric"]["period"] == 60
        assert alarm.inputs["evaluationPeriods"] == 4
        assert alarm.inputs["comparisonOperator"] == "LessThanOrEqualToThreshold"
        # A stopped geth (or its machine) sends no head at all: that is a stall too, not
        # INSUFFICIENT_DATA (CloudWatch, "Configuring how CloudWatch alarms treat missing data").
        assert alarm.inputs["treatMissingData"] == "breaching"


def test_cross_region_replica_is_watched_by_events_and_dashboard_not_by_local_alarms(
    prod_run: OfflineRun,
) -> None:
    read = {
        dims.get("DBInstanceIdentifier")
        for alarm in monitoring_alarms(prod_run)
        for _, _, dims in alarm_metrics(alarm)
    }
    assert "qha-prod-tessera" in read and "qha-prod-tessera-replica" not in read
    (subscription,) = prod_run.of_type("aws:rds/eventSubscription:EventSubscription")
    assert subscription.inputs["sourceIds"] == ["qha-prod-tessera"]
    body = json.loads(
        prod_run.of_type("aws:cloudwatch/dashboard:Dashboard")[0].inputs["dashboardBody"]
    )
    replica = [
        entry
        for widget in body["widgets"]
        for entry in widget["properties"].get("metrics", [])
        if "qha-prod-tessera-replica" in entry
    ]
    assert replica and all(entry[-1]["region"] == "eu-central-1" for entry in replica)


def test_database_events_reach_the_topic(shaped_run: OfflineRun) -> None:
    (topic,) = shaped_run.of_type("aws:sns/topic:Topic")
    (subscription,) = shaped_run.of_type("aws:rds/eventSubscription:EventSubscription")
    assert subscription.inputs["snsTopic"] == topic.state["arn"]
    assert subscription.inputs["sourceType"] == "db-instance"
    assert sorted(subscription.inputs["sourceIds"]) == [
        "qha-dev-tessera",
        "qha-dev-tessera-replica",
    ]
    assert "failover" in subscription.inputs["eventCategories"]
    assert set(subscription.inputs["eventCategories"]) == set(DB_EVENT_CATEGORIES)


def test_each_alarm_description_names_a_runbook_section_that_exists(
    shaped_run: OfflineRun, prod_run: OfflineRun
) -> None:
    anchors = runbook_anchors()
    for run in runs(shaped_run, prod_run):
        for alarm in run.of_type(ALARM):
            description = alarm.inputs["alarmDescription"]
            match = re.search(r"Runbook: docs/runbooks\.md#([a-z0-9-]+)$", description)
            assert match, f"{alarm.name}: {description!r} names no runbook section"
            assert match[1] in anchors, f"{alarm.name}: no section #{match[1]}"


def test_dashboard_body_parses_and_every_widget_metric_is_emitted(
    shaped_run: OfflineRun, prod_run: OfflineRun
) -> None:
    for run in runs(shaped_run, prod_run):
        emitted = Emitted(run)
        (dashboard,) = run.of_type("aws:cloudwatch/dashboard:Dashboard")
        body = json.loads(dashboard.inputs["dashboardBody"])
        problems, seen = [], set()
        for widget in body["widgets"]:
            assert widget["x"] >= 0 and widget["x"] + widget["width"] <= 24
            for entry in widget["properties"].get("metrics", []):
                options = entry[-1] if isinstance(entry[-1], dict) else {}
                names = entry[:-1] if options else entry
                namespace, name, *pairs = names
                dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
                seen.add(name)
                if options.get("region", emitted._region()) != emitted._region():
                    continue  # the DR replica, in its own region
                problems += emitted.problems(namespace, name, dims)
        assert problems == []
        # The HA path as the issue lists it: listeners, targets, upstreams, retries and
        # mirror, chain heads, database.
        for metric in (
            m.PROXY_REQUESTS,
            m.NLB_HEALTHY_HOSTS,
            m.PROXY_UPSTREAM_HEALTHY,
            m.PROXY_RETRIES,
            m.PROXY_MIRROR,
            m.QUORUM_CHAIN_HEAD,
            m.RDS_CPU,
            m.RDS_REPLICA_LAG,
        ):
            assert metric.name in seen, metric.name
        (alarms,) = [w for w in body["widgets"] if w["type"] == "alarm"]
        monitoring = {a.state["arn"] for a in monitoring_alarms(run)}
        assert set(alarms["properties"]["alarms"]) == monitoring
        assert len(monitoring) <= 100  # an alarm widget shows at most 100


def test_the_proxys_metrics_agent_declares_every_proxy_metric_and_writes_only_its_logs(
    offline: RunProgram,
) -> None:
    run = offline("pair")
    emitted = Emitted(run)
    assert emitted.agent is not None
    assert emitted.agent["essential"] is False  # a dead agent costs metrics, not traffic
    declared = emitted.declared("proxy")
    for metric in m.scraped("proxy"):
        assert declared[f"{metric.namespace}/{metric.name}"] == [
            list(s) for s in metric.dimension_sets
        ]
    env = {e["name"]: e["value"] for e in emitted.agent["environment"]}
    assert "127.0.0.1:9900" in env["PROMETHEUS_CONFIG_CONTENT"]
    (policy,) = [
        p
        for p in run.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.name.endswith("-proxy-task-policy")
    ]
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Resource"][0].endswith(":log-group:/quorum-ha/dev/proxy")
    assert not any(a.startswith("cloudwatch:") for a in statement["Action"])


@pytest.mark.parametrize(
    ("alarms", "subscribed"),
    [
        ({"emails": ["ops@example.com", "oncall@example.org"]}, 2),
        ({}, 0),
    ],
)
def test_a_created_topic_subscribes_the_emails(
    offline: RunProgram, alarms: dict[str, Any], subscribed: int
) -> None:
    run = offline("pair", alarms=json.dumps(alarms))
    (topic,) = run.of_type("aws:sns/topic:Topic")
    subscriptions = run.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert len(subscriptions) == subscribed
    for subscription in subscriptions:
        assert subscription.inputs["topic"] == topic.state["arn"]
        assert subscription.inputs["protocol"] == "email"
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == sorted(alarms.get("emails", []))
    assert run.outputs["alarmTopicArn"] == topic.state["arn"]


def test_an_existing_topic_is_used_as_is(offline: RunProgram) -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:ops-alarms"
    run = offline("full", alarms=json.dumps({"topicArn": arn}))
    assert run.of_type("aws:sns/topic:Topic") == []
    for alarm in run.of_type(ALARM):
        assert arn in alarm.inputs["alarmActions"]
    (subscription,) = run.of_type("aws:rds/eventSubscription:EventSubscription")
    assert subscription.inputs["snsTopic"] == arn


def test_thresholds_come_from_settings(offline: RunProgram) -> None:
    run = offline(
        "pair", alarms=json.dumps({"upstreamFailures": 3, "dbCpuPercent": 65, "blockLag": 7})
    )
    by_name = {a.name: a for a in monitoring_alarms(run)}
    failures = [a for n, a in by_name.items() if re.search(r"-p2p-\d+-failures$", n)]
    assert failures and all(a.inputs["threshold"] == 3 for a in failures)
    assert by_name["quorum-ha-monitoring-db-primary-cpu"].inputs["threshold"] == 65
    assert by_name["quorum-ha-monitoring-quorum-behind"].inputs["threshold"] == 7
    storage = by_name["quorum-ha-monitoring-db-primary-storage"].inputs["threshold"]
    allocated = int(load_stack_config("dev").get("quorum-ha:dbAllocatedStorage", 100))
    assert storage == allocated // 10 * 1024**3  # a tenth of the allocated storage


def test_dimension_values_are_built_from_the_arns() -> None:
    elb = "arn:aws:elasticloadbalancing:eu-west-1:123456789012"
    lb = f"{elb}:loadbalancer/net/qha-abc/50dc6c495c0c9188"
    tg = f"{elb}:targetgroup/qp2p-x/943f017f100becff"
    assert load_balancer_dimension(lb) == "net/qha-abc/50dc6c495c0c9188"
    assert target_group_dimension(tg) == "targetgroup/qp2p-x/943f017f100becff"
    with pytest.raises(ValueError):
        load_balancer_dimension(lb.replace("/net/", "/app/"))
    with pytest.raises(ValueError):
        target_group_dimension(lb)


ALARM_REFUSALS: list[tuple[Any, str]] = [
    ("not json", "quorum-ha:alarms"),
    ({"topicArn": "arn:aws:sqs:us-east-1:123456789012:q"}, "quorum-ha:alarms.topicArn"),
    ({"topicArn": "arn:aws:sns:us-east-1:123456789012:a.fifo"}, "quorum-ha:alarms.topicArn"),
    ({"topicArn": "arn:aws:sns:eu-west-1:123456789012:a"}, "quorum-ha:alarms.topicArn"),
    ({"emails": "ops@example.com"}, "quorum-ha:alarms.emails"),
    ({"emails": ["ops@example.com", "not-an-address"]}, "quorum-ha:alarms.emails[1]"),
    (
        {"topicArn": "arn:aws:sns:us-east-1:123456789012:a", "emails": ["a@b.co"]},
        "quorum-ha:alarms.emails",
    ),
    ({"retires": 3}, "quorum-ha:alarms.retires"),
    ({"blockLag": 0}, "quorum-ha:alarms.blockLag"),
    ({"dbCpuPercent": 101}, "quorum-ha:alarms.dbCpuPercent"),
    ({"chainStallMinutes": "3"}, "quorum-ha:alarms.chainStallMinutes"),
    ({"minPeers": True}, "quorum-ha:alarms.minPeers"),
]


@pytest.mark.parametrize(("value", "key"), ALARM_REFUSALS)
def test_bad_alarm_settings_are_refused_naming_the_key(
    offline: Callable[..., OfflineRun], value: Any, key: str
) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    with pytest.raises(OfflineProgramError) as caught:
        offline("pair", alarms=text)
    message = str(caught.value)
    assert message.startswith(f"{key}: "), message
    assert "\n" not in message and "is not valid; allowed:" in message
