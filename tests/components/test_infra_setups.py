"""Each setup, for several node counts, declares what its seed diagram shows, wired together."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import yaml
from quorum_proxy.config import parse_config

from domain.paths import TM_IPC_PATH
from domain.ports import (
    QUORUM_RPC_PORT,
    TESSERA_P2P_PORT,
    TESSERA_Q2T_PORT,
    TESSERA_THIRD_PARTY_PORT,
)
from domain.user_data import cloud_config_files
from tests.inspection import instance_user_data
from tools.offline import DeclaredResource, OfflineRun

SETUP_TYPES = {
    "pair": "quorum-ha:setups:PairHA",
    "full": "quorum-ha:setups:FullHA",
    "tessera": "quorum-ha:setups:TesseraHA",
}


def machines_by_role(setup: str, quorum: int, tessera: int) -> dict[str, int]:
    if setup == "pair":
        return {"pair": quorum}
    return {"quorum": quorum, "tessera": tessera}


def boot_env(instance: DeclaredResource) -> dict[str, str]:
    text = machine_files(instance)["/etc/quorum-ha/boot.env"]
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value.strip('"') for key, value in pairs}


def machine_files(instance: DeclaredResource) -> dict[str, str]:
    user_data = instance_user_data(instance.inputs)
    assert user_data is not None, instance.name
    return cloud_config_files(user_data)


def tessera_config(instance: DeclaredResource) -> dict[str, Any]:
    return json.loads(machine_files(instance)["/etc/quorum-ha/tessera/tessera-config.json"])


def server(config: dict[str, Any], app: str) -> dict[str, Any]:
    found = [s for s in config["serverConfigs"] if s["app"] == app]
    assert len(found) == 1, f"{len(found)} {app} servers"
    return found[0]


def instances_by_dns(run: OfflineRun) -> dict[str, DeclaredResource]:
    """DNS name -> the instance its A record points at."""
    by_ip = {i.state["privateIp"]: i for i in run.of_type("aws:ec2/instance:Instance")}
    return {
        r.inputs["name"]: by_ip[r.inputs["records"][0]]
        for r in run.of_type("aws:route53/record:Record")
    }


def proxy_config(run: OfflineRun) -> dict[str, Any]:
    (task,) = run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    (container,) = [
        c for c in json.loads(task.inputs["containerDefinitions"]) if c["name"] == "proxy"
    ]
    env = {e["name"]: e["value"] for e in container["environment"]}
    return json.loads(env["QUORUM_PROXY_CONFIG"])  # type: ignore[no-any-return]


def test_setup_declares_one_composite_of_its_kind(shaped_run: OfflineRun, shape: tuple) -> None:
    setup = shape[0]
    kinds = [r.type for r in shaped_run.resources if r.type.startswith("quorum-ha:setups:")]
    assert kinds == [SETUP_TYPES[setup]]


def test_machine_counts_follow_the_setup(shaped_run: OfflineRun, shape: tuple) -> None:
    expected = machines_by_role(*shape)
    total = sum(expected.values())
    counts = Counter(r.type for r in shaped_run.resources)
    roles = Counter(
        i.inputs["tags"]["quorum-ha/role"] for i in shaped_run.of_type("aws:ec2/instance:Instance")
    )
    assert dict(roles) == expected
    for type_ in (
        "aws:ec2/instance:Instance",
        "aws:ebs/volume:Volume",
        "aws:ec2/volumeAttachment:VolumeAttachment",
        "aws:route53/record:Record",
        "aws:iam/instanceProfile:InstanceProfile",
    ):
        assert counts[type_] == total, type_
    # One recover alarm per machine (monitoring's alarms: test_infra_monitoring.py).
    alarms = shaped_run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert sum(a.name.endswith("-recover") for a in alarms) == total
    quorum_nodes = shape[1]
    # Tessera Pub + Key, the account, the database, one devp2p key per Quorum node.
    assert counts["aws:secretsmanager/secret:Secret"] == 4 + quorum_nodes
    assert counts["aws:iam/role:Role"] == total + 2  # + proxy execution and task roles
    assert counts["quorum-ha:nodes:Nodes"] == len(expected)
    assert counts["aws:cloudwatch/logGroup:LogGroup"] == len(expected) + 1


def test_shared_pieces_are_declared_once(shaped_run: OfflineRun) -> None:
    counts = Counter(r.type for r in shaped_run.resources)
    assert counts["aws:kms/key:Key"] == 1
    assert counts["aws:rds/instance:Instance"] == 2  # primary + replica
    assert counts["aws:lb/loadBalancer:LoadBalancer"] == 1
    assert counts["aws:lb/listener:Listener"] == 3
    assert counts["aws:lb/targetGroup:TargetGroup"] == 3
    assert counts["aws:ecs/service:Service"] == 1
    assert counts["aws:route53/zone:Zone"] == 1
    assert counts["aws:ec2/vpc:Vpc"] == 1


def test_every_tessera_advertises_the_nlb_and_binds_its_own_address(
    shaped_run: OfflineRun,
) -> None:
    outputs = shaped_run.outputs
    tesseras = [
        i
        for i in shaped_run.of_type("aws:ec2/instance:Instance")
        if boot_env(i)["ROLE"] in ("pair", "tessera")
    ]
    assert tesseras
    for instance in tesseras:
        config = tessera_config(instance)
        for app, url, port in (
            ("P2P", outputs["p2pUrl"], TESSERA_P2P_PORT),
            ("ThirdParty", outputs["thirdPartyUrl"], TESSERA_THIRD_PARTY_PORT),
        ):
            entry = server(config, app)
            assert entry["serverAddress"] == url, instance.name
            binding = urlsplit(entry["bindingAddress"])
            assert binding.port == port and binding.hostname != outputs["nlbDnsName"]
        assert urlsplit(outputs["p2pUrl"]).hostname == outputs["nlbDnsName"]


def test_every_tessera_shares_one_key_pair_and_one_database(shaped_run: OfflineRun) -> None:
    secret_names = {
        s.inputs["name"] for s in shaped_run.of_type("aws:secretsmanager/secret:Secret")
    }
    primary, replica = (
        shaped_run.outputs["dbEndpoints"]["primary"],
        shaped_run.outputs["dbEndpoints"]["replica"],
    )
    configs = [
        tessera_config(i)
        for i in shaped_run.of_type("aws:ec2/instance:Instance")
        if boot_env(i)["ROLE"] in ("pair", "tessera")
    ]
    assert len({json.dumps(c["keys"], sort_keys=True) for c in configs}) == 1
    (key_data,) = configs[0]["keys"]["keyData"]
    assert key_data["awsSecretsManagerPublicKeyId"] in secret_names
    assert key_data["awsSecretsManagerPrivateKeyId"] in secret_names
    for config in configs:
        url = config["jdbc"]["url"]
        assert url == shaped_run.outputs["jdbcUrl"]
        assert f"//{primary}:5432,{replica}:5432/" in url
        assert "targetServerType=primary" in url
        assert "password" not in config["jdbc"]


def test_every_quorum_reaches_a_tessera(shaped_run: OfflineRun, shape: tuple) -> None:
    setup = shape[0]
    by_dns = instances_by_dns(shaped_run)
    tessera_names = (
        shaped_run.outputs["nodeDnsNames"].get("tessera")
        or shaped_run.outputs["nodeDnsNames"]["pair"]
    )
    for instance in shaped_run.of_type("aws:ec2/instance:Instance"):
        env = boot_env(instance)
        if env["ROLE"] == "tessera":
            continue
        files = machine_files(instance)
        if setup == "pair":
            # The pair's Tessera listens on the socket Quorum dials, on the same machine.
            q2t = server(tessera_config(instance), "Q2T")
            assert q2t["serverAddress"] == f"unix:{TM_IPC_PATH}"
            assert by_dns[env["NODE_DNS_NAME"]] is instance
            continue
        ipc = parse_config(yaml.safe_load(files["/etc/quorum-ha/proxy/config.yaml"]))
        (listener,) = ipc.listeners
        assert listener.listen == f"unix:{TM_IPC_PATH}"
        servers = ipc.upstreams[listener.routes[0].upstream].servers
        assert servers == tuple((name, TESSERA_Q2T_PORT) for name in tessera_names)
        for name in tessera_names:
            target = by_dns[name]
            q2t = server(tessera_config(target), "Q2T")
            assert urlsplit(q2t["bindingAddress"]).port == TESSERA_Q2T_PORT
        assert env["PROXY_IMAGE"] == shaped_run.outputs["proxyImageUri"]


def test_each_dns_name_points_at_the_machine_that_carries_it(shaped_run: OfflineRun) -> None:
    by_dns = instances_by_dns(shaped_run)
    expected = [n for names in shaped_run.outputs["nodeDnsNames"].values() for n in names]
    assert sorted(by_dns) == sorted(expected)
    for name, instance in by_dns.items():
        assert boot_env(instance)["NODE_DNS_NAME"] == name
        assert instance.inputs["tags"]["Name"] == name


def test_standalone_proxy_lists_every_node_and_keeps_one_rpc_primary(
    shaped_run: OfflineRun,
) -> None:
    names = shaped_run.outputs["nodeDnsNames"]
    quorum = names.get("quorum") or names["pair"]
    tessera = names.get("tessera") or names["pair"]
    config = parse_config(proxy_config(shaped_run))
    by_port = {int(lst.listen.rsplit(":", 1)[1]): lst for lst in config.listeners}
    assert sorted(by_port) == sorted((QUORUM_RPC_PORT, TESSERA_THIRD_PARTY_PORT, TESSERA_P2P_PORT))
    rpc = by_port[QUORUM_RPC_PORT]
    # jsonrpc = primary/backup in config order (not round robin): exactly one primary.
    assert rpc.protocol == "jsonrpc"
    assert config.upstreams[rpc.upstream or ""].servers == tuple(
        (n, QUORUM_RPC_PORT) for n in quorum
    )
    for port in (TESSERA_THIRD_PARTY_PORT, TESSERA_P2P_PORT):
        upstreams = {r.upstream for r in by_port[port].routes}
        for upstream in upstreams:
            assert config.upstreams[upstream].servers == tuple((n, port) for n in tessera)
    third_party = by_port[TESSERA_THIRD_PARTY_PORT].routes
    assert all("http_404" in r.retry_on and r.retry_non_idempotent for r in third_party)
    mirrored = [r for r in by_port[TESSERA_P2P_PORT].routes if r.mirror is not None]
    assert [r.prefix for r in mirrored] == ["/partyinfo"]


def test_standalone_proxy_deep_checks_each_tessera_for_the_stack_key(
    shaped_run: OfflineRun,
) -> None:
    config = parse_config(proxy_config(shaped_run))
    for name in ("third_party", "p2p"):
        check = config.upstreams[name].health_check
        assert check is not None and check.type == "tessera", name
        assert check.public_key == shaped_run.outputs["tesseraPublicKey"], name
        assert (check.third_party_port, check.p2p_port) == (
            TESSERA_THIRD_PARTY_PORT,
            TESSERA_P2P_PORT,
        )


def test_quorum_nodes_know_each_other_by_enode(shaped_run: OfflineRun) -> None:
    enodes = shaped_run.outputs["haEnodeDnsNames"]
    names = shaped_run.outputs["nodeDnsNames"]
    quorum = names.get("quorum") or names["pair"]
    assert [e.split("@")[1].split(":")[0] for e in enodes] == quorum
    assert len({e.split("@")[0] for e in enodes}) == len(enodes)  # unique node keys
    for instance in shaped_run.of_type("aws:ec2/instance:Instance"):
        files = machine_files(instance)
        if "/etc/quorum-ha/quorum/static-nodes.json" in files:
            static = json.loads(files["/etc/quorum-ha/quorum/static-nodes.json"])
            assert set(enodes) <= set(static), instance.name


def test_each_quorum_machine_reads_its_own_node_key(shaped_run: OfflineRun) -> None:
    node_keys = shaped_run.outputs["secretArns"]["quorumNodeKeys"]
    for instance in shaped_run.of_type("aws:ec2/instance:Instance"):
        env = boot_env(instance)
        if env["ROLE"] in ("pair", "quorum"):
            assert env["QUORUM_NODE_KEY_SECRET_ARN"] == node_keys[int(env["NODE_INDEX"])]


def test_stacks_whose_names_fold_alike_get_distinct_zones_and_role_paths(
    offline: Callable[..., OfflineRun],
) -> None:
    # Two stacks in one VPC (network: existing) may not share a private zone name, nor an IAM
    # path that the key's and secrets' path conditions would admit both stacks' roles under.
    seen: dict[tuple[str, ...], str] = {}
    for stack in ("dev", "Dev", "prod_eu", "prod-eu"):
        run = offline("pair", stack=stack)
        (zone,) = run.of_type("aws:route53/zone:Zone")
        paths = sorted({r.inputs["path"] for r in run.of_type("aws:iam/role:Role")})
        key = (zone.inputs["name"], *paths)
        assert key not in seen, f"{stack} and {seen.get(key)} share {key}"
        seen[key] = stack


# ------------------------------------------------------------------ TLS on the edge
TLS = {
    "certificateArn": (
        "arn:aws:acm:us-east-1:123456789012:certificate/0b1f8d2e-1234-4abc-8def-0123456789ab"
    ),
    "dnsName": "quorum.example.com",
    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
}


def test_with_tls_every_tessera_of_every_setup_advertises_the_https_p2p_url(
    offline: Callable[..., OfflineRun], shape: tuple
) -> None:
    run = offline(*shape, tls=TLS)
    outputs = run.outputs
    assert outputs["p2pUrl"] == f"https://quorum.example.com:{TESSERA_P2P_PORT}"
    # Only P2P by default: the other listeners keep their plain URL at the NLB's name.
    assert outputs["thirdPartyUrl"] == (
        f"http://{outputs['nlbDnsName']}:{TESSERA_THIRD_PARTY_PORT}"
    )
    assert outputs["rpcEndpoint"] == f"http://{outputs['nlbDnsName']}:{QUORUM_RPC_PORT}"
    tesseras = [
        i
        for i in run.of_type("aws:ec2/instance:Instance")
        if boot_env(i)["ROLE"] in ("pair", "tessera")
    ]
    assert len(tesseras) == (shape[1] if shape[0] == "pair" else shape[2])
    for instance in tesseras:
        config = tessera_config(instance)
        p2p = server(config, "P2P")
        assert p2p["serverAddress"] == outputs["p2pUrl"], instance.name
        # The NLB terminates TLS: Tessera binds plain HTTP, and its P2P client (no sslConfig,
        # so tls OFF) reaches https peers through the JVM's default trust store.
        assert urlsplit(p2p["bindingAddress"]).scheme == "http"
        assert "sslConfig" not in p2p
        assert server(config, "ThirdParty")["serverAddress"] == outputs["thirdPartyUrl"]


def test_with_tls_on_every_listener_every_url_is_https_at_the_certificates_name(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full", 2, 2, tls={**TLS, "listeners": [9001, 9081, 22000]})
    assert {k: run.outputs[k] for k in ("p2pUrl", "thirdPartyUrl", "rpcEndpoint")} == {
        "p2pUrl": "https://quorum.example.com:9001",
        "thirdPartyUrl": "https://quorum.example.com:9081",
        "rpcEndpoint": "https://quorum.example.com:22000",
    }
    for instance in run.of_type("aws:ec2/instance:Instance"):
        if boot_env(instance)["ROLE"] == "tessera":
            config = tessera_config(instance)
            assert server(config, "ThirdParty")["serverAddress"] == run.outputs["thirdPartyUrl"]


def test_without_tls_nothing_changes_for_other_stacks(offline: Callable[..., OfflineRun]) -> None:
    outputs = offline("pair", 2, 2).outputs
    nlb = outputs["nlbDnsName"]
    assert (outputs["p2pUrl"], outputs["thirdPartyUrl"], outputs["rpcEndpoint"]) == (
        f"http://{nlb}:9001",
        f"http://{nlb}:9081",
        f"http://{nlb}:22000",
    )
