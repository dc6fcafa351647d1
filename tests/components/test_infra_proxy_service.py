"""ProxyService: our image in ECR, >= 2 Fargate tasks, an NLB with three TCP listeners."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from components.proxy_service import (
    HEALTH_CHECK_GRACE_PERIOD,
    PROXY_IMAGE_DIR,
    context_files,
    context_tag,
    dockerignore_excludes,
)
from node_bootstrap.proxy import standalone_proxy_config
from tests.conftest import stack_config
from tools.offline import OfflineRun, run_offline

LISTENER_PORTS = [9001, 9081, 22000]


def container(run: OfflineRun) -> dict[str, Any]:
    (task,) = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    # The proxy's container; the metrics agent beside it is tested in test_infra_monitoring.py.
    (definition,) = [
        c for c in json.loads(task.inputs["containerDefinitions"]) if c["name"] == "proxy"
    ]
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
        assert (check["protocol"], check["port"]) == ("HTTP", "9900")


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
    assert Path(image.inputs["context"]["location"]).name == "proxy_image"
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


def test_without_a_dockerignore_bytecode_is_context_and_changes_the_tag(tmp_path: Path) -> None:
    # docker-build hashes every file when there is no .dockerignore: so must the tag.
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    first = context_tag(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"noise")
    assert context_tag(tmp_path) != first


def test_execution_role_pulls_only_our_repository_and_writes_only_our_logs(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair")
    (repository,) = run.of_type("aws:ecr/repository:Repository")
    (policy,) = [
        p
        for p in run.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.name.endswith("-proxy-execution-policy")
    ]
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


# Item 6: the image tag and pulumi-docker-build's rebuild decision must agree. docker-build
# rebuilds when its context hash changes: the Dockerfile's content plus, for every file the
# .dockerignore keeps, its content, path and mode (provider/internal/context.go,
# hashBuildContext/hashFile). A rebuild that keeps our tag pushes an existing tag.


def write(root: Path, relative: str, text: str = "x", mode: int = 0o644) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_context_tag_changes_when_a_file_mode_changes(tmp_path: Path) -> None:
    write(tmp_path, "Dockerfile", "FROM scratch\n")
    script = write(tmp_path, "run.sh", "echo\n")
    before = context_tag(tmp_path)
    script.chmod(0o755)  # docker-build hashes the mode: it rebuilds
    assert context_tag(tmp_path) != before


def test_context_tag_changes_when_a_kept_file_is_added_or_renamed(tmp_path: Path) -> None:
    write(tmp_path, "Dockerfile", "FROM scratch\n")
    module = write(tmp_path, "pkg/a.py", "A = 1\n")
    tags = {context_tag(tmp_path)}
    write(tmp_path, "pkg/b.py", "")
    tags.add(context_tag(tmp_path))
    module.rename(tmp_path / "pkg" / "c.py")
    tags.add(context_tag(tmp_path))
    assert len(tags) == 3


def test_context_tag_ignores_what_the_dockerignore_excludes(tmp_path: Path) -> None:
    write(tmp_path, "Dockerfile", "FROM scratch\n")
    write(tmp_path, ".dockerignore", "# caches\n**/__pycache__\n/README.md\n")
    write(tmp_path, "pkg/a.py")
    before = context_tag(tmp_path)
    write(tmp_path, "pkg/__pycache__/a.cpython-311.pyc", "bytecode")
    write(tmp_path, "README.md", "docs", mode=0o600)
    assert context_tag(tmp_path) == before
    write(tmp_path, "docs/README.md", "not at the root: kept")
    assert context_tag(tmp_path) != before


def test_context_tag_follows_the_dockerfile_even_when_it_is_ignored(tmp_path: Path) -> None:
    # docker-build hashes the Dockerfile's content whatever the .dockerignore says.
    dockerfile = write(tmp_path, "Dockerfile", "FROM scratch\n")
    write(tmp_path, ".dockerignore", "Dockerfile\n")
    before = context_tag(tmp_path)
    dockerfile.write_text("FROM busybox\n")
    assert context_tag(tmp_path) != before


# Cases from moby/patternmatcher's semantics (the matcher docker-build's FilterFS applies):
# `*` and `?` never cross `/`, `**` spans any number of directories, a leading `/` is dropped,
# and a file is excluded when it or any of its parent directories matches.
IGNORE_CASES = [
    ("**/__pycache__", "__pycache__/x.pyc", True),
    ("**/__pycache__", "a/b/__pycache__/x.pyc", True),
    ("**/*.pyc", "a/b/x.pyc", True),
    ("*.pyc", "a/x.pyc", False),
    ("*.pyc", "x.pyc", True),
    ("/README.md", "README.md", True),
    ("README.md", "docs/README.md", False),
    ("docs", "docs/a/b.txt", True),
    ("docs/**", "docs/a/b.txt", True),
    ("a/*/c", "a/b/c/d.txt", True),
    ("a/*/c", "a/b/x/c", False),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("**", "anything/at/all", True),
    ("a/**/z", "a/z", True),
    ("a/**/z", "a/b/c/z", True),
    ("file.txt", "file_txt", False),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), IGNORE_CASES)
def test_dockerignore_patterns_match_like_docker(pattern: str, path: str, excluded: bool) -> None:
    assert dockerignore_excludes([pattern], path) is excluded


@pytest.mark.parametrize("pattern", ["!keep.txt", "[ab].txt", "a\\*b"])
def test_dockerignore_syntax_we_do_not_mirror_is_refused(tmp_path: Path, pattern: str) -> None:
    write(tmp_path, "Dockerfile", "FROM scratch\n")
    write(tmp_path, ".dockerignore", f"{pattern}\n")
    with pytest.raises(ValueError, match=re.escape(pattern)):
        context_tag(tmp_path)


def test_the_image_context_is_the_tracked_sources_whatever_caches_lie_around(
    tmp_path: Path,
) -> None:
    context = tmp_path / "proxy_image"
    shutil.copytree(PROXY_IMAGE_DIR, context, ignore=shutil.ignore_patterns("__pycache__"))
    tracked = set(
        subprocess.run(
            ["git", "ls-files", "--", "."],
            cwd=PROXY_IMAGE_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    for junk in (
        "quorum_proxy/__pycache__/server.cpython-311.pyc",
        "__pycache__/x.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        "quorum_proxy/.ruff_cache/x",
        "quorum_proxy/stray.pyc",
        # a developer's build of the relay scans: the image builds its own
        "quorum_proxy/_relay_scan.cpython-311-x86_64-linux-gnu.so",
    ):
        write(context, junk)
    # The README documents the image; editing it must not rebuild it.
    assert context_files(context) == sorted((tracked | {".dockerignore"}) - {"README.md"})


# Item 1: names AWS limits, whatever the stack is called. Pulumi's stack names run to 100
# characters of letters, digits, `-`, `_` and `.`; the settings take any of them.
LONGEST_STACK = ("Org_Team.quorum-ha-production-" * 4)[:100]
# The physical name AWS gets: an explicit name, a name_prefix plus the provider's 26-character
# unique suffix (terraform-plugin-sdk id.PrefixedUniqueId), or Pulumi's auto-name, the logical
# name plus "-" and 7 random characters.
UNIQUE_SUFFIX = 26
AUTO_SUFFIX = 8
# (type, name key, maximum length, allowed pattern), from each API reference:
# ELBv2 CreateTargetGroup / CreateLoadBalancer Name (32, alphanumerics and hyphens, not starting
# or ending with a hyphen; a load balancer's not starting with "internal-"), IAM CreateRole
# RoleName (64), ECS CreateCluster / CreateService (255), CloudWatch Logs CreateLogGroup (512),
# ECR CreateRepository (256), ECS RegisterTaskDefinition family (255).
ELB_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
NAME_LIMITS = [
    ("aws:lb/targetGroup:TargetGroup", "name", 32, ELB_NAME),
    ("aws:lb/loadBalancer:LoadBalancer", "name", 32, ELB_NAME),
    ("aws:iam/role:Role", "name", 64, r"[\w+=,.@-]+"),
    ("aws:ecs/cluster:Cluster", "name", 255, r"[A-Za-z0-9_-]+"),
    ("aws:ecs/service:Service", "name", 255, r"[A-Za-z0-9_-]+"),
    ("aws:cloudwatch/logGroup:LogGroup", "name", 512, r"[\w./#-]+"),
    ("aws:ecr/repository:Repository", "name", 256, r"[a-z0-9]+(?:[._/-][a-z0-9]+)*"),
    ("aws:ecs/taskDefinition:TaskDefinition", "family", 255, r"[A-Za-z0-9_-]+"),
]


def physical_name(resource: Any, key: str) -> str:
    """The name AWS will see, with a stand-in for the random part."""
    if resource.inputs.get(key):
        return str(resource.inputs[key])
    if resource.inputs.get("namePrefix"):
        return str(resource.inputs["namePrefix"]) + "0" * UNIQUE_SUFFIX
    return f"{resource.name}-{'a' * (AUTO_SUFFIX - 1)}"


def proxy_resources(run: OfflineRun, type_: str) -> list[Any]:
    return [r for r in run.of_type(type_) if "-proxy-" in r.name or r.name.endswith("-proxy")]


@pytest.mark.parametrize(("type_", "key", "limit", "pattern"), NAME_LIMITS)
def test_every_length_limited_proxy_name_fits_for_the_longest_stack_name(
    offline: Callable[..., OfflineRun], type_: str, key: str, limit: int, pattern: str
) -> None:
    run = offline("full", stack=LONGEST_STACK)
    resources = proxy_resources(run, type_)
    assert resources, type_
    for resource in resources:
        name = physical_name(resource, key)
        assert len(name) <= limit, f"{resource.urn}: {name!r} is {len(name)} > {limit}"
        assert re.fullmatch(pattern, name), f"{resource.urn}: {name!r}"
        assert not name.startswith("internal-"), resource.urn


def test_the_third_party_target_group_auto_name_was_too_long_and_its_prefix_fits(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full", stack=LONGEST_STACK)
    (group,) = [g for g in run.of_type("aws:lb/targetGroup:TargetGroup") if "third" in g.name]
    assert len(f"{group.name}-{'a' * (AUTO_SUFFIX - 1)}") == 35  # what preview refused
    assert "name" not in group.inputs or not group.inputs["name"]
    assert len(physical_name(group, "name")) <= 32


def test_load_balancer_and_target_groups_take_a_fresh_name_on_replacement(
    offline: Callable[..., OfflineRun],
) -> None:
    # An explicit name would collide when a replacement is created before the old one goes.
    run = offline("pair")
    for type_ in ("aws:lb/targetGroup:TargetGroup", "aws:lb/loadBalancer:LoadBalancer"):
        for resource in run.of_type(type_):
            assert not resource.inputs.get("name"), resource.urn
            assert 1 <= len(resource.inputs["namePrefix"]) <= 6, resource.urn


# Items 2 and 3: one readiness question per target group, and ECS does not act on the answers.
def test_each_target_group_asks_the_readiness_of_the_listener_on_its_port(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    config = standalone_proxy_config(quorum_dns_names=["q.example"], tessera_dns_names=["t.x"])
    listener_of_port = {
        int(lc["listen"].rsplit(":", 1)[1]): lc["name"] for lc in config["listeners"]
    }
    groups = run.of_type("aws:lb/targetGroup:TargetGroup")
    paths = {int(g.inputs["port"]): g.inputs["healthCheck"]["path"] for g in groups}
    assert paths == {port: f"/readyz/{name}" for port, name in listener_of_port.items()}
    # The proxy's admin port answers the checks: it is in the config the task runs.
    assert config["admin"]["listen"].endswith(f":{groups[0].inputs['healthCheck']['port']}")


def test_ecs_never_replaces_a_task_for_its_readiness(offline: Callable[..., OfflineRun]) -> None:
    # With every Tessera down the 9001 and 9081 targets are unhealthy; were ECS to replace tasks
    # failing ELB checks, it would kill every proxy task (RPC included) in a loop. The grace
    # period is the API's maximum: ECS ignores ELB health for the task's life.
    run = offline("full")
    (service,) = run.of_type("aws:ecs/service:Service")
    assert service.inputs["healthCheckGracePeriodSeconds"] == HEALTH_CHECK_GRACE_PERIOD
    assert HEALTH_CHECK_GRACE_PERIOD == 2_147_483_647
    # A deployment still fails, and rolls back, on tasks that never run or exit.
    assert service.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service.inputs["waitForSteadyState"] is True
    # The container check asks liveness only, never upstreams.
    assert "/healthz" in container(run)["healthCheck"]["command"][-1]


def test_a_dockerfile_specific_ignore_file_wins_as_docker_build_reads_it(tmp_path: Path) -> None:
    # getIgnorePatterns prefers <Dockerfile>.dockerignore to the context's .dockerignore.
    write(tmp_path, "Dockerfile", "FROM scratch\n")
    write(tmp_path, ".dockerignore", "notes.txt\n")
    write(tmp_path, "Dockerfile.dockerignore", "**/*.log\n")
    write(tmp_path, "a.log")
    write(tmp_path, "notes.txt")
    assert context_files(tmp_path) == [
        ".dockerignore",
        "Dockerfile",
        "Dockerfile.dockerignore",
        "notes.txt",
    ]


def test_image_build_paths_are_relative_to_the_project_so_any_checkout_agrees(
    offline: Callable[..., OfflineRun],
) -> None:
    # pulumi-docker-build v0.0.22 Image.Diff compares context.location and dockerfile raw: an
    # absolute path differs between checkouts (CI vs a laptop), which rebuilds and pushes the
    # same content tag again to the immutable repository (ImageTagAlreadyExistsException).
    # Relative paths resolve against the provider's working directory, the project directory
    # (pulumi sdk/go/common/resource/plugin: providers start with cmd.Dir = ctx.Pwd).
    (image,) = offline("pair").of_type("docker-build:index:Image")
    context = image.inputs["context"]["location"]
    dockerfile = image.inputs["dockerfile"]["location"]
    assert (context, dockerfile) == ("proxy_image", "proxy_image/Dockerfile")
    project = Path(__file__).resolve().parents[2]
    assert (project / "Pulumi.yaml").is_file()
    assert (project / context).resolve() == PROXY_IMAGE_DIR
    assert (project / dockerfile).is_file()


def test_target_health_checks_time_out_before_the_next_check(
    offline: Callable[..., OfflineRun],
) -> None:
    # Left unset, the timeout is 10 s for a TCP target group even with an HTTP check
    # (CreateTargetGroup HealthCheckTimeoutSeconds: 2-120, default by the group's protocol);
    # it must not exceed the 10 s interval.
    for group in offline("pair").of_type("aws:lb/targetGroup:TargetGroup"):
        check = group.inputs["healthCheck"]
        assert (check["timeout"], check["interval"]) == (5, 10), group.name


def test_listeners_free_their_target_groups_before_an_nlb_replacement_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # internalNlb replaces the NLB and so its listeners (load_balancer_arn forces a new one).
    # A target group may serve listeners of one NLB only ("the target group is not used by a
    # listener for another load balancer", NLB guide, "Create a target group"): a new listener
    # created before the old one is deleted is refused. The listeners go first.
    options: dict[str, pulumi.ResourceOptions | None] = {}

    class RecordedListener(aws.lb.Listener):
        def __init__(
            self,
            resource_name: str,
            *args: Any,
            opts: pulumi.ResourceOptions | None = None,
            **kw: Any,
        ) -> None:
            options[resource_name] = opts
            super().__init__(resource_name, *args, opts=opts, **kw)

    monkeypatch.setattr(aws.lb, "Listener", RecordedListener)
    run_offline(stack_config("pair"))
    assert len(options) == len(LISTENER_PORTS)
    for name, opts in options.items():
        assert opts is not None and opts.delete_before_replace is True, name


# ------------------------------------------------------------------ TLS on the edge
TLS_CERTIFICATE = (
    "arn:aws:acm:us-east-1:123456789012:certificate/0b1f8d2e-1234-4abc-8def-0123456789ab"
)


def tls_config(**fields: Any) -> dict[str, Any]:
    return {"certificateArn": TLS_CERTIFICATE, "dnsName": "quorum.example.com", **fields}


@pytest.mark.parametrize(
    ("ports", "zone"),
    [([9001], None), ([9001, 9081], "Z0123456789ABCDEFGHIJ"), ([9001, 9081, 22000], None)],
)
def test_tls_listeners_terminate_with_the_certificate_and_keep_tcp_targets(
    offline: Callable[..., OfflineRun], ports: list[int], zone: str | None
) -> None:
    fields = {"listeners": ports} | ({"hostedZoneId": zone} if zone else {})
    run = offline("full", tls=tls_config(**fields))
    plain = offline("full")
    groups = {g.state["arn"]: g for g in run.of_type("aws:lb/targetGroup:TargetGroup")}
    for listener in run.of_type("aws:lb/listener:Listener"):
        port = int(listener.inputs["port"])
        if port in ports:
            assert listener.inputs["protocol"] == "TLS", port
            assert listener.inputs["certificateArn"] == TLS_CERTIFICATE
            assert listener.inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
        else:
            assert listener.inputs["protocol"] == "TCP", port
            assert listener.inputs.get("certificateArn") is None
            assert listener.inputs.get("sslPolicy") is None
        (action,) = listener.inputs["defaultActions"]
        # The NLB decrypts; the proxy behind speaks plain HTTP, checked as before.
        assert groups[action["targetGroupArn"]].inputs["protocol"] == "TCP"
    # Target groups and their health checks are those of the plain stack, unchanged.
    assert sorted(
        (g.name, json.dumps(g.inputs, sort_keys=True))
        for g in run.of_type("aws:lb/targetGroup:TargetGroup")
    ) == sorted(
        (g.name, json.dumps(g.inputs, sort_keys=True))
        for g in plain.of_type("aws:lb/targetGroup:TargetGroup")
    )


def test_tls_with_a_zone_writes_an_alias_of_the_nlb_under_the_certificates_name(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair", tls=tls_config(hostedZoneId="Z0123456789ABCDEFGHIJ"))
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    (record,) = [
        r
        for r in run.of_type("aws:route53/record:Record")
        if r.inputs["zoneId"] == "Z0123456789ABCDEFGHIJ"
    ]
    assert (record.inputs["name"], record.inputs["type"]) == ("quorum.example.com", "A")
    assert "records" not in record.inputs and "ttl" not in record.inputs
    (alias,) = record.inputs["aliases"]
    assert (alias["name"], alias["zoneId"]) == (nlb.state["dnsName"], nlb.state["zoneId"])


def test_tls_without_a_zone_leaves_the_name_to_the_operator(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("pair", tls=tls_config())
    plain = offline("pair")
    assert len(run.of_type("aws:route53/record:Record")) == len(
        plain.of_type("aws:route53/record:Record")
    )
    # The CNAME target the operator needs is exported.
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert run.outputs["nlbDnsName"] == nlb.state["dnsName"]
