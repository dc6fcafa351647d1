"""The program as `pulumi up` runs it: exports, invariants over everything declared, refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.inspection import policy_documents, public_texts, secret_texts
from tools.offline import OfflineProgramError, OfflineRun, load_stack_config, run_offline

WORLD = ("0.0.0.0/0", "::/0")
OUTPUTS = {
    "rpcEndpoint",
    "thirdPartyUrl",
    "p2pUrl",
    "tesseraPublicKey",
    "nlbDnsName",
    "securityGroupIds",
    "vpcId",
    "subnetIds",
    "dbEndpoints",
}


def key_arn(run: OfflineRun) -> str:
    (key,) = run.of_type("aws:kms/key:Key")
    return str(key.state["arn"])


# --- guard: the mocks trap ------------------------------------------------------------------
def test_guard_the_program_registers_its_resources(offline: Callable[..., OfflineRun]) -> None:
    """Mocks set too late make a program declare nothing and every check pass vacuously."""
    run = offline("pair")
    custom = [r for r in run.resources if r.custom and r.type.startswith("aws:")]
    assert len(custom) > 50
    assert any(r.type == "quorum-ha:setups:PairHA" for r in run.resources)
    assert run.outputs, "no stack outputs were exported"


def test_exports_what_other_stacks_need(shaped_run: OfflineRun) -> None:
    outputs = shaped_run.outputs
    assert set(outputs) >= OUTPUTS
    nlb = outputs["nlbDnsName"]
    assert outputs["rpcEndpoint"] == f"http://{nlb}:22000"
    assert outputs["thirdPartyUrl"] == f"http://{nlb}:9081"
    assert outputs["p2pUrl"] == f"http://{nlb}:9001"
    (vpc,) = shaped_run.of_type("aws:ec2/vpc:Vpc")
    assert outputs["vpcId"] == vpc.id
    assert len(outputs["subnetIds"]["private"]) == 2
    groups = {g.id for g in shaped_run.of_type("aws:ec2/securityGroup:SecurityGroup")}
    assert set(outputs["securityGroupIds"].values()) <= groups
    databases = {d.state["address"] for d in shaped_run.of_type("aws:rds/instance:Instance")}
    assert set(outputs["dbEndpoints"].values()) == databases


# --- invariants over every declared resource ---------------------------------------------------
def test_no_ingress_from_the_internet_by_default(shaped_run: OfflineRun) -> None:
    for rule in shaped_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        assert rule.inputs.get("cidrIpv4") not in WORLD, rule.name
        assert rule.inputs.get("cidrIpv6") not in WORLD, rule.name
    for group in shaped_run.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for entry in group.inputs.get("ingress") or []:
            assert not set(entry.get("cidrBlocks") or []) & set(WORLD), group.name


def test_internet_ingress_only_on_the_listeners_when_configured(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full", allowInternetIngress=True, allowedCidrs=["0.0.0.0/0"], internalNlb=False)
    groups = {g.id: g.name for g in run.of_type("aws:ec2/securityGroup:SecurityGroup")}
    open_rules = [
        r
        for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs.get("cidrIpv4") in WORLD
    ]
    assert sorted(r.inputs["fromPort"] for r in open_rules) == [9001, 9081, 22000]
    assert {groups[r.inputs["securityGroupId"]] for r in open_rules} == {"quorum-ha-sg-nlb"}
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["internal"] is False
    assert nlb.inputs["subnets"] == run.outputs["subnetIds"]["public"]


def test_no_ssh_ingress_anywhere(shaped_run: OfflineRun) -> None:
    for rule in shaped_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        low, high = int(rule.inputs.get("fromPort", 0)), int(rule.inputs.get("toPort", 0))
        ports = range(low, high + 1)
        assert 22 not in ports, rule.name
    assert all("keyName" not in i.inputs for i in shaped_run.of_type("aws:ec2/instance:Instance"))


def test_everything_at_rest_is_encrypted_with_the_customer_key(shaped_run: OfflineRun) -> None:
    key = key_arn(shaped_run)
    checked = 0
    for volume in shaped_run.of_type("aws:ebs/volume:Volume"):
        assert volume.inputs["encrypted"] is True and volume.inputs["kmsKeyId"] == key
        checked += 1
    for instance in shaped_run.of_type("aws:ec2/instance:Instance"):
        root = instance.inputs["rootBlockDevice"]
        assert root["encrypted"] is True and root["kmsKeyId"] == key
        checked += 1
    for database in shaped_run.of_type("aws:rds/instance:Instance"):
        assert database.inputs["storageEncrypted"] is True
        if "replicateSourceDb" in database.inputs:  # same region: RDS uses the source's key
            assert "kmsKeyId" not in database.inputs
        else:
            assert database.inputs["kmsKeyId"] == key
        checked += 1
    for secret in shaped_run.of_type("aws:secretsmanager/secret:Secret"):
        assert secret.inputs["kmsKeyId"] == key, secret.name
        checked += 1
    for group in shaped_run.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["kmsKeyId"] == key, group.name
        checked += 1
    (repository,) = shaped_run.of_type("aws:ecr/repository:Repository")
    assert repository.inputs["encryptionConfigurations"] == [
        {"encryptionType": "KMS", "kmsKey": key}
    ]
    assert checked >= 10


def test_imdsv2_is_required_on_every_machine(shaped_run: OfflineRun) -> None:
    instances = shaped_run.of_type("aws:ec2/instance:Instance")
    assert instances
    for instance in instances:
        options = instance.inputs["metadataOptions"]
        assert options["httpTokens"] == "required", instance.name
        assert options["httpPutResponseHopLimit"] == 1, instance.name


def real_secrets(run: OfflineRun) -> set[str]:
    """The run's secret texts, less Tessera's public key: it sits in Secrets Manager beside the
    private key (Tessera's vault reads both there) but it is public by nature."""
    return secret_texts(run) - {run.outputs["tesseraPublicKey"]}


def test_no_secret_text_in_user_data_outputs_or_clear_inputs(shaped_run: OfflineRun) -> None:
    secrets = real_secrets(shaped_run)
    # The generated secrets: Tessera private key, account keystore + password, DB password,
    # node keys, their seeds.
    assert len(secrets) >= 8
    leaks = [
        (where, secret[:6] + "...")
        for where, text in public_texts(shaped_run)
        for secret in secrets
        if secret in text
    ]
    assert leaks == []


def test_user_data_carries_secret_arns_not_values(shaped_run: OfflineRun) -> None:
    arns = {s.state["arn"] for s in shaped_run.of_type("aws:secretsmanager/secret:Secret")}
    for instance in shaped_run.of_type("aws:ec2/instance:Instance"):
        texts = dict(public_texts(shaped_run))
        env = texts[f"{instance.name} user data /etc/quorum-ha/boot.env"]
        named = {line.split("=", 1)[1].strip('"') for line in env.splitlines() if "_ARN=" in line}
        assert named and named <= arns, instance.name


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_iam_statements_for_secrets_and_keys_name_this_stacks_arns(shaped_run: OfflineRun) -> None:
    own = {
        str(r.state["arn"])
        for r in shaped_run.resources
        if r.custom and isinstance(r.state.get("arn"), str)
    }
    checked = 0
    for resource, document in policy_documents(shaped_run):
        if resource.type.startswith("aws:kms/"):
            continue  # a key policy's "*" means "this key"
        for statement in _statements(document):
            actions = _listed(statement["Action"])
            if not any(a.startswith(("secretsmanager:", "kms:")) for a in actions):
                continue
            resources = _listed(statement["Resource"])
            assert "*" not in resources, (resource.name, statement)
            assert set(resources) <= own, (resource.name, statement)
            checked += 1
    assert checked >= 2


def test_each_machine_reads_only_its_own_secrets(shaped_run: OfflineRun) -> None:
    arns = shaped_run.outputs["secretArns"]
    tessera_only = {arns["tesseraPrivateKey"], arns["database"]}
    node_keys = arns["quorumNodeKeys"]
    for resource, document in policy_documents(shaped_run):
        if resource.type != "aws:iam/rolePolicy:RolePolicy" or "-proxy-" in resource.name:
            continue
        (read,) = [s for s in _statements(document) if s.get("Sid") == "ReadOwnSecrets"]
        readable = set(read["Resource"])
        role = resource.name.split("-")[-3]  # quorum-ha-<role>-<i>-policy
        index = int(resource.name.split("-")[-2])
        if role == "tessera":
            assert not readable & set(node_keys) and arns["quorumAccount"] not in readable
            assert tessera_only <= readable
        else:
            assert readable & set(node_keys) == {node_keys[index]}
            assert arns["quorumAccount"] in readable
            assert (tessera_only <= readable) is (role == "pair")


def test_the_keys_decrypt_statement_names_only_this_stacks_machine_roles(
    shaped_run: OfflineRun,
) -> None:
    # The statement documents intent: the key policy's AccountAdministers statement already
    # delegates every kms action to IAM, so the machines' role policies are what limit use.
    ((key, policy),) = [
        (r, d) for r, d in policy_documents(shaped_run) if r.type == "aws:kms/key:Key"
    ]
    assert key.inputs["enableKeyRotation"] is True
    (decrypt,) = [s for s in _statements(policy) if "kms:Decrypt" in _listed(s["Action"])]
    assert decrypt["Condition"]["StringEquals"]["kms:ViaService"] == (
        "secretsmanager.us-east-1.amazonaws.com"
    )
    allowed = decrypt["Condition"]["ArnLike"]["aws:PrincipalArn"].rstrip("*")
    roles = shaped_run.of_type("aws:iam/role:Role")
    machine_roles = [r for r in roles if r.name.endswith("-role") and "-proxy-" not in r.name]
    assert machine_roles and all(str(r.state["arn"]).startswith(allowed) for r in machine_roles)
    proxy_roles = [r for r in roles if "-proxy-" in r.name]
    assert proxy_roles and not any(str(r.state["arn"]).startswith(allowed) for r in proxy_roles)


def test_only_the_machines_role_policies_may_decrypt_with_the_key(shaped_run: OfflineRun) -> None:
    # What actually limits use of the key: IAM. The key policy delegates to the account.
    (key,) = shaped_run.of_type("aws:kms/key:Key")
    roles = {r.id: r for r in shaped_run.of_type("aws:iam/role:Role")}
    granted = set()
    for resource, document in policy_documents(shaped_run):
        if resource.type != "aws:iam/rolePolicy:RolePolicy":
            continue
        for statement in _statements(document):
            decrypts = any(a in ("kms:Decrypt", "kms:*") for a in _listed(statement["Action"]))
            if decrypts and key.state["arn"] in _listed(statement["Resource"]):
                granted.add(roles[resource.inputs["role"]].name)
    machine_roles = {
        r.name for r in roles.values() if r.name.endswith("-role") and "-proxy-" not in r.name
    }
    assert granted and granted <= machine_roles, granted


def test_every_aws_resource_uses_the_tagged_provider(shaped_run: OfflineRun) -> None:
    (provider,) = shaped_run.of_type("pulumi:providers:aws")
    # Provider config reaches the engine as JSON text.
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    assert tags["quorum-ha:stack"] == "dev" and tags["environment"] == "dev"
    for resource in shaped_run.resources:
        if resource.custom and resource.type.startswith("aws:"):
            assert resource.provider.startswith(provider.urn), resource.name


def test_components_parent_their_children(shaped_run: OfflineRun) -> None:
    """Every resource except the setup hangs under a quorum-ha component."""
    components = {r.urn: r for r in shaped_run.resources if r.type.startswith("quorum-ha:")}
    for resource in shaped_run.resources:
        if resource.type.startswith("quorum-ha:setups:"):
            continue
        assert resource.parent_urn in components, resource.name
        assert resource.name.startswith(components[resource.parent_urn].name), resource.name


# --- deletion protection ---------------------------------------------------------------------
def test_dev_stack_is_deletable(offline: Callable[..., OfflineRun]) -> None:
    run = offline("pair")
    for database in run.of_type("aws:rds/instance:Instance"):
        assert database.inputs["deletionProtection"] is False and not database.protect
    (key,) = run.of_type("aws:kms/key:Key")
    assert not key.protect


def test_other_stacks_protect_the_database_and_key_by_default() -> None:
    config = dict(load_stack_config("dev"))
    config.pop("quorum-ha:deletionProtection")
    run = run_offline(config, stack="staging")
    databases = run.of_type("aws:rds/instance:Instance")
    assert len(databases) == 2
    for database in databases:
        assert database.inputs["deletionProtection"] is True
        assert database.protect and database.retain_on_delete
    (key,) = run.of_type("aws:kms/key:Key")
    assert key.protect and key.retain_on_delete
    (nlb,) = run.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["enableDeletionProtection"] is True


# --- refusals --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """A config change and the words its refusal must carry."""

    label: str
    change: dict[str, Any]
    expected: tuple[str, ...]
    stack: str = "dev"


GRAVITON = "Tessera publishes no arm64 image"
BAD_CONFIGS = (
    Bad("unknown setup", {"setup": "triple"}, ("quorum-ha:setup", "'triple'", "'pair'")),
    Bad("typo key", {"quorumNode": 2}, ("quorum-ha:quorumNode", "typo")),
    Bad("pair of one", {"quorumNodes": 1}, ("quorum-ha:quorumNodes", "2 or more pairs")),
    Bad(
        "pair counts differ",
        {"quorumNodes": 2, "tesseraNodes": 3},
        ("quorum-ha:tesseraNodes", "equal to quorumNodes"),
    ),
    Bad("full one quorum", {"setup": "full", "quorumNodes": 1}, ("quorumNodes", "2 or more")),
    Bad("full one tessera", {"setup": "full", "tesseraNodes": 1}, ("tesseraNodes", "2 or more")),
    Bad(
        "tessera two quorum",
        {"setup": "tessera", "quorumNodes": 2},
        ("quorumNodes", "exactly 1"),
    ),
    Bad(
        "tessera one tessera",
        {"setup": "tessera", "quorumNodes": 1, "tesseraNodes": 1},
        ("tesseraNodes", "2 or more"),
    ),
    Bad("count not int", {"quorumNodes": "two"}, ("quorumNodes", "an integer")),
    Bad(
        "too many",
        {"setup": "full", "tesseraNodes": 17},
        ("quorum-ha:tesseraNodes: 17", "at most 16"),
    ),
    Bad("network mode", {"network": {"mode": "peered"}}, ("network.mode", "'stackReference'")),
    Bad("bad vpc cidr", {"network": {"cidr": "10.0.0.0/33"}}, ("network.cidr", "CIDR")),
    Bad("vpc cidr host bits", {"network": {"cidr": "10.0.0.1/16"}}, ("network.cidr",)),
    Bad("one az", {"network": {"azCount": 1}}, ("network.azCount", "2 or 3")),
    Bad(
        "existing one subnet",
        {
            "network": {
                "mode": "existing",
                "vpcId": "vpc-0123456789abcdef0",
                "privateSubnetIds": ["subnet-0123456789abcdef0"],
            }
        },
        ("network.privateSubnetIds", "2+"),
    ),
    Bad(
        "existing bad vpc",
        {"network": {"mode": "existing", "vpcId": "vpc-x"}},
        ("network.vpcId", "vpc-x"),
    ),
    Bad("stack ref no stack", {"network": {"mode": "stackReference"}}, ("network.stack",)),
    Bad("bad cidr", {"allowedCidrs": ["10.0.0.0/8", "300.1.1.1/32"]}, ("allowedCidrs[1]",)),
    Bad(
        "world open",
        {"allowedCidrs": ["0.0.0.0/0"]},
        ("quorum-ha:allowedCidrs", "'0.0.0.0/0'", "allowInternetIngress"),
    ),
    Bad("world p2p", {"quorumP2pCidrs": ["::/0"]}, ("quorumP2pCidrs", "allowInternetIngress")),
    Bad("graviton m7g", {"quorumInstanceType": "m7g.large"}, ("quorumInstanceType", GRAVITON)),
    Bad("graviton t4g", {"tesseraInstanceType": "t4g.medium"}, ("tesseraInstanceType", GRAVITON)),
    Bad("graviton c7gn", {"tesseraInstanceType": "c7gn.xlarge"}, (GRAVITON,)),
    Bad("not a type", {"quorumInstanceType": "large"}, ("quorumInstanceType", "m6i.large")),
    Bad("quorum version", {"quorumVersion": "latest"}, ("quorumVersion", "24.4.1")),
    Bad("tessera version", {"tesseraVersion": "24"}, ("tesseraVersion", "24.4")),
    Bad("no genesis", {"genesis": None}, ("quorum-ha:genesis", "chainId")),
    Bad("genesis no chain", {"genesis": {"config": {}}}, ("genesis.config.chainId",)),
    Bad("bad peer", {"quorumPeers": ["enode://abc@h:30303"]}, ("quorumPeers[0]", "enode://")),
    Bad("tessera peer port", {"tesseraPeers": ["http://t2"]}, ("tesseraPeers[0]", "port")),
    Bad("db class", {"dbInstanceClass": "m6i.large"}, ("dbInstanceClass", "db.m6i.large")),
    Bad("db burstable", {"dbInstanceClass": "db.t3.micro"}, ("dbInstanceClass", "burstable")),
    Bad("db storage", {"dbAllocatedStorage": 10}, ("dbAllocatedStorage", "20 to 65536")),
    Bad("db version", {"dbEngineVersion": "9.6"}, ("dbEngineVersion", "14.1 to 17")),
    Bad("backups", {"dbBackupRetentionDays": 3}, ("dbBackupRetentionDays", "7 to 35")),
    Bad("replica region", {"replicaRegion": "mars-1"}, ("replicaRegion", "aws partition")),
    Bad(
        "replica overlaps",
        {"replicaRegion": "us-west-2", "replicaVpcCidr": "10.0.0.0/16"},
        ("replicaVpcCidr", "overlap"),
    ),
    Bad("deletion protection", {"deletionProtection": "yes"}, ("deletionProtection", "true")),
    Bad("tags", {"tags": {"aws:owner": "x"}}, ("tags.aws:owner", "aws:")),
    Bad("tags value", {"tags": {"team": 5}}, ("tags.team",)),
    Bad("proxy tasks", {"proxyTaskCount": 1}, ("proxyTaskCount", "HA needs 2+")),
    Bad("proxy memory", {"proxyCpu": 256, "proxyMemory": 4096}, ("proxyMemory", "proxyCpu 256")),
    Bad("white list", {"useWhiteList": True}, ("useWhiteList", "no fixed addresses")),
    Bad("proxy image", {"proxyImageUri": "proxy"}, ("proxyImageUri", ":tag")),
    Bad(
        "public nlb without public subnets",
        {
            "internalNlb": False,
            "network": {
                "mode": "existing",
                "vpcId": "vpc-0123456789abcdef0",
                "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            },
        },
        ("publicSubnetIds", "internalNlb is false"),
    ),
)


def _config(change: dict[str, Any]) -> dict[str, Any]:
    config = dict(load_stack_config("dev"))
    for key, value in change.items():
        full = key if ":" in key else f"quorum-ha:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value
    return config


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=lambda b: b.label)
def test_bad_config_is_refused_with_one_clear_line(bad: Bad) -> None:
    with pytest.raises(OfflineProgramError) as refused:
        run_offline(_config(bad.change), stack=bad.stack)
    message = str(refused.value)
    assert "\n" not in message and "Traceback" not in message
    assert "is not valid; allowed:" in message
    for words in bad.expected:
        assert words in message, message


def test_secret_config_values_are_never_echoed_in_refusals() -> None:
    secrets = {
        "quorum-ha:tesseraPrivateKey": "bm90LWEta2V5LWJ1dC1sb25nLWVub3VnaC10by1zaG93",
        "quorum-ha:tesseraPublicKey": "q+juZSVHu80vpnw6mGLWDY0fbgbBbUlk84DvtH07aEQ=",
    }
    with pytest.raises(OfflineProgramError) as refused:
        run_offline(load_stack_config("dev"), secrets=secrets)
    assert "tesseraPrivateKey" in str(refused.value)
    assert secrets["quorum-ha:tesseraPrivateKey"] not in str(refused.value)


def test_outputs_hold_no_secret(shaped_run: OfflineRun) -> None:
    assert shaped_run.secret_outputs == frozenset()
    exported = json.dumps(shaped_run.outputs)
    assert not [s for s in real_secrets(shaped_run) if s in exported]


def test_time_the_largest_setup_under_mocks() -> None:
    """Reported, never asserted: how long the largest shape takes to declare under mocks."""
    config = dict(load_stack_config("dev"))
    config.update(
        {"quorum-ha:setup": "full", "quorum-ha:quorumNodes": 3, "quorum-ha:tesseraNodes": 4}
    )
    started = time.perf_counter()
    run = run_offline(config)
    elapsed = time.perf_counter() - started
    print(
        f"\nlargest setup (full, 3 Quorum + 4 Tessera): {len(run.resources)} resources "
        f"declared in {elapsed:.2f} s under mocks"
    )
    assert len(run.of_type("aws:ec2/instance:Instance")) == 7
    assert len(run.outputs["nodeDnsNames"]["tessera"]) == 4


def test_leak_check_finds_a_secret_written_into_user_data() -> None:
    """The leak check itself: a secret copied into clear text is found."""
    import pulumi
    import pulumi_aws as aws
    import pulumi_random as random

    def leaky() -> None:
        password = random.RandomPassword("leak", length=24, special=False)
        aws.ec2.Instance(
            "leaky",
            ami="ami-0123456789abcdef0",
            instance_type="m6i.large",
            user_data=password.result.apply(
                lambda p: f"#cloud-config\nwrite_files:\n- path: /x\n  content: '{p}'\n"
            ),
        )
        pulumi.export("unused", "nothing")

    run = run_offline({}, program=leaky)
    secrets = secret_texts(run)
    leaks = [where for where, text in public_texts(run) for s in secrets if s in text]
    assert "leaky user data /x" in leaks


def test_every_setting_is_documented_in_the_template_and_the_reference() -> None:
    import yaml

    from components.settings import KEYS
    from tools.offline import ROOT

    template = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["template"]["config"]
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for key in KEYS:
        assert f"quorum-ha:{key}" in template, key
        assert f"| `{key}` |" in reference, key
    assert "aws:region" in template
    assert not {k for k in template if k.startswith("quorum-ha:")} - {
        f"quorum-ha:{k}" for k in KEYS
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_example_stacks_run(stack: str) -> None:
    run = run_offline(load_stack_config(stack), stack=stack)
    assert run.outputs["setup"] == load_stack_config(stack)["quorum-ha:setup"]
    protected = {r.name for r in run.resources if r.protect}
    assert bool(protected) is (stack != "dev")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_stack_output_is_documented_in_the_readme(stack: str) -> None:
    from tools.offline import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[
        readme.index("## Outputs") : readme.index("```python", readme.index("## Outputs"))
    ]
    run = run_offline(load_stack_config(stack), stack=stack)
    assert run.resources, "the program registered no resources"
    missing = [name for name in run.outputs if f"`{name}`" not in section]
    assert not missing, f"README's Outputs table does not name {missing}"
