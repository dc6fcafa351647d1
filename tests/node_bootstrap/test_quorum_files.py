"""render_quorum_files (node_bootstrap/quorum.py), and start-quorum.sh run against stubs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from boot_fixtures import CASES, GENESIS, SECRETS, Case, arn, make_context, replace
from script_harness import flags, run_script

from node_bootstrap import BootContextError, NodeBootContext, render_quorum_files

QUORUM_CASES = [c for c in CASES if c.role in ("pair", "quorum")]

# Every RPC namespace GoQuorum v24.4.1 registers (git grep 'Namespace: "' at tag v24.4.1 of
# github.com/Consensys/quorum, non-test files). There is no "quorum" namespace: geth logs
# "Unavailable modules in HTTP API list" (node/rpcstack.go) and serves without it.
GOQUORUM_24_4_1_NAMESPACES = {
    "account", "admin", "clique", "consensus", "debug", "eth", "ethash", "istanbul", "les",
    "miner", "net", "personal", "qlight", "quorumExtension", "quorumPermission", "raft",
    "simulation", "txpool", "vflux", "web3",
}  # fmt: skip


@pytest.fixture(params=QUORUM_CASES, ids=[c.id for c in QUORUM_CASES])
def quorum_ctx(request: pytest.FixtureRequest) -> NodeBootContext:
    return make_context(request.param)


def test_genesis_is_the_networks(quorum_ctx: NodeBootContext) -> None:
    assert json.loads(render_quorum_files(quorum_ctx)["genesis.json"]) == GENESIS


def test_static_and_permissioned_nodes_hold_both_ha_enodes_then_the_network(
    quorum_ctx: NodeBootContext,
) -> None:
    files = render_quorum_files(quorum_ctx)
    expected = [*quorum_ctx.ha_enodes, *quorum_ctx.peer_enodes]
    assert json.loads(files["static-nodes.json"]) == expected
    assert json.loads(files["permissioned-nodes.json"]) == expected
    assert len(quorum_ctx.ha_enodes) >= 1


def test_an_enode_listed_twice_appears_once() -> None:
    ctx = make_context(Case("full", 2, "quorum", 0))
    ctx = replace(ctx, peer_enodes=(ctx.ha_enodes[1], *ctx.peer_enodes))
    nodes = json.loads(render_quorum_files(ctx)["static-nodes.json"])
    assert len(nodes) == len(set(nodes)) == 4


def test_without_permissioning_there_is_no_permissioned_nodes_file() -> None:
    ctx = replace(make_context(Case("full", 2, "quorum", 0)), permissioned=False)
    assert "permissioned-nodes.json" not in render_quorum_files(ctx)


def test_tessera_machines_get_no_quorum_files() -> None:
    with pytest.raises(BootContextError, match="role: 'tessera'"):
        render_quorum_files(make_context(Case("full", 2, "tessera", 0)))


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("genesis_json", "{not json", "genesis_json"),
        ("genesis_json", "[]", 'JSON object with "config"'),
        ("genesis_json", '{"config": {"chainId": 1}}', '"config.isQuorum": true'),
        ("ha_enodes", ("enode://abc@host:30303",), "ha_enodes"),
        ("network_id", 0, "network_id: 0"),
        ("quorum_node_key_secret_arn", "my-node-key", "quorum_node_key_secret_arn"),
    ],
)
def test_bad_context_is_refused_naming_the_field(field: str, value: object, fragment: str) -> None:
    ctx = replace(make_context(Case("full", 2, "quorum", 0)), **{field: value})
    with pytest.raises(BootContextError, match=fragment):
        render_quorum_files(ctx)


@pytest.mark.parametrize("case", [Case("pair", 2, "pair", 1), Case("tessera", 2, "quorum", 0)])
def test_start_script_fetches_secrets_waits_for_ptm_then_runs_geth(
    case: Case, tmp_path: Path
) -> None:
    ctx = make_context(case)
    run = run_script(ctx, "start-quorum.sh", tmp_path)
    assert run.returncode == 0, run.stderr

    secrets = run.moved("/run/quorum-ha/secrets")
    account = json.loads(SECRETS[arn("quorum-ha/quorum-account")])
    node_key = SECRETS[arn(f"quorum-ha/quorum-node-key-{case.index}")]
    assert (secrets / "nodekey").read_text() == node_key
    assert (secrets / "account-password").read_text() == account["password"]
    assert json.loads((secrets / "keystore" / "account.json").read_text()) == account["keystore"]
    for secret in ("nodekey", "account-password", "keystore/account.json"):
        assert stat.S_IMODE((secrets / secret).stat().st_mode) == 0o600, secret

    ipc = str(run.moved("/run/quorum-ha/tm.ipc"))
    asked = [argv[-1] for argv in run.called("curl")]
    assert asked == ["http://localhost/upcheck", "http://localhost/version"]
    assert all(argv[argv.index("--unix-socket") + 1] == ipc for argv in run.called("curl"))

    docker_runs = [argv for argv in run.called("docker") if argv[0] == "run"]
    init, geth = docker_runs
    image = "quorumengineering/quorum:24.4.1"
    assert init[init.index(image) + 1 :][:1] == ["init"]
    options, geth_argv = geth[: geth.index(image)], geth[geth.index(image) + 1 :]
    assert options[options.index("--log-driver") + 1] == "awslogs"
    assert options[options.index("--network") + 1] == "host"
    got = flags(geth_argv)
    assert got["--ptm.socket"] == ipc
    # Without them the unix transport waits for Tessera's answer forever; GoQuorum's own
    # defaults (common/http/config.go at v24.4.1: Timeout 5, DialTimeout 1), set explicitly.
    assert (got["--ptm.timeout"], got["--ptm.dialtimeout"]) == ("5", "1")
    for api in ("--http.api", "--ws.api"):
        modules = str(got[api]).split(",")
        assert set(modules) <= GOQUORUM_24_4_1_NAMESPACES, (api, modules)
        assert {"eth", "net", "web3", "istanbul"} <= set(modules), (api, modules)
    assert (got["--http"], got["--http.addr"], got["--http.port"]) == (True, "0.0.0.0", "22000")
    assert (got["--ws"], got["--ws.port"]) == (True, "8546")
    assert got["--networkid"] == "1337"
    assert got["--nodekey"] == str(secrets / "nodekey")
    assert got["--unlock"] == "0x" + account["keystore"]["address"]
    assert got["--password"] == str(secrets / "account-password")
    assert got["--allow-insecure-unlock"] is True
    assert got["--permissioned"] is True
    assert got["--metrics"] is True
    assert got["--syncmode"] == "full"
    # A non-validator HA node: it never seals blocks.
    assert "--mine" not in got
    assert all(secret not in json.dumps(run.calls) for secret in (node_key, account["password"]))


def test_geth_is_not_started_while_the_ptm_does_not_answer_200(tmp_path: Path) -> None:
    ctx = make_context(Case("full", 2, "quorum", 0))
    run = run_script(
        ctx,
        "start-quorum.sh",
        tmp_path,
        env_overrides={"PTM_WAIT_SECONDS": "0"},
        stub_env={"STUB_HTTP_CODE": "503"},
    )
    assert run.returncode != 0
    assert "no 200 from" in run.stderr
    geth_runs = [a for a in run.called("docker") if a[0] == "run" and "init" not in a]
    assert geth_runs == []


def test_without_permissioning_geth_is_not_permissioned(tmp_path: Path) -> None:
    ctx = replace(make_context(Case("full", 2, "quorum", 1)), permissioned=False)
    run = run_script(ctx, "start-quorum.sh", tmp_path)
    assert run.returncode == 0, run.stderr
    geth = [a for a in run.called("docker") if a[0] == "run" and "init" not in a][-1]
    assert "--permissioned" not in geth
