"""ProxyService: our image in ECR, >= 2 Fargate tasks, an NLB with three TCP listeners."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.proxy_service import context_tag
from tools.offline import OfflineRun

LISTENER_PORTS = [9001, 9081, 22000]


def container(run: OfflineRun) -> dict[str, Any]:
    (task,) = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    (definition,) = json.loads(task.inputs["containerDefinitions"])
    return definition  # type: ignore[no-any-return]


def test_nlb_is_internal_network_and_cross_zone(offline: Callable[..., OfflineRun]) -> None:
    run = offline("pair")
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["loadBalancerType"] == "network"
    assert nlb.inputs["internal"] is True
    assert nlb.inputs["enableCrossZoneLoadBalancing"] is True
    assert nlb.inputs["subnets"] == run.outputs["subnetIds"]["private"]
    assert nlb.inputs["securityGroups"] == [run.outputs["securityGroupIds"]["nlb"]]


def test_listeners_forward_tcp_to_ip_targets_checked_on_the_admin_port(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    groups = {g.state["arn"]: g for g in run.of_type("aws:lb/targetGroup:TargetGroup")}
    listeners = run.of_type("aws:lb/listener:Listener")
    assert sorted(int(lst.inputs["port"]) for lst in listeners) == LISTENER_PORTS
    for listener in listeners:
        assert listener.inputs["protocol"] == "TCP"
        (action,) = listener.inputs["defaultActions"]
        group = groups[action["targetGroupArn"]]
        assert group.inputs["port"] == listener.inputs["port"]
        assert (group.inputs["protocol"], group.inputs["targetType"]) == ("TCP", "ip")
        check = group.inputs["healthCheck"]
        assert (check["protocol"], check["port"], check["path"]) == ("HTTP", "9900", "/readyz")


def test_service_runs_at_least_two_fargate_tasks_in_private_subnets(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    (service,) = run.of_type("aws:ecs/service:Service")
    assert service.inputs["desiredCount"] >= 2
    assert service.inputs["launchType"] == "FARGATE"
    network = service.inputs["networkConfiguration"]
    assert network["assignPublicIp"] is False
    assert network["subnets"] == run.outputs["subnetIds"]["private"]
    assert len(set(network["subnets"])) >= 2  # tasks spread over AZs
    assert network["securityGroups"] == [run.outputs["securityGroupIds"]["proxy"]]
    targets = {
        (lb["containerName"], int(lb["containerPort"])) for lb in service.inputs["loadBalancers"]
    }
    assert targets == {("proxy", port) for port in LISTENER_PORTS}
    # Rolling upgrades keep full capacity while old tasks drain.
    assert service.inputs["deploymentMinimumHealthyPercent"] == 100


def test_task_runs_the_built_image_with_config_logs_and_health_check(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    definition = container(run)
    assert definition["image"] == run.outputs["proxyImageUri"]
    assert "@sha256:" in definition["image"]
    assert definition["healthCheck"]["command"][0] == "CMD"
    assert "/healthz" in definition["healthCheck"]["command"][-1]
    logs = definition["logConfiguration"]
    (group,) = [
        g for g in run.of_type("aws:cloudwatch/logGroup:LogGroup") if g.name.endswith("proxy-logs")
    ]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == group.inputs["name"] == "/quorum-ha/dev/proxy"
    (task,) = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    assert task.inputs["runtimePlatform"]["cpuArchitecture"] == "X86_64"
    assert task.inputs["requiresCompatibilities"] == ["FARGATE"]
    env = {e["name"]: e["value"] for e in definition["environment"]}
    assert set(env) == {"QUORUM_PROXY_CONFIG"}


def test_image_is_built_for_x86_pushed_and_skipped_on_preview(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    (image,) = run.of_type("docker-build:index:Image")
    assert image.inputs["push"] is True
    assert image.inputs["buildOnPreview"] is False
    assert image.inputs["platforms"] == ["linux/amd64"]
    assert image.inputs["context"]["location"].endswith("proxy_image")
    (repository,) = run.of_type("aws:ecr/repository:Repository")
    assert image.inputs["tags"] == [f"{repository.state['repositoryUrl']}:{context_tag()}"]
    (registry,) = image.inputs["registries"]
    assert registry["address"] == repository.state["repositoryUrl"]
    assert "aws:ecr/getAuthorizationToken:getAuthorizationToken" in run.invokes


def test_prebuilt_image_skips_the_build(offline: Callable[..., OfflineRun]) -> None:
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/quorum-proxy:1.0.0"
    run = offline("full", proxyImageUri=uri)
    assert run.of_type("docker-build:index:Image") == []
    assert container(run)["image"] == uri
    assert run.outputs["proxyImageUri"] == uri


def test_context_tag_follows_the_build_context(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    first = context_tag(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"noise")
    assert context_tag(tmp_path) == first
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\n")
    assert context_tag(tmp_path) != first


def test_execution_role_pulls_only_our_repository_and_writes_only_our_logs(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    (repository,) = run.of_type("aws:ecr/repository:Repository")
    (policy,) = [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if "-proxy-" in p.name]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    assert statements["PullProxyImage"]["Resource"] == repository.state["arn"]
    assert statements["WriteLogs"]["Resource"][0].endswith(":log-group:/quorum-ha/dev/proxy")


def test_a_prebuilt_image_is_pulled_from_its_own_repository(
    offline: Callable[..., OfflineRun],
) -> None:
    # The tasks' execution role and the Quorum machines' roles must be allowed to pull the
    # image the task definition and the IPC proxy name, not the stack's empty repository.
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/quorum-proxy@sha256:" + "a" * 64
    run = offline("full", proxyImageUri=uri)
    expected = "arn:aws:ecr:us-east-1:123456789012:repository/team/quorum-proxy"
    pulls = []
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in json.loads(policy.inputs["policy"])["Statement"]:
            if statement["Sid"] == "PullProxyImage":
                pulls.append(statement["Resource"])
    assert len(pulls) == 3  # the execution role and the two Quorum machines
    assert pulls == [expected] * 3
