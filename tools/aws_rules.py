"""What AWS and the provider enforce and Pulumi's mocks do not, in three tables.

- `NAME_RULES`: the physical name of each resource type (length, characters, shape), and whether
  pulumi-aws auto-names it when the program gives none.
- `CONSTRAINTS`: rules a declared resource must meet per type (Fargate sizes, replica parameters,
  user data size, tags, health check ranges, ...).
- `REPLACE_ON_CHANGES`: for each stateful type, the inputs whose change makes the provider
  replace the resource (Terraform `ForceNew`, bridged as-is by pulumi-aws); `None` marks a type
  whose replacement loses nothing.

Every custom resource type the program declares has an entry in each table (tests check it), and
every entry names its source.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.offline import DeclaredResource, OfflineRun

# ------------------------------------------------------------------ auto-naming
# pulumi-terraform-bridge pkg/tfbridge/info/autonaming.go: AutoName() = the URN's name + "-" +
# 7 random characters from "0123456789abcdef" (sdk/go/common/resource NewUniqueName); a name
# whose prefix + 7 exceeds the property's Maxlen fails the preview. pulumi-aws
# provider/resources.go setAutonaming() gives AutoName("name", 255, "-") to every resource with
# a `name` input it does not configure itself (ECR repository, secret, hosted zone and log group
# included); its own overrides among our types: lb TargetGroup 32, iam Role 64, MetricAlarm
# (alarm_name) 255. Two types are auto-named another way and not modelled here (the program
# names both, a test checks it): kms Alias ("alias/" + name + "-" + 7, Maxlen 238) and rds
# Instance identifier (NewUniqueHex(name, 7, 255): no separator, not lowercased).
AUTONAME_RANDOM_CHARS = 7
AUTONAME_SEPARATOR = "-"
AUTONAME_MAX_LEN = 255  # setAutonaming's maxLength in pulumi-aws provider/resources.go
AUTONAME_SOURCE = (
    "https://github.com/pulumi/pulumi-terraform-bridge/blob/master/pkg/tfbridge/info/autonaming.go"
)


def auto_name(logical_name: str, random_hex: str) -> str:
    """The name pulumi-aws gives a resource the program left unnamed (random part supplied)."""
    return f"{logical_name}{AUTONAME_SEPARATOR}{random_hex[:AUTONAME_RANDOM_CHARS]}"


# A `namePrefix` turns pulumi-aws's auto-naming off: the provider appends a unique id of 26
# characters (terraform-plugin-sdk helper/id PrefixedUniqueId, UniqueIDSuffixLength = 26).
PREFIXED_UNIQUE_ID_CHARS = 26


def prefixed_name(prefix: str, random_hex: str) -> str:
    """The name the provider gives a resource declared with a `namePrefix`."""
    digits = (random_hex * PREFIXED_UNIQUE_ID_CHARS)[:PREFIXED_UNIQUE_ID_CHARS]
    return f"{prefix}{digits}"


# ------------------------------------------------------------------ physical names

_ELB_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_IAM_NAME = r"[\w+=,.@-]+"
_RDS_IDENTIFIER = r"[A-Za-z](?:[A-Za-z0-9]|-(?!-))*(?<!-)"
_ECS_NAME = r"[A-Za-z0-9_-]+"
_DNS_NAME = r"(?=.{1,253}\.?$)(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)[a-z0-9-]{1,63}(?<!-)\.?"
_IAM_PATH = r"/(?:[\x21-\x7e]+/)?"
_ECR_NAME = r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"


@dataclass(frozen=True)
class NameRule:
    """The rule one name-like input of a type must meet."""

    prop: str  # the input holding it, e.g. "name", "identifier", "family"
    max_len: int
    pattern: str  # the whole value must match
    source: str
    min_len: int = 1
    autonamed: bool = False  # pulumi-aws fills it (logical name + "-" + 7 hex) when not given
    autoname_max_len: int = AUTONAME_MAX_LEN  # the bridge's Maxlen for that auto-name
    refuse: tuple[tuple[str, str], ...] = ()  # (regex that must not match, why)

    def problems(self, value: str) -> list[str]:
        found = []
        if not self.min_len <= len(value) <= self.max_len:
            found.append(f"is {len(value)} characters, allowed {self.min_len}-{self.max_len}")
        if not re.fullmatch(self.pattern, value):
            found.append(f"does not match {self.pattern}")
        found += [why for regex, why in self.refuse if re.search(regex, value)]
        return found


def _api(service_path: str) -> str:
    return f"https://docs.aws.amazon.com/{service_path}"


_TG_LB_SOURCE = _api("elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html")
_IAM_ROLE_SOURCE = _api("IAM/latest/APIReference/API_CreateRole.html")

_SG_CHARS = r"[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*"
# A security group rule's description: the same characters as a group's.
_RULE_DESCRIPTION = NameRule(
    "description", 255, _SG_CHARS, _api("AWSEC2/latest/APIReference/API_IpRange.html"), min_len=0
)

NAME_RULES: dict[str, tuple[NameRule, ...]] = {
    "aws:lb/loadBalancer:LoadBalancer": (
        NameRule(
            "name",
            32,
            _ELB_NAME,
            _api("elasticloadbalancing/latest/APIReference/API_CreateLoadBalancer.html"),
            autonamed=True,
            refuse=(("^internal-", "must not begin with 'internal-'"),),
        ),
    ),
    "aws:lb/targetGroup:TargetGroup": (
        NameRule("name", 32, _ELB_NAME, _TG_LB_SOURCE, autonamed=True, autoname_max_len=32),
    ),
    "aws:lb/listener:Listener": (),
    "aws:iam/role:Role": (
        NameRule("name", 64, _IAM_NAME, _IAM_ROLE_SOURCE, autonamed=True, autoname_max_len=64),
        NameRule("path", 512, _IAM_PATH, _IAM_ROLE_SOURCE),
    ),
    "aws:iam/instanceProfile:InstanceProfile": (
        NameRule(
            "name",
            128,
            _IAM_NAME,
            _api("IAM/latest/APIReference/API_CreateInstanceProfile.html"),
            autonamed=True,
        ),
        NameRule(
            "path", 512, _IAM_PATH, _api("IAM/latest/APIReference/API_CreateInstanceProfile.html")
        ),
    ),
    "aws:iam/rolePolicy:RolePolicy": (
        NameRule(
            "name",
            128,
            _IAM_NAME,
            _api("IAM/latest/APIReference/API_PutRolePolicy.html"),
            autonamed=True,
        ),
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": (),
    "aws:rds/instance:Instance": (
        NameRule(
            "identifier",
            63,
            _RDS_IDENTIFIER,
            _api("AmazonRDS/latest/APIReference/API_CreateDBInstance.html"),
            refuse=(("[A-Z]", "is stored lowercase by RDS: give it lowercase"),),
        ),
    ),
    "aws:rds/subnetGroup:SubnetGroup": (
        NameRule(
            "name",
            255,
            # The provider (validateSubnetGroupName) allows only lowercase of AWS's set.
            r"[a-z0-9 ._-]+",
            _api("AmazonRDS/latest/APIReference/API_CreateDBSubnetGroup.html"),
            autonamed=True,
            refuse=(("^default$", "must not be 'default'"),),
        ),
    ),
    "aws:rds/parameterGroup:ParameterGroup": (
        NameRule(
            "name",
            255,
            r"[a-z](?:[a-z0-9]|-(?!-))*(?<!-)",
            _api("AmazonRDS/latest/APIReference/API_CreateDBParameterGroup.html"),
            autonamed=True,
        ),
    ),
    "aws:ecr/repository:Repository": (
        NameRule(
            "name",
            256,
            _ECR_NAME,
            _api("AmazonECR/latest/APIReference/API_CreateRepository.html"),
            min_len=2,
            autonamed=True,
        ),
    ),
    "aws:ecs/cluster:Cluster": (
        NameRule(
            "name",
            255,
            _ECS_NAME,
            _api("AmazonECS/latest/APIReference/API_CreateCluster.html"),
            autonamed=True,
        ),
    ),
    "aws:ecs/service:Service": (
        NameRule(
            "name",
            255,
            _ECS_NAME,
            _api("AmazonECS/latest/APIReference/API_CreateService.html"),
            autonamed=True,
        ),
    ),
    "aws:ecs/taskDefinition:TaskDefinition": (
        NameRule(
            "family",
            255,
            _ECS_NAME,
            _api("AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html"),
        ),
    ),
    "aws:cloudwatch/logGroup:LogGroup": (
        NameRule(
            "name",
            512,
            r"[.\-_/#A-Za-z0-9]+",
            _api("AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html"),
            autonamed=True,
        ),
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (
        NameRule(
            "name",
            255,
            r"[^\x00-\x1f\x7f]+",
            _api("AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"),
            autonamed=True,
        ),
    ),
    "aws:secretsmanager/secret:Secret": (
        NameRule(
            "name",
            512,
            r"[A-Za-z0-9/_+=.@-]+",
            _api("secretsmanager/latest/apireference/API_CreateSecret.html"),
            autonamed=True,
            # Secrets Manager appends "-" and 6 characters to ARNs; a name ending that way
            # makes partial-ARN lookups ambiguous.
            refuse=((r"-[A-Za-z0-9]{6}$", "must not end with a hyphen and 6 characters"),),
        ),
    ),
    "aws:secretsmanager/secretVersion:SecretVersion": (),
    "aws:ec2/securityGroup:SecurityGroup": (
        NameRule(
            "name",
            255,
            _SG_CHARS,
            _api("AWSEC2/latest/APIReference/API_CreateSecurityGroup.html"),
            autonamed=True,
            refuse=(("^sg-", "must not begin with 'sg-'"),),
        ),
        NameRule(
            "description",
            255,
            _SG_CHARS,
            _api("AWSEC2/latest/APIReference/API_CreateSecurityGroup.html"),
        ),
    ),
    "aws:kms/alias:Alias": (
        NameRule(
            "name",
            256,
            r"alias/[A-Za-z0-9/_-]+",
            _api("kms/latest/APIReference/API_CreateAlias.html"),
            refuse=(("^alias/aws/", "'alias/aws/' is reserved for AWS managed keys"),),
        ),
    ),
    "aws:route53/zone:Zone": (
        NameRule(
            "name",
            255,
            _DNS_NAME,
            _api("Route53/latest/APIReference/API_CreateHostedZone.html"),
            autonamed=True,
        ),
    ),
    "aws:route53/record:Record": (
        NameRule(
            "name",
            255,
            _DNS_NAME,
            _api("Route53/latest/APIReference/API_ChangeResourceRecordSets.html"),
        ),
    ),
    "aws:cloudwatch/dashboard:Dashboard": (
        NameRule(
            "dashboardName",
            255,
            r"[A-Za-z0-9_-]+",
            _api("AmazonCloudWatch/latest/APIReference/API_PutDashboard.html"),
        ),
    ),
    "aws:sns/topic:Topic": (
        NameRule(
            "name",
            256,
            r"[A-Za-z0-9_-]+",
            _api("sns/latest/api/API_CreateTopic.html"),
            autonamed=True,
        ),
    ),
    "aws:rds/eventSubscription:EventSubscription": (
        NameRule(
            "name",
            255,
            # The provider's validEventSubscriptionName: letters, digits and hyphens.
            r"[A-Za-z0-9-]+",
            _api("AmazonRDS/latest/APIReference/API_CreateEventSubscription.html"),
            autonamed=True,
        ),
    ),
    # No physical name of their own (AWS assigns ids): nothing to check.
    "aws:sns/topicSubscription:TopicSubscription": (),
    "aws:ebs/volume:Volume": (),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": (),
    "aws:ec2/eip:Eip": (),
    "aws:ec2/instance:Instance": (),
    "aws:ec2/networkInterface:NetworkInterface": (),
    "aws:ec2/internetGateway:InternetGateway": (),
    "aws:ec2/natGateway:NatGateway": (),
    "aws:ec2/route:Route": (),
    "aws:ec2/routeTable:RouteTable": (),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": (),
    "aws:ec2/subnet:Subnet": (),
    "aws:ec2/volumeAttachment:VolumeAttachment": (),
    "aws:ec2/vpc:Vpc": (),
    "aws:ec2/vpcEndpoint:VpcEndpoint": (),
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": (),
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": (),
    "aws:kms/key:Key": (),
    "aws:kms/replicaKey:ReplicaKey": (),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": (_RULE_DESCRIPTION,),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (_RULE_DESCRIPTION,),
    "docker-build:index:Image": (),
    "random:index/randomBytes:RandomBytes": (),
    "random:index/randomPassword:RandomPassword": (),
    "pulumi:providers:aws": (),
    "pulumi:pulumi:StackReference": (),
}

AUTONAMED: dict[str, str] = {
    type_: rule.prop for type_, rules in NAME_RULES.items() for rule in rules if rule.autonamed
}


def physical_names(resource: DeclaredResource) -> Iterator[tuple[NameRule, str]]:
    """(rule, value) for each name-like input of the resource: as given, or as auto-named."""
    for rule in NAME_RULES.get(resource.type, ()):
        value, applied = resource.inputs.get(rule.prop), rule
        if value is None and rule.autonamed:
            value = resource.state.get(rule.prop)
            if not resource.inputs.get("namePrefix"):
                # An auto-name longer than the bridge's Maxlen fails the preview.
                applied = replace(rule, max_len=min(rule.max_len, rule.autoname_max_len))
        if isinstance(value, str):
            yield applied, value


def name_violations(run: OfflineRun, type_: str | None = None) -> list[str]:
    """Every physical name AWS would refuse, one line each."""
    found = []
    for resource in run.resources:
        if type_ is not None and resource.type != type_:
            continue
        for rule, value in physical_names(resource):
            for problem in rule.problems(value):
                found.append(
                    f"{resource.type} {resource.name}: {rule.prop} {value!r} {problem} "
                    f"({rule.source})"
                )
    return found


# ------------------------------------------------------------------ per-resource constraints

Check = Callable[["DeclaredResource", "OfflineRun"], list[str]]


@dataclass(frozen=True)
class Constraint:
    """A rule AWS or the provider applies to one resource type's inputs."""

    id: str
    rule: str
    source: str
    check: Check


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _in_range(
    inputs: Mapping[str, Any], path: str, low: int, high: int, *, required: bool = False
) -> list[str]:
    value: Any = inputs
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    number = _int(value)
    if number is None:
        return [f"{path} is missing"] if required else []
    if not low <= number <= high:
        return [f"{path}={number} is outside {low}-{high}"]
    return []


# Fargate task sizes: cpu units -> allowed memory (MiB).
FARGATE_SIZES: dict[int, frozenset[int]] = {
    256: frozenset({512, 1024, 2048}),
    512: frozenset(range(1024, 4096 + 1, 1024)),
    1024: frozenset(range(2048, 8192 + 1, 1024)),
    2048: frozenset(range(4096, 16384 + 1, 1024)),
    4096: frozenset(range(8192, 30720 + 1, 1024)),
    8192: frozenset(range(16384, 61440 + 1, 4096)),
    16384: frozenset(range(32768, 122880 + 1, 8192)),
}


def _fargate_size(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    inputs = resource.inputs
    if "FARGATE" not in (inputs.get("requiresCompatibilities") or []):
        return []
    cpu, memory = _int(inputs.get("cpu")), _int(inputs.get("memory"))
    if cpu is None or memory is None:
        return ["a Fargate task needs task-level cpu and memory"]
    if memory not in FARGATE_SIZES.get(cpu, frozenset()):
        return [f"cpu={cpu} memory={memory} is not a Fargate size"]
    return []


def _source_db(resource: DeclaredResource, run: OfflineRun) -> DeclaredResource | None:
    source = resource.inputs.get("replicateSourceDb")
    for other in run.of_type("aws:rds/instance:Instance"):
        if source in (other.state.get("arn"), other.state.get("identifier")) and other is not (
            resource
        ):
            return other
    return None


def _region_of(resource: DeclaredResource, run: OfflineRun) -> str:
    region = resource.inputs.get("region")
    if isinstance(region, str) and region:
        return region
    provider = _provider(resource, run)
    if provider is not None:
        return str(provider.inputs.get("region") or "")
    return ""


def _provider(resource: DeclaredResource, run: OfflineRun) -> DeclaredResource | None:
    urn = resource.provider.rsplit("::", 1)[0] if resource.provider else ""
    return next((r for r in run.resources if r.urn == urn), None) if urn else None


def _replica_kms_key(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    source = _source_db(resource, run)
    if not resource.inputs.get("replicateSourceDb") or source is None:
        return []
    same_region = _region_of(resource, run) == _region_of(source, run)
    has_key = bool(resource.inputs.get("kmsKeyId"))
    if same_region and has_key:
        return ["a same-region read replica must not set kmsKeyId (it uses the source's key)"]
    if not same_region and not has_key and source.inputs.get("storageEncrypted"):
        return ["a cross-region replica of an encrypted database must set kmsKeyId"]
    return []


def _replica_source_arn(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    source = _source_db(resource, run)
    if source is None or _region_of(resource, run) == _region_of(source, run):
        return []
    if not str(resource.inputs.get("replicateSourceDb", "")).startswith("arn:"):
        return ["a cross-region replica must name its source by ARN"]
    return []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def _replica_backups(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    if not resource.inputs.get("replicateSourceDb"):
        return []
    if (_int(resource.inputs.get("backupRetentionPeriod")) or 0) == 0:
        return []
    source = _source_db(resource, run)
    if source is None or source.inputs.get("engine") != "postgres":
        return []
    version = str(source.inputs.get("engineVersion", ""))
    if _version(version) < (14, 1):
        return [f"backups on a PostgreSQL read replica need 14.1 or later, source is {version}"]
    return []


def _rds_ranges(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    found = _in_range(resource.inputs, "backupRetentionPeriod", 0, 35)
    if not resource.inputs.get("replicateSourceDb"):
        # gp3 PostgreSQL storage: 20 GiB to 64 TiB.
        found += _in_range(resource.inputs, "allocatedStorage", 20, 65536, required=True)
    return found


# EC2 user data: at most 16 KB in raw form, before base64 encoding.
USER_DATA_MAX_BYTES = 16 * 1024


def _user_data_size(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    inputs = resource.inputs
    size = None
    if isinstance(inputs.get("userDataBase64"), str):
        size = len(base64.b64decode(inputs["userDataBase64"]))
    elif isinstance(inputs.get("userData"), str):
        size = len(inputs["userData"].encode())
    if size is not None and size > USER_DATA_MAX_BYTES:
        return [f"user data is {size} bytes, over {USER_DATA_MAX_BYTES}"]
    return []


MAX_TAGS = 50
_TAG_CHARS = r"[\w .:/=+\-@]*"


def effective_tags(resource: DeclaredResource, run: OfflineRun) -> dict[str, str]:
    """The provider's default tags merged with the resource's own, as AWS receives them."""
    tags: dict[str, str] = {}
    provider = _provider(resource, run)
    if provider is not None:
        default = provider.inputs.get("defaultTags") or {}
        if isinstance(default, str):  # provider inputs reach the engine JSON-encoded
            default = json.loads(default)
        tags.update(default.get("tags") or {})
    tags.update(resource.inputs.get("tags") or {})
    return tags


def _tags(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    tags = effective_tags(resource, run)
    found = []
    if len(tags) > MAX_TAGS:
        found.append(f"{len(tags)} tags, at most {MAX_TAGS}")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or not re.fullmatch(_TAG_CHARS, key):
            found.append(f"tag key {key!r}: 1-128 characters of {_TAG_CHARS}")
        if key.lower().startswith("aws:"):
            found.append(f"tag key {key!r}: the aws: prefix is reserved")
        if len(str(value)) > 256 or not re.fullmatch(_TAG_CHARS, str(value)):
            found.append(f"tag {key!r} value {value!r}: 0-256 characters of {_TAG_CHARS}")
    return found


def _target_group_health(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    inputs = resource.inputs
    check = inputs.get("healthCheck") or {}
    found = _in_range(inputs, "deregistrationDelay", 0, 3600)
    if inputs.get("protocol") in ("TCP", "UDP", "TCP_UDP", "TLS"):  # a Network Load Balancer's
        found += _in_range(inputs, "healthCheck.interval", 5, 300)
        found += _in_range(inputs, "healthCheck.timeout", 2, 120)
        found += _in_range(inputs, "healthCheck.healthyThreshold", 2, 10)
        found += _in_range(inputs, "healthCheck.unhealthyThreshold", 2, 10)
        if check.get("protocol") in ("HTTP", "HTTPS"):
            matcher = str(check.get("matcher", "200-399"))
            codes = [int(c) for c in re.findall(r"\d+", matcher)]
            if not codes or any(not 200 <= c <= 599 for c in codes):
                found.append(f"healthCheck.matcher {matcher!r}: HTTP codes 200-599")
            path = str(check.get("path", "/"))
            if not path.startswith("/") or len(path) > 1024:
                found.append(f"healthCheck.path {path!r}: starts with / and at most 1024")
    return found


def _listener_port(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    return _in_range(resource.inputs, "port", 1, 65535, required=True)


def _tls_listener(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    inputs = resource.inputs
    if inputs.get("protocol") != "TLS":
        return []
    found = [] if inputs.get("certificateArn") else ["a TLS listener needs certificateArn"]
    groups = {g.state.get("arn"): g for g in run.of_type("aws:lb/targetGroup:TargetGroup")}
    for action in inputs.get("defaultActions") or []:
        group = groups.get(action.get("targetGroupArn"))
        protocol = group.inputs.get("protocol") if group is not None else None
        if group is not None and protocol not in ("TCP", "TLS"):
            found.append(f"a TLS listener forwards to TCP or TLS target groups, not {protocol}")
    return found


def _ecs_service(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    found = _in_range(resource.inputs, "healthCheckGracePeriodSeconds", 0, 2147483647)
    found += _in_range(resource.inputs, "deploymentMinimumHealthyPercent", 0, 100)
    if resource.inputs.get("healthCheckGracePeriodSeconds") is not None and not (
        resource.inputs.get("loadBalancers")
    ):
        found.append("healthCheckGracePeriodSeconds is only valid with a load balancer")
    return found


def _kms_window(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    return _in_range(resource.inputs, "deletionWindowInDays", 7, 30)


def _secret_window(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    days = _int(resource.inputs.get("recoveryWindowInDays"))
    # 0 is the provider's "delete without recovery"; AWS itself takes 7-30.
    if days is not None and days != 0 and not 7 <= days <= 30:
        return [f"recoveryWindowInDays={days}: 0 or 7-30"]
    return []


LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827}
    | {2192, 2557, 2922, 3288, 3653}
)


def _log_retention(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    days = _int(resource.inputs.get("retentionInDays"))
    if days is not None and days not in LOG_RETENTION_DAYS:
        return [f"retentionInDays={days} is not one CloudWatch Logs accepts"]
    return []


def _gp3_volume(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    if resource.inputs.get("type") != "gp3":
        return []
    found = _in_range(resource.inputs, "size", 1, 16384, required=True)
    found += _in_range(resource.inputs, "throughput", 125, 1000)
    found += _in_range(resource.inputs, "iops", 3000, 16000)
    return found


def _period_problems(where: str, value: Any) -> list[str]:
    period = _int(value)
    if period is not None and not (period in (10, 20, 30) or (period >= 60 and period % 60 == 0)):
        return [f"{where}={period}: 10, 20, 30 or a multiple of 60"]
    return []


def _alarm_period(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    inputs = resource.inputs
    found = _period_problems("period", inputs.get("period"))
    queries = inputs.get("metricQueries") or []
    for i, query in enumerate(queries):
        metric = query.get("metric") or {}
        found += _period_problems(f"metricQueries[{i}].metric.period", metric.get("period"))
    if queries and sum(1 for q in queries if q.get("returnData")) != 1:
        found.append("metricQueries: exactly one query must have returnData true")
    if queries and (inputs.get("metricName") or inputs.get("namespace")):
        found.append("metricQueries and metricName/namespace are mutually exclusive")
    periods = _int(inputs.get("evaluationPeriods"))
    datapoints = _int(inputs.get("datapointsToAlarm"))
    if datapoints is not None and periods is not None and not 1 <= datapoints <= periods:
        found.append(f"datapointsToAlarm={datapoints}: 1 to evaluationPeriods ({periods})")
    if len(str(inputs.get("alarmDescription") or "")) > 1024:
        found.append("alarmDescription: at most 1024 characters")
    return found + _in_range(inputs, "evaluationPeriods", 1, 2147483647, required=True)


def _image_tags(resource: DeclaredResource, run: OfflineRun) -> list[str]:
    found = []
    for ref in resource.inputs.get("tags") or []:
        tag = str(ref).rsplit("/", 1)[-1].partition(":")[2]
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag):
            found.append(f"image tag {tag!r}: [A-Za-z0-9_][A-Za-z0-9._-], at most 128")
    return found


_TAGS_SOURCE = _api("tag-editor/latest/userguide/tagging.html")
_TAGS = Constraint(
    "tags",
    "at most 50 user tags (default tags included); keys 1-128, values 0-256 characters; "
    "no aws: prefix",
    _TAGS_SOURCE,
    _tags,
)

# A multi-Region primary key and its replicas are scheduled for deletion alike.
_KMS_KEY_CONSTRAINTS = (
    Constraint(
        "kms-deletion-window",
        "pending deletion window 7-30 days",
        _api("kms/latest/APIReference/API_ScheduleKeyDeletion.html"),
        _kms_window,
    ),
    _TAGS,
)

CONSTRAINTS: dict[str, tuple[Constraint, ...]] = {
    "aws:ecs/taskDefinition:TaskDefinition": (
        Constraint(
            "fargate-size",
            "Fargate tasks take only the documented cpu/memory pairs",
            _api("AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size"),
            _fargate_size,
        ),
        _TAGS,
    ),
    "aws:rds/instance:Instance": (
        Constraint(
            "replica-kms-key",
            "same-region read replica: no KmsKeyId; cross-region replica of an encrypted "
            "source: KmsKeyId of the destination region",
            _api("AmazonRDS/latest/APIReference/API_CreateDBInstanceReadReplica.html"),
            _replica_kms_key,
        ),
        Constraint(
            "replica-source-arn",
            "a cross-region replica names its source DB instance by ARN",
            _api("AmazonRDS/latest/APIReference/API_CreateDBInstanceReadReplica.html"),
            _replica_source_arn,
        ),
        Constraint(
            "replica-backups",
            "automated backups on a PostgreSQL read replica need engine 14.1 or later",
            _api("AmazonRDS/latest/UserGuide/USER_PostgreSQL.Replication.ReadReplicas.html"),
            _replica_backups,
        ),
        Constraint(
            "rds-ranges",
            "backup retention 0-35 days; gp3 PostgreSQL storage 20-65536 GiB",
            _api("AmazonRDS/latest/APIReference/API_CreateDBInstance.html"),
            _rds_ranges,
        ),
        _TAGS,
    ),
    "aws:ec2/instance:Instance": (
        Constraint(
            "user-data-size",
            "user data at most 16 KB raw, before base64",
            _api("AWSEC2/latest/UserGuide/instancedata-add-user-data.html"),
            _user_data_size,
        ),
        _TAGS,
    ),
    "aws:lb/targetGroup:TargetGroup": (
        Constraint(
            "nlb-health-check",
            "NLB target group: interval 5-300 s, timeout 2-120 s, thresholds 2-10, HTTP "
            "matcher 200-599, path from / up to 1024; deregistration delay 0-3600 s",
            _api("elasticloadbalancing/latest/network/target-group-health-checks.html"),
            _target_group_health,
        ),
        _TAGS,
    ),
    "aws:lb/listener:Listener": (
        Constraint(
            "listener-port",
            "listener port 1-65535",
            _api("elasticloadbalancing/latest/APIReference/API_CreateListener.html"),
            _listener_port,
        ),
        Constraint(
            "tls-listener",
            "an NLB TLS listener has a certificate and forwards to TCP or TLS target groups",
            _api("elasticloadbalancing/latest/network/load-balancer-target-groups.html"),
            _tls_listener,
        ),
        _TAGS,
    ),
    "aws:ecs/service:Service": (
        Constraint(
            "ecs-service",
            "health check grace period 0-2147483647 s and only with a load balancer; minimum "
            "healthy percent 0-100",
            _api("AmazonECS/latest/APIReference/API_CreateService.html"),
            _ecs_service,
        ),
        _TAGS,
    ),
    "aws:ec2/networkInterface:NetworkInterface": (_TAGS,),
    "aws:kms/key:Key": _KMS_KEY_CONSTRAINTS,
    "aws:kms/replicaKey:ReplicaKey": _KMS_KEY_CONSTRAINTS,
    "aws:secretsmanager/secret:Secret": (
        Constraint(
            "secret-recovery-window",
            "recovery window 7-30 days (0: the provider deletes without recovery)",
            _api("secretsmanager/latest/apireference/API_DeleteSecret.html"),
            _secret_window,
        ),
        _TAGS,
    ),
    "aws:cloudwatch/logGroup:LogGroup": (
        Constraint(
            "log-retention",
            "retention one of CloudWatch Logs' fixed values",
            _api("AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html"),
            _log_retention,
        ),
        _TAGS,
    ),
    "aws:ebs/volume:Volume": (
        Constraint(
            "gp3-volume",
            "gp3: 1-16384 GiB, 125-1000 MiB/s, 3000-16000 IOPS",
            _api("ebs/latest/userguide/general-purpose.html#gp3-ebs-volume-type"),
            _gp3_volume,
        ),
        _TAGS,
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": (
        Constraint(
            "alarm-period",
            "period (and each metric query's) 10, 20, 30 or a multiple of 60 s; at least 1 "
            "evaluation period, datapointsToAlarm at most evaluationPeriods; one query returns "
            "data; description at most 1024 characters",
            _api("AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html"),
            _alarm_period,
        ),
        _TAGS,
    ),
    "docker-build:index:Image": (
        Constraint(
            "image-tag",
            "an image tag is [A-Za-z0-9_][A-Za-z0-9._-], at most 128 characters",
            "https://docs.docker.com/reference/cli/docker/image/tag/",
            _image_tags,
        ),
    ),
    # Tags only: nothing else the mocks let through that AWS refuses, as far as we use them.
    **{
        type_: (_TAGS,)
        for type_ in (
            "aws:cloudwatch/dashboard:Dashboard",
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
            "aws:ec2/eip:Eip",
            "aws:ec2/internetGateway:InternetGateway",
            "aws:ec2/natGateway:NatGateway",
            "aws:ec2/routeTable:RouteTable",
            "aws:ec2/securityGroup:SecurityGroup",
            "aws:ec2/subnet:Subnet",
            "aws:ec2/vpc:Vpc",
            "aws:ec2/vpcEndpoint:VpcEndpoint",
            "aws:ec2/vpcPeeringConnection:VpcPeeringConnection",
            "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter",
            "aws:ecr/repository:Repository",
            "aws:ecs/cluster:Cluster",
            "aws:iam/instanceProfile:InstanceProfile",
            "aws:iam/role:Role",
            "aws:lb/loadBalancer:LoadBalancer",
            "aws:rds/parameterGroup:ParameterGroup",
            "aws:rds/eventSubscription:EventSubscription",
            "aws:rds/subnetGroup:SubnetGroup",
            "aws:route53/zone:Zone",
            "aws:sns/topic:Topic",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        )
    },
    # Not taggable and nothing else to check.
    **{
        type_: ()
        for type_ in (
            "aws:ec2/route:Route",
            "aws:ec2/routeTableAssociation:RouteTableAssociation",
            "aws:ec2/volumeAttachment:VolumeAttachment",
            "aws:iam/rolePolicy:RolePolicy",
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
            "aws:kms/alias:Alias",
            "aws:route53/record:Record",
            "aws:secretsmanager/secretVersion:SecretVersion",
            "aws:sns/topicSubscription:TopicSubscription",
            "random:index/randomBytes:RandomBytes",
            "random:index/randomPassword:RandomPassword",
            "pulumi:providers:aws",
            "pulumi:pulumi:StackReference",
        )
    },
}


def constraint_violations(run: OfflineRun, constraint_id: str | None = None) -> list[str]:
    """Every declared resource's breach of its type's constraints, one line each."""
    found = []
    for resource in run.resources:
        for constraint in CONSTRAINTS.get(resource.type, ()):
            if constraint_id is not None and constraint.id != constraint_id:
                continue
            for problem in constraint.check(resource, run):
                found.append(
                    f"{resource.type} {resource.name}: {problem} [{constraint.id}: "
                    f"{constraint.source}]"
                )
    return found


def violations(run: OfflineRun) -> list[str]:
    """Name and constraint violations together: what `tools.plan` reports."""
    return name_violations(run) + constraint_violations(run)


# ------------------------------------------------------------------ replace-on-change inputs
_TF = "https://github.com/hashicorp/terraform-provider-aws/blob/main/internal/service/"
_RANDOM = "https://github.com/hashicorp/terraform-provider-random/blob/main/internal/provider/"


@dataclass(frozen=True)
class Replacement:
    """The inputs (Pulumi names) whose change replaces a stateful resource."""

    forcing: tuple[str, ...]
    source: str
    # pulumi-aws v7 adds `region` to every regional resource; changing it replaces (the
    # resource moves): https://www.pulumi.com/registry/packages/aws/how-to-guides/7-0-migration/
    regional: bool = True

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.forcing, "region") if self.regional else self.forcing


REPLACE_ON_CHANGES: dict[str, Replacement | None] = {
    "aws:kms/key:Key": Replacement(
        ("customKeyStoreId", "customerMasterKeySpec", "keyUsage", "multiRegion", "xksKeyId"),
        _TF + "kms/key.go",
    ),
    "aws:kms/replicaKey:ReplicaKey": Replacement(("primaryKeyArn",), _TF + "kms/replica_key.go"),
    "aws:secretsmanager/secret:Secret": Replacement(
        ("name", "namePrefix"), _TF + "secretsmanager/secret.go"
    ),
    # A new version replaces the value: harmless only if the value is the same.
    "aws:secretsmanager/secretVersion:SecretVersion": Replacement(
        ("secretId", "secretBinary", "secretString", "secretStringWoVersion"),
        _TF + "secretsmanager/secret_version.go",
    ),
    "random:index/randomBytes:RandomBytes": Replacement(
        ("keepers", "length"), _RANDOM + "resource_bytes.go", regional=False
    ),
    # keepers: RequiresReplaceIfValuesNotNull; overrideSpecial: not from "" to null. Counted as
    # replacing on any change (stricter).
    "random:index/randomPassword:RandomPassword": Replacement(
        (
            "keepers",
            "length",
            "lower",
            "minLower",
            "minNumeric",
            "minSpecial",
            "minUpper",
            "number",
            "numeric",
            "overrideSpecial",
            "special",
            "upper",
        ),
        _RANDOM + "resource_password.go",
        regional=False,
    ),
    # Since provider v5 `identifier`/`identifierPrefix` are no longer ForceNew: a new identifier
    # renames the instance in place (ModifyDBInstance NewDBInstanceIdentifier).
    "aws:rds/instance:Instance": Replacement(
        (
            "availabilityZone",
            "backupTarget",
            "characterSetName",
            "customIamInstanceProfile",
            "dbName",
            "engine",
            "kmsKeyId",
            "ncharCharacterSetName",
            "restoreToPointInTime",
            "s3Import",
            "snapshotIdentifier",
            "storageEncrypted",
            "timezone",
            "username",
        ),
        _TF + "rds/instance.go",
    ),
    "aws:ebs/volume:Volume": Replacement(
        (
            "availabilityZone",
            "encrypted",
            "kmsKeyId",
            "multiAttachEnabled",
            "outpostArn",
            "snapshotId",
        ),
        _TF + "ec2/ebs_volume.go",
    ),
    "aws:ecr/repository:Repository": Replacement(
        ("encryptionConfigurations", "name"), _TF + "ecr/repository.go"
    ),
    # A Quorum machine's kept interface: its IP is the host of the exported haEnodes.
    # privateIps / privateIpList: customdiff.ForceNewIf when the primary IP changes.
    "aws:ec2/networkInterface:NetworkInterface": Replacement(
        ("interfaceType", "privateIpList", "privateIps", "subnetId"),
        _TF + "ec2/vpc_network_interface.go",
    ),
    "aws:route53/zone:Zone": Replacement(
        ("delegationSetId", "name"), _TF + "route53/zone.go", regional=False
    ),
    # The alarm topic and its email subscriptions: a replaced topic or subscription loses
    # every recipient's confirmation (each must confirm again before alarms reach them).
    "aws:sns/topic:Topic": Replacement(("fifoTopic", "name", "namePrefix"), _TF + "sns/topic.go"),
    "aws:sns/topicSubscription:TopicSubscription": Replacement(
        ("endpoint", "protocol", "topic"), _TF + "sns/topic_subscription.go"
    ),
    # instanceTenancy: resourceVPCCustomizeDiff forces new on any change but dedicated -> default.
    "aws:ec2/vpc:Vpc": Replacement(
        ("cidrBlock", "instanceTenancy", "ipv4IpamPoolId", "ipv4NetmaskLength"),
        _TF + "ec2/vpc_.go",
    ),
    "aws:ec2/subnet:Subnet": Replacement(
        (
            "availabilityZone",
            "availabilityZoneId",
            "cidrBlock",
            "ipv4IpamPoolId",
            "ipv4NetmaskLength",
            # customdiff.ForceNewIf: only when the old subnet had assignIpv6AddressOnCreation.
            "ipv6CidrBlock",
            "ipv6IpamPoolId",
            "ipv6Native",
            "ipv6NetmaskLength",
            "outpostArn",
            "vpcId",
        ),
        _TF + "ec2/vpc_subnet.go",
    ),
    # Everything under a provider is replaced with it. pulumi-terraform-bridge's DiffConfig
    # replaces only on config marked ForcesProviderReplace; defaultTags is an in-place update
    # (pulumi/pulumi-aws#2585). Region is treated as replacing, to be safe.
    "pulumi:providers:aws": Replacement(
        ("region",),
        "https://github.com/pulumi/pulumi-terraform-bridge/blob/master/pkg/tfbridge/provider.go",
        regional=False,
    ),
    # Replaced without loss: recreated from the program's inputs, holding no data of their own.
    **{
        type_: None
        for type_ in (
            "aws:cloudwatch/dashboard:Dashboard",
            "aws:cloudwatch/logGroup:LogGroup",
            "aws:cloudwatch/metricAlarm:MetricAlarm",
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
            "aws:ec2/eip:Eip",
            "aws:ec2/instance:Instance",
            "aws:ec2/internetGateway:InternetGateway",
            "aws:ec2/natGateway:NatGateway",
            "aws:ec2/route:Route",
            "aws:ec2/routeTable:RouteTable",
            "aws:ec2/routeTableAssociation:RouteTableAssociation",
            "aws:ec2/securityGroup:SecurityGroup",
            "aws:ec2/volumeAttachment:VolumeAttachment",
            "aws:ec2/vpcEndpoint:VpcEndpoint",
            "aws:ec2/vpcPeeringConnection:VpcPeeringConnection",
            "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter",
            "aws:ecs/cluster:Cluster",
            "aws:ecs/service:Service",
            "aws:ecs/taskDefinition:TaskDefinition",
            "aws:iam/instanceProfile:InstanceProfile",
            "aws:iam/role:Role",
            "aws:iam/rolePolicy:RolePolicy",
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
            "aws:kms/alias:Alias",
            "aws:lb/listener:Listener",
            "aws:lb/loadBalancer:LoadBalancer",
            "aws:lb/targetGroup:TargetGroup",
            "aws:rds/eventSubscription:EventSubscription",
            "aws:rds/parameterGroup:ParameterGroup",
            "aws:rds/subnetGroup:SubnetGroup",
            "aws:route53/record:Record",
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "docker-build:index:Image",
            "pulumi:pulumi:StackReference",
        )
    },
}

STATEFUL_TYPES = frozenset(t for t, rule in REPLACE_ON_CHANGES.items() if rule is not None)


def is_component(type_: str) -> bool:
    """Our own ComponentResources: no physical existence, so no entry in the tables."""
    return type_.startswith("quorum-ha:")


def missing_entries(types: set[str]) -> dict[str, list[str]]:
    """Per table, the declared custom types it has no entry for."""
    custom = {t for t in types if not is_component(t)}
    return {
        "NAME_RULES": sorted(custom - set(NAME_RULES)),
        "CONSTRAINTS": sorted(custom - set(CONSTRAINTS)),
        "REPLACE_ON_CHANGES": sorted(custom - set(REPLACE_ON_CHANGES)),
    }
