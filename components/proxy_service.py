"""The standalone HA proxy: our image in ECR, run on ECS Fargate behind a Network Load Balancer.

The NLB only spreads TCP connections over the proxy tasks (terminating TLS first on the listeners
`tls` names); the proxy does the seed's L7 work (RPC primary/backup, third-party retry on 404,
P2P with the /partyinfo mirror).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from components.base import Component, trust_policy
from components.settings.proxy import ProxySettings
from components.settings.tls import TlsSettings
from domain.metrics import metrics_agent_container
from domain.naming import NAME_PREFIX, ecr_repository_arn
from domain.ports import LISTENERS, PROXY_ADMIN_PORT, PROXY_LISTENER_NAMES

PROJECT_DIR = Path(__file__).resolve().parent.parent
PROXY_IMAGE_DIR = PROJECT_DIR / "proxy_image"
# What the Image resource is given: paths relative to the project directory, which is the
# provider's working directory (pulumi: providers start with cmd.Dir = ctx.Pwd, the project
# root when Pulumi.yaml has no `main`). Absolute paths differ between checkouts and
# docker-build's Diff compares them raw (v0.0.22 image.go): a deploy from another checkout
# would rebuild and push the same tag again to the immutable repository.
PROXY_IMAGE_CONTEXT = PROXY_IMAGE_DIR.relative_to(PROJECT_DIR).as_posix()
PROXY_IMAGE_DOCKERFILE = f"{PROXY_IMAGE_CONTEXT}/Dockerfile"
CONTAINER = "proxy"
# Physical names of the NLB and its target groups: AWS allows 32 characters (CreateLoadBalancer,
# CreateTargetGroup), so quorum-ha-proxy-third-party plus Pulumi's 8-character auto-name suffix
# (35) is refused at preview. A name_prefix of at most 6 characters plus the
# provider's 26-character unique suffix fits by construction for any stack. An explicit `name`
# would fit too, but these are replaced create-before-delete (the NLB when `internal` changes, a
# target group when its port, protocol or VPC does) and a second one of the same name is refused
# (DuplicateTargetGroupName / DuplicateLoadBalancerName); a prefix gives each one a fresh name.
NLB_NAME_PREFIX = NAME_PREFIX
TARGET_GROUP_NAME_PREFIXES = {"rpc": "qrpc-", "third-party": "q3rd-", "p2p": "qp2p-"}
CONFIG_ENV = "QUORUM_PROXY_CONFIG"
# Health, as the NLB and ECS see it (proxy_image/README.md, "Health" has the whole argument):
# - Each target group asks readiness of the proxy listener on its port (GET /readyz/<listener>):
#   503 while draining or when that listener's upstream servers all fail their checks, so with
#   every Tessera down the 9001 and 9081 targets are unhealthy while 22000 stays healthy.
#   Servers whose DNS names do not exist yet do not count: on a first deploy the machines come
#   20-60 min after the service, and ECS completes a deployment only when its tasks are healthy
#   in every target group ("considered healthy if ... RUNNING and reported as healthy by the
#   load balancer", ECS CreateService), which `wait_for_steady_state` waits for (the
#   service deployment's SUCCESSFUL status: terraform-provider-aws statusServiceWaitForStable).
# - ECS must not replace tasks for that answer: all tasks share the upstreams, so it would kill
#   them all in a loop, RPC included. The grace period is the API maximum (2,147,483,647 s):
#   ECS "ignores unhealthy Elastic Load Balancing ... and container health checks after a task
#   has first started" (CreateService healthCheckGracePeriodSeconds; AWS's answer to
#   aws/containers-roadmap#1271). An NLB whose targets are all unhealthy fails open (NLB guide,
#   "Health checks for target groups"), so losing every upstream routes as before.
# - Liveness is the process: it exits when its event loop stalls (quorum_proxy.main), and
#   ECS replaces a task whose essential container exited. The container check on /healthz
#   shows liveness in DescribeTasks; a task that never runs or exits at start still trips the
#   circuit breaker, which rolls back.
# - Draining needs no health check: ECS deregisters a task from its target groups and waits
#   the deregistration delay before SIGTERM; the proxy then finishes in-flight requests.
HEALTH_CHECK_GRACE_PERIOD = 2_147_483_647
CONTAINER_HEALTH_PATH = "/healthz"


@dataclass
class ProxyServiceArgs:
    name_prefix: str
    vpc_id: pulumi.Input[str]
    task_subnet_ids: pulumi.Input[Sequence[str]]
    nlb_subnet_ids: pulumi.Input[Sequence[str]]
    nlb_security_group_id: pulumi.Input[str]
    task_security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    log_group_name: str
    region: str
    role_path: str
    proxy_config_json: pulumi.Input[str]  # DNS names only: no secret
    # Tasks, size, NLB scheme; image_uri: a prebuilt image instead of building proxy_image/
    # (e.g. CI without a Docker daemon).
    settings: ProxySettings
    deletion_protection: bool = False
    log_retention_days: int = 90
    tls: TlsSettings | None = None  # None: every listener is plain TCP, as before TLS existed
    # A CloudWatch agent beside the proxy in each task, turning /metrics into CloudWatch
    # metrics (domain/metrics.py metrics_agent_container).
    metrics_agent: bool = False


class ProxyService(Component[ProxyServiceArgs]):
    """ECR repository and image, ECS Fargate service (>= 2 tasks), NLB with three listeners
    (TCP, or TLS where `tls` says), and with `tls.hosted_zone_id` an alias record of the NLB."""

    repository_arn: pulumi.Output[str]
    image_uri: pulumi.Output[str]
    nlb_dns_name: pulumi.Output[str]
    nlb_arn: pulumi.Output[str]
    target_group_arns: dict[str, pulumi.Output[str]]
    cluster_name: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ProxyServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quorum-ha:proxy_service:ProxyService", name, args, opts)
        repository = self._create_repository()
        self.repository_arn = repository.arn
        if args.settings.image_uri is not None:
            # A prebuilt image usually lives in another repository: pull rights go there.
            self.repository_arn = pulumi.Output.from_input(
                ecr_repository_arn(args.settings.image_uri)
            )
        self.image_uri = self._create_image(repository)
        log_group = self._log_group(
            name, args.log_group_name, args.kms_key_arn, args.log_retention_days
        )
        nlb, target_groups, listeners = self._create_load_balancer()
        self.nlb_dns_name = nlb.dns_name
        self.nlb_arn = nlb.arn
        self.target_group_arns = {role: tg.arn for role, tg in target_groups.items()}
        cluster, service = self._create_service(repository, log_group, target_groups, listeners)
        self.cluster_name = cluster.name
        self.service_name = service.name
        self.register_outputs(
            {
                "repositoryArn": self.repository_arn,
                "imageUri": self.image_uri,
                "nlbDnsName": self.nlb_dns_name,
                "clusterName": self.cluster_name,
                "serviceName": self.service_name,
            }
        )

    def _create_repository(self) -> aws.ecr.Repository:
        args = self._args
        return aws.ecr.Repository(
            f"{self._name}-repository",
            name=f"{args.name_prefix}/quorum-proxy",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.kms_key_arn
                )
            ],
            force_delete=not args.deletion_protection,
            opts=self._opts(),
        )

    def _create_image(self, repository: aws.ecr.Repository) -> pulumi.Output[str]:
        args = self._args
        if args.settings.image_uri is not None:
            return pulumi.Output.from_input(args.settings.image_uri)
        auth = aws.ecr.get_authorization_token_output(
            registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker_build.Image(
            f"{self._name}-image",
            context=docker_build.BuildContextArgs(location=PROXY_IMAGE_CONTEXT),
            dockerfile=docker_build.DockerfileArgs(location=PROXY_IMAGE_DOCKERFILE),
            # Tessera has no arm64 image, so the whole node is x86_64; so is the proxy.
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            # Previews (pull requests, no Docker daemon) must not build.
            build_on_preview=False,
            # Tags are immutable: tag by content, so an unchanged proxy_image/ means no new push.
            tags=[repository.repository_url.apply(lambda url: f"{url}:{context_tag()}")],
            registries=[
                docker_build.RegistryArgs(
                    address=repository.repository_url,
                    username=auth.user_name,
                    password=pulumi.Output.secret(auth.password),
                )
            ],
            opts=self._opts(),
        )
        # Pin the task definition to the digest: a new build rolls the service, nothing else.
        return pulumi.Output.all(repository.repository_url, image.digest).apply(
            lambda v: f"{v[0]}@{v[1]}"
        )

    def _create_load_balancer(
        self,
    ) -> tuple[aws.lb.LoadBalancer, dict[str, aws.lb.TargetGroup], list[aws.lb.Listener]]:
        args = self._args
        nlb = aws.lb.LoadBalancer(
            f"{self._name}-nlb",
            name_prefix=NLB_NAME_PREFIX,
            load_balancer_type="network",
            internal=args.settings.internal_nlb,
            subnets=args.nlb_subnet_ids,
            security_groups=[args.nlb_security_group_id],
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=args.deletion_protection,
            opts=self._opts(),
        )
        target_groups: dict[str, aws.lb.TargetGroup] = {}
        listeners: list[aws.lb.Listener] = []
        for role, port in LISTENERS.items():
            target_group = aws.lb.TargetGroup(
                f"{self._name}-{role}",
                name_prefix=TARGET_GROUP_NAME_PREFIXES[role],
                port=port,
                protocol="TCP",
                target_type="ip",
                vpc_id=args.vpc_id,
                # Long enough for in-flight RPC and P2P calls to finish on a draining task.
                deregistration_delay=30,
                health_check=aws.lb.TargetGroupHealthCheckArgs(
                    protocol="HTTP",
                    port=str(PROXY_ADMIN_PORT),
                    path=f"/readyz/{PROXY_LISTENER_NAMES[role]}",
                    matcher="200",
                    interval=10,
                    # Unset, it is 10 s for a TCP group (CreateTargetGroup: 2-120 s, default by
                    # the group's protocol, not the check's): answer within half the interval.
                    timeout=5,
                    healthy_threshold=2,
                    unhealthy_threshold=2,
                ),
                opts=self._opts(),
            )
            listener = aws.lb.Listener(
                f"{self._name}-{role}-listener",
                load_balancer_arn=nlb.arn,
                port=port,
                **_listener_protocol(args.tls, port),
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="forward", target_group_arn=target_group.arn
                    )
                ],
                # Replaced with the NLB (internalNlb): a target group may serve listeners of one
                # NLB only (NLB guide, "Create a target group"), so the old listener must let go
                # of it before the new NLB's listener takes it.
                opts=self._opts(delete_before_replace=True),
            )
            target_groups[role] = target_group
            listeners.append(listener)
        tls = args.tls
        if tls is not None and tls.hosted_zone_id is not None:
            # An alias A record (no TTL, no charge for alias queries to ELB: Route 53 pricing)
            # that follows the NLB's addresses; in a public zone or a private one the user names.
            aws.route53.Record(
                f"{self._name}-edge-dns",
                zone_id=tls.hosted_zone_id,
                name=tls.dns_name,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=nlb.dns_name,
                        zone_id=nlb.zone_id,
                        # One record, nothing to fail over to; the NLB itself fails open.
                        evaluate_target_health=False,
                    )
                ],
                opts=self._opts(),
            )
        return nlb, target_groups, listeners

    def _containers(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        args = self._args
        containers = [container_definition(region=args.region, **values)]
        if args.metrics_agent:
            containers.append(
                metrics_agent_container(
                    admin_port=PROXY_ADMIN_PORT, log_group=values["log_group"], region=args.region
                )
            )
        return containers

    def _create_roles(
        self, repository: aws.ecr.Repository, log_group: aws.cloudwatch.LogGroup
    ) -> tuple[aws.iam.Role, aws.iam.Role]:
        args = self._args
        trust = trust_policy("ecs-tasks.amazonaws.com")
        execution = aws.iam.Role(
            f"{self._name}-execution-role",
            path=args.role_path,
            assume_role_policy=trust,
            opts=self._opts(),
        )
        policy = pulumi.Output.all(self.repository_arn, log_group.arn).apply(
            lambda v: json.dumps(execution_policy(repository_arn=v[0], log_group_arn=v[1]))
        )
        aws.iam.RolePolicy(
            f"{self._name}-execution-policy", role=execution.id, policy=policy, opts=self._opts()
        )
        # The proxy itself calls no AWS API; only the metrics agent beside it writes its EMF
        # log events (the metrics) to the proxy's log group.
        task = aws.iam.Role(
            f"{self._name}-task-role",
            path=args.role_path,
            assume_role_policy=trust,
            opts=self._opts(),
        )
        if args.metrics_agent:
            aws.iam.RolePolicy(
                f"{self._name}-task-policy",
                role=task.id,
                policy=log_group.arn.apply(lambda arn: json.dumps(metrics_agent_policy(arn))),
                opts=self._opts(),
            )
        return execution, task

    def _create_service(
        self,
        repository: aws.ecr.Repository,
        log_group: aws.cloudwatch.LogGroup,
        target_groups: dict[str, aws.lb.TargetGroup],
        listeners: Sequence[aws.lb.Listener],
    ) -> tuple[aws.ecs.Cluster, aws.ecs.Service]:
        args = self._args
        cluster = aws.ecs.Cluster(
            f"{self._name}-cluster",
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            opts=self._opts(),
        )
        execution, task = self._create_roles(repository, log_group)
        containers = pulumi.Output.all(
            image=self.image_uri, config=args.proxy_config_json, log_group=log_group.name
        ).apply(lambda v: json.dumps(self._containers(v)))
        task_definition = aws.ecs.TaskDefinition(
            f"{self._name}-task",
            family=f"{args.name_prefix}-proxy",
            cpu=str(args.settings.cpu),
            memory=str(args.settings.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                cpu_architecture="X86_64", operating_system_family="LINUX"
            ),
            execution_role_arn=execution.arn,
            task_role_arn=task.arn,
            container_definitions=containers,
            opts=self._opts(),
        )
        service = aws.ecs.Service(
            f"{self._name}-service",
            cluster=cluster.arn,
            task_definition=task_definition.arn,
            desired_count=args.settings.task_count,
            launch_type="FARGATE",
            platform_version="LATEST",
            # Fargate spreads a service's tasks over the subnets' AZs; two AZs at least.
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.task_subnet_ids,
                security_groups=[args.task_security_group_id],
                assign_public_ip=False,
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_groups[role].arn,
                    container_name=CONTAINER,
                    container_port=port,
                )
                for role, port in LISTENERS.items()
            ],
            # Rolling upgrade: new tasks become healthy before old ones drain. A new task whose
            # listeners' upstreams are all down stays unhealthy: the deployment waits (no task
            # is replaced) and completes when they return; docs/runbooks.md says what to do.
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            health_check_grace_period_seconds=HEALTH_CHECK_GRACE_PERIOD,
            propagate_tags="SERVICE",
            wait_for_steady_state=True,
            opts=self._opts(depends_on=list(listeners)),
        )
        return cluster, service


def _listener_protocol(tls: TlsSettings | None, port: int) -> dict[str, Any]:
    """A listener's protocol inputs: TLS terminated at the NLB (certificate and security policy)
    on the ports TLS covers, plain TCP elsewhere. Target groups stay TCP either way: a TLS
    listener forwards to TCP or TLS target groups (NLB guide, "Target groups", routing
    configuration), and the proxy behind speaks plain HTTP."""
    if tls is None or port not in tls.ports:
        return {"protocol": "TCP"}
    return {
        "protocol": "TLS",
        "certificate_arn": tls.certificate_arn,
        # AWS's API default is ELBSecurityPolicy-2016-08 (TLS 1.0+): always name one.
        "ssl_policy": tls.ssl_policy,
    }


def context_tag(directory: Path = PROXY_IMAGE_DIR) -> str:
    """A tag that changes whenever pulumi-docker-build would rebuild the image.

    docker-build rebuilds when its context hash changes: the Dockerfile's content, then the
    content, path and mode of every file the .dockerignore keeps (pulumi-docker-build
    provider/internal/context.go, hashBuildContext). The tag hashes the same things, so a rebuild
    never pushes a tag that exists: the repository's tags are immutable.
    """
    digest = hashlib.sha256()
    digest.update((directory / "Dockerfile").read_bytes() + b"\0")
    for relative in context_files(directory):
        path = directory / relative
        mode = path.lstat().st_mode
        digest.update(f"{relative}\0{stat.filemode(mode)}\0".encode())
        if stat.S_ISLNK(mode):
            digest.update(os.readlink(path).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return f"src-{digest.hexdigest()[:16]}"


def context_files(directory: Path = PROXY_IMAGE_DIR) -> list[str]:
    """The files docker sends as the build context: what the .dockerignore keeps."""
    patterns = dockerignore_patterns(directory)
    kept: list[str] = []
    for root, dirs, files in os.walk(directory):
        base = Path(root).relative_to(directory).as_posix()
        prefix = "" if base == "." else f"{base}/"
        # An excluded directory is not walked (docker's FilterFS skips it too).
        dirs[:] = [d for d in dirs if not _excluded(patterns, prefix + d)]
        for name in files:
            relative = prefix + name
            mode = (Path(root) / name).lstat().st_mode
            # docker-build hashes regular files and symlinks only.
            if (stat.S_ISREG(mode) or stat.S_ISLNK(mode)) and not _excluded(patterns, relative):
                kept.append(relative)
    return sorted(kept)


def dockerignore_patterns(directory: Path) -> list[re.Pattern[str]]:
    """The context's ignore file read as docker reads it (moby/patternmatcher ignorefile).

    Only the syntax mirrored here is accepted: `!` exceptions, character classes and escapes
    raise ValueError, so the tag can never silently disagree with docker's file set.
    """
    # <Dockerfile>.dockerignore wins over the context's .dockerignore (getIgnorePatterns).
    candidates = (directory / "Dockerfile.dockerignore", directory / ".dockerignore")
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        return []
    patterns = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("#") or not line.strip():
            continue
        pattern = line.strip()
        if pattern.startswith("!") or any(c in pattern for c in "[]\\"):
            raise ValueError(
                f"{path}:{number}: '{pattern}': only *, ? and ** patterns are supported here "
                "(no '!' exceptions, character classes or escapes)"
            )
        pattern = posixpath.normpath(pattern).lstrip("/") or "."
        patterns.append(_pattern_regex(pattern))
    return patterns


def dockerignore_excludes(patterns: Sequence[str], relative: str) -> bool:
    """Whether docker leaves this context-relative path out, given .dockerignore patterns."""
    compiled = [_pattern_regex(posixpath.normpath(p).lstrip("/")) for p in patterns]
    return _excluded(compiled, relative)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # moby/patternmatcher Pattern.compile: `**` (with its `/`) spans directories, `*` and `?`
    # stay within one path element; a trailing `**` matches everything below.
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            regex += ".*" if i == len(pattern) else "(.*/)?"
            continue
        char = pattern[i]
        regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        i += 1
    return re.compile(f"^{regex}$")


def _excluded(patterns: Sequence[re.Pattern[str]], relative: str) -> bool:
    # MatchesOrParentMatches: the path itself or any of its parent directories.
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(p.match(c) for p in patterns for c in candidates)


def container_definition(
    *, image: str, config: str, log_group: str, region: str
) -> dict[str, Any]:
    """The proxy container: config through the environment, logs to the encrypted group."""
    health = (
        "import urllib.request,sys;"
        f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{PROXY_ADMIN_PORT}"
        f"{CONTAINER_HEALTH_PATH}',timeout=2).status==200 else 1)"
    )
    return {
        "name": CONTAINER,
        "image": image,
        "essential": True,
        "readonlyRootFilesystem": True,
        "portMappings": [
            {"containerPort": port, "protocol": "tcp"}
            for port in (*LISTENERS.values(), PROXY_ADMIN_PORT)
        ],
        "environment": [{"name": CONFIG_ENV, "value": config}],
        "healthCheck": {
            "command": ["CMD", "python", "-c", health],
            "interval": 10,
            "timeout": 3,
            "retries": 3,
            "startPeriod": 10,
        },
        # On SIGTERM (after ECS deregistered the task and waited the deregistration delay) the
        # proxy finishes in-flight requests for up to its drain_timeout (20 s) before exiting.
        "stopTimeout": 40,
        "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": CONTAINER,
            },
        },
    }


def metrics_agent_policy(log_group_arn: str) -> dict[str, Any]:
    """What the metrics agent needs: write EMF log events to the proxy's log group (metrics are
    extracted from them; the agent calls no PutMetricData for Prometheus)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteMetricLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ],
    }


def execution_policy(*, repository_arn: str, log_group_arn: str) -> dict[str, Any]:
    """What ECS needs to start a task: pull our image, write to our log group."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PullProxyImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": repository_arn,
            },
            {
                "Sid": "LogInToEcr",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                # GetAuthorizationToken has no resource type.
                "Resource": "*",
            },
            {
                "Sid": "WriteLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
        ],
    }
