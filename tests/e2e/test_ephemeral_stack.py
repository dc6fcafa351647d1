"""The ephemeral stack test: a real `pulumi up` of the dev config in your AWS account, checked
from the outside, then destroyed.

    pulumi login 's3://<bucket>?region=<region>&awssdk=v2'   # the team's backend (README)
    QUORUM_HA_E2E=1 .venv/bin/python -m pytest -m e2e tests/e2e -s

Needs the Pulumi CLI, AWS credentials (boto3's chain: env, profile, SSO or role) and, unless
QUORUM_HA_E2E_PROXY_IMAGE names a prebuilt proxy image, Docker to build the proxy image. It
creates billable resources (NAT gateways, RDS Multi-AZ with a replica, EC2, NLB, Fargate) for
about 30-45 minutes, plus up to 45 for the failure drill (typically 20: each alarm waits
for its metric); `destroy` and stack removal run even when a check fails. The stack is named
by QUORUM_HA_E2E_STACK when set (CI names it per run, so its cleanup job can destroy what a
cancelled test left), else e2e-<random>. PULUMI_CONFIG_PASSPHRASE, when unset, gets a throwaway
value (then only this process could destroy the stack).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from domain.naming import stack_name_prefix
from domain.ports import TESSERA_Q2T_PORT
from node_bootstrap.proxy import standalone_proxy_config
from node_bootstrap.user_data import QUORUM_UNIT, TESSERA_UNIT
from tools import e2e_checks as checks
from tools.offline import ROOT, load_stack_config

pytestmark = pytest.mark.e2e

P2P_PORT = 9001


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, Any]]:
    """`pulumi up` of a uniquely named copy of the dev stack; destroyed and removed after."""
    reason = checks.e2e_skip_reason(
        os.environ,
        shutil.which("pulumi"),
        boto3.Session().get_credentials(),
        shutil.which("docker"),
    )
    if reason:
        pytest.skip(reason)
    from pulumi import automation as auto

    config = checks.ephemeral_config(
        load_stack_config("dev"), proxy_image=os.environ.get("QUORUM_HA_E2E_PROXY_IMAGE")
    )
    name = checks.ephemeral_stack_name(os.environ)
    env = {}
    if not {"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"} & set(os.environ):
        # A throwaway stack needs a throwaway passphrase (only used by self-managed backends).
        env["PULUMI_CONFIG_PASSPHRASE"] = secrets.token_hex(16)
    stack = auto.create_stack(
        name, work_dir=str(ROOT), opts=auto.LocalWorkspaceOptions(env_vars=env)
    )
    try:
        stack.set_all_config({k: auto.ConfigValue(v) for k, v in config.items()})
        result = stack.up(on_output=print, color="never")
        yield {
            "stack": name,
            "region": config.get("aws:region", "us-east-1"),
            "outputs": {k: v.value for k, v in result.outputs.items()},
        }
    finally:
        try:
            stack.destroy(on_output=print, color="never")
        finally:
            stack.workspace.remove_stack(name)
            (ROOT / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def machines(deployed: dict[str, Any]) -> dict[str, checks.SsmShell]:
    """A shell on every machine, by DNS name (through SSM: the NLB is internal)."""
    names = [n for group in deployed["outputs"]["nodeDnsNames"].values() for n in group]
    ec2 = boto3.client("ec2", region_name=deployed["region"])
    ssm = boto3.client("ssm", region_name=deployed["region"])
    return {
        name: checks.SsmShell(ssm, instance)
        for name, instance in checks.instances_by_name(ec2, names).items()
    }


def tessera_names(deployed: dict[str, Any]) -> list[str]:
    dns = deployed["outputs"]["nodeDnsNames"]
    return list(dns.get("tessera") or dns.get("pair") or [])


def quorum_names(deployed: dict[str, Any]) -> list[str]:
    dns = deployed["outputs"]["nodeDnsNames"]
    return list(dns.get("quorum") or dns.get("pair") or [])


def test_every_nlb_target_turns_healthy(deployed: dict[str, Any]) -> None:
    elbv2 = boto3.client("elbv2", region_name=deployed["region"])
    lb = checks.load_balancer_arn(elbv2, deployed["outputs"]["nlbDnsName"])
    states = checks.wait_for_healthy_targets(elbv2, lb)
    assert len(states) == 3  # 22000, 9081, 9001
    assert all(t.state == "healthy" for ts in states.values() for t in ts)


def test_json_rpc_answers_through_22000(
    deployed: dict[str, Any], machines: dict[str, checks.SsmShell]
) -> None:
    sender = machines[tessera_names(deployed)[0]]
    # geth opens 22000 only once Tessera answers on tm.ipc: poll, bounded.
    assert checks.wait_for_rpc_block_number(sender, deployed["outputs"]["rpcEndpoint"]) >= 0


def test_tessera_upcheck_answers_through_9081(
    deployed: dict[str, Any], machines: dict[str, checks.SsmShell]
) -> None:
    sender = machines[tessera_names(deployed)[0]]
    checks.upcheck(sender, deployed["outputs"]["thirdPartyUrl"])


def test_a_partyinfo_post_reaches_every_tessera(
    deployed: dict[str, Any], machines: dict[str, checks.SsmShell]
) -> None:
    names = tessera_names(deployed)
    assert len(names) >= 2
    probes = {n: checks.TesseraProbe(machines[n], f"http://{n}:{P2P_PORT}") for n in names}
    seen = checks.partyinfo_reaches_every_tessera(
        machines[names[0]], deployed["outputs"]["p2pUrl"], probes
    )
    assert set(seen) == set(names)


def test_a_private_payload_stored_through_one_quorum_is_read_through_another(
    deployed: dict[str, Any], machines: dict[str, checks.SsmShell]
) -> None:
    """The private path without blocks: shared key, shared database, JDBC driver, Q2T paths."""
    quorums = quorum_names(deployed)
    writer = checks.Q2TEndpoint(machines[quorums[0]])
    readers = {name: checks.Q2TEndpoint(machines[name]) for name in quorums[1:]}
    if not readers:
        # Setup 3 has one Quorum machine: read back on every Tessera machine's own Q2T port
        # instead, which proves the shared key and database on each, and the writer's IPC proxy.
        readers = {
            name: checks.Q2TEndpoint(
                machines[name], base_url=f"http://localhost:{TESSERA_Q2T_PORT}", unix_socket=None
            )
            for name in tessera_names(deployed)
        }
    key = checks.private_payload_round_trip(
        writer, readers, deployed["outputs"]["tesseraPublicKey"]
    )
    assert key


def proxy_config(deployed: dict[str, Any]) -> dict[str, Any]:
    """The standalone proxy's config as the stack renders it: the alarms' labels and the order
    of the RPC servers (the first healthy one is primary)."""
    return standalone_proxy_config(
        quorum_dns_names=quorum_names(deployed),
        tessera_dns_names=tessera_names(deployed),
        tessera_public_key=deployed["outputs"]["tesseraPublicKey"],
    )


def test_failure_drill_one_tessera_then_the_primary_quorum(
    deployed: dict[str, Any], machines: dict[str, checks.SsmShell]
) -> None:
    """Stop one Tessera, then the primary Quorum, through SSM: the three endpoints keep
    answering, each matching alarm reaches ALARM within its evaluation window (+ margin), the
    unit is started again and the alarm returns to OK."""
    # The alarms' metric catalog (issue 12); imported here so the offline suite never needs it.
    from domain import metrics as m

    outputs = deployed["outputs"]
    config = proxy_config(deployed)
    primary = checks.primary_quorum(config)
    tesseras = tessera_names(deployed)
    # A Tessera off the primary Quorum's machine: in setup pair that Tessera is geth's own.
    tessera = next((n for n in tesseras if n != primary), tesseras[-1])
    names = list(machines)

    def client_off(host: str) -> checks.SsmShell:
        """Watch the endpoints from another machine than the one that loses a process."""
        return machines[next((n for n in names if n != host), host)]

    def server_down(upstream: str, server: str) -> checks.AlarmMatch:
        return checks.AlarmMatch(
            m.PROXY_UPSTREAM_HEALTHY.key, {"upstream": upstream, "server": server}
        )

    rpc = checks.rpc_upstream(config)
    # Only the Tessera upstreams: in setup pair the machine's geth keeps running and answering.
    on_tessera = [(u, s) for u, s in checks.upstream_servers_on(config, tessera) if u != rpc]
    tessera_alarms = [server_down(u, s) for u, s in on_tessera] + [
        checks.AlarmMatch(m.TESSERA_DEEP_CHECK.key, {"upstream": u, "server": s})
        for u, s in on_tessera
        if u == m.TESSERA_DEEP_CHECK_UPSTREAM
    ]
    quorum_alarms = [
        server_down(u, s) for u, s in checks.upstream_servers_on(config, primary) if u == rpc
    ] + [checks.AlarmMatch(m.QUORUM_CHAIN_HEAD.key, {m.NODE_LABEL: primary})]
    # The NLB's targets are the proxy tasks: with a spare left they stay healthy, so neither
    # "degraded" nor "down" of any target group may fire (clients see nothing).
    target_groups = [
        checks.AlarmMatch(m.NLB_UNHEALTHY_HOSTS.key),
        checks.AlarmMatch(m.NLB_HEALTHY_HOSTS.key),
    ]
    steps = [
        (
            tessera,
            checks.DrillStep(
                f"Tessera on {tessera}",
                machines[tessera],
                TESSERA_UNIT,
                tessera_alarms,
                target_groups,
            ),
        )
    ]
    if len(config["upstreams"][rpc]["servers"]) > 1:
        steps.append(
            (
                primary,
                checks.DrillStep(
                    f"primary Quorum {primary}",
                    machines[primary],
                    QUORUM_UNIT,
                    quorum_alarms,
                    target_groups,
                ),
            )
        )
    else:  # setup tessera has one Quorum machine: no spare to fail over to, nothing to drill
        print(f"primary Quorum {primary}: not drilled, the only Quorum of this setup")
    cloudwatch = boto3.client("cloudwatch", region_name=deployed["region"])
    endpoints = checks.Endpoints(
        outputs["rpcEndpoint"], outputs["thirdPartyUrl"], outputs["p2pUrl"]
    )
    for host, step in steps:
        result = checks.failure_drill(
            step,
            cloudwatch=cloudwatch,
            alarm_prefix=f"{stack_name_prefix(deployed['stack'])}: ",
            client=client_off(host),
            endpoints=endpoints,
        )
        print(
            f"{step.name}: ALARM after {result.to_alarm}, OK after {result.to_ok}, "
            f"{sum(result.answers.asked.values())} answers, none failed; "
            f"not firing: {sorted(result.calm)}"
        )
        assert len(result.to_alarm) == len(result.to_ok) == len(step.alarms)
