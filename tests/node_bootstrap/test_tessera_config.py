"""render_tessera_config and validate_tessera_config (mirrors node_bootstrap/tessera.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from boot_fixtures import CASES, NLB, Case, make_context, replace

from domain.paths import TM_IPC_PATH
from node_bootstrap import (
    NodeBootContext,
    TesseraConfigError,
    render_tessera_config,
    validate_tessera_config,
)

TESSERA_CASES = [c for c in CASES if c.role in ("pair", "tessera")]


@pytest.fixture(params=TESSERA_CASES, ids=[c.id for c in TESSERA_CASES])
def tessera_ctx(request: pytest.FixtureRequest) -> NodeBootContext:
    return make_context(request.param)


def rendered(ctx: NodeBootContext) -> dict[str, Any]:
    cfg = json.loads(render_tessera_config(ctx))
    assert isinstance(cfg, dict)
    return cfg


def server(cfg: dict[str, Any], app: str) -> dict[str, Any]:
    matches = [s for s in cfg["serverConfigs"] if s["app"] == app]
    assert len(matches) == 1, app
    return matches[0]


def test_every_rendered_config_passes_tesseras_rules(tessera_ctx: NodeBootContext) -> None:
    text = render_tessera_config(tessera_ctx)
    validate_tessera_config(text)
    validate_tessera_config(json.loads(text))


def test_p2p_and_third_party_advertise_the_nlb_and_bind_on_the_machine(
    tessera_ctx: NodeBootContext,
) -> None:
    cfg = rendered(tessera_ctx)
    p2p, third_party = server(cfg, "P2P"), server(cfg, "ThirdParty")
    assert p2p["serverAddress"] == f"http://{NLB}:9001"
    assert third_party["serverAddress"] == f"http://{NLB}:9081"
    assert p2p["bindingAddress"] == "http://0.0.0.0:9001"
    assert third_party["bindingAddress"] == "http://0.0.0.0:9081"


def test_an_https_p2p_url_is_advertised_while_tessera_serves_and_calls_plainly(
    tessera_ctx: NodeBootContext,
) -> None:
    # TLS at the NLB: Tessera advertises https, binds http, and renders no sslConfig, so its
    # P2P client is Jersey's default (tls OFF) and reaches https peers through the JVM's trust
    # store (Tessera ClientFactory.buildFrom: sslContext only when ServerConfig.isSsl()).
    ctx = replace(tessera_ctx, p2p_url="https://quorum.example.com:9001")
    cfg = rendered(ctx)
    p2p = server(cfg, "P2P")
    assert p2p["serverAddress"] == "https://quorum.example.com:9001"
    assert p2p["bindingAddress"] == "http://0.0.0.0:9001"
    assert all("sslConfig" not in s for s in cfg["serverConfigs"])
    validate_tessera_config(cfg)


def test_an_explicit_tls_off_is_accepted() -> None:
    cfg = rendered(make_context(Case("full", 2, "tessera", 0)))
    server(cfg, "P2P")["sslConfig"] = {"tls": "OFF"}
    validate_tessera_config(cfg)


def test_pair_serves_q2t_on_the_unix_socket() -> None:
    ctx = make_context(Case("pair", 2, "pair", 1))
    q2t = server(rendered(ctx), "Q2T")
    assert q2t["serverAddress"] == f"unix:{TM_IPC_PATH}"
    assert "bindingAddress" not in q2t


@pytest.mark.parametrize("setup", ["full", "tessera"])
def test_tessera_machines_serve_q2t_over_http_for_the_ipc_proxy(setup: str) -> None:
    ctx = make_context(Case(setup, 3, "tessera", 2))
    q2t = server(rendered(ctx), "Q2T")
    assert q2t["serverAddress"] == f"http://{ctx.node_dns_name}:9101"
    assert urlsplit(q2t["bindingAddress"]).port == 9101


def test_keys_come_from_the_aws_vault_by_name(tessera_ctx: NodeBootContext) -> None:
    keys = rendered(tessera_ctx)["keys"]
    assert keys["keyVaultConfigs"] == [
        {
            "keyVaultType": "AWS",
            "properties": {"endpoint": "https://secretsmanager.eu-west-1.amazonaws.com"},
        }
    ]
    assert keys["keyData"] == [
        {
            "awsSecretsManagerPublicKeyId": "quorum-ha/tesseraPub",
            "awsSecretsManagerPrivateKeyId": "quorum-ha/tesseraKey",
        }
    ]
    assert "passwords" not in keys


def test_jdbc_names_both_databases_and_holds_no_credentials(tessera_ctx: NodeBootContext) -> None:
    jdbc = rendered(tessera_ctx)["jdbc"]
    assert jdbc["url"] == tessera_ctx.jdbc_url
    assert "tessera-db-replica" in jdbc["url"]
    assert "password" not in jdbc
    assert "username" not in jdbc
    assert jdbc["autoCreateTables"] is False


def test_the_white_list_is_off_and_only_the_network_peers_are_listed(
    tessera_ctx: NodeBootContext,
) -> None:
    # Off: behind the NLB every caller is a proxy task without a fixed address (the settings
    # refuse quorum-ha:useWhiteList true: tests/test_main.py).
    cfg = rendered(tessera_ctx)
    assert cfg["useWhiteList"] is False
    assert cfg["peer"] == [{"url": "http://tessera.partner-a.example.net:9001"}]


def test_quorum_machines_get_no_tessera_config() -> None:
    with pytest.raises(TesseraConfigError, match="role: 'quorum'"):
        render_tessera_config(make_context(Case("full", 2, "quorum", 0)))


@dataclass(frozen=True)
class Broken:
    name: str
    breaks: Callable[[dict[str, Any]], None]
    fragments: tuple[str, ...]  # each must appear in the error message


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return apply


def _drop_app(app: str) -> Callable[[dict[str, Any]], None]:
    def apply(cfg: dict[str, Any]) -> None:
        cfg["serverConfigs"] = [s for s in cfg["serverConfigs"] if s["app"] != app]

    return apply


def _second_p2p(cfg: dict[str, Any]) -> None:
    p2p = next(s for s in cfg["serverConfigs"] if s["app"] == "P2P")
    cfg["serverConfigs"].append(dict(p2p))


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return apply


# serverConfigs order in the rendered file: [0] ThirdParty, [1] Q2T, [2] P2P.
BROKEN = [
    Broken("no P2P", _drop_app("P2P"), ("exactly one P2P",)),
    Broken("two P2P", _second_p2p, ("exactly one P2P",)),
    Broken("no Q2T", _drop_app("Q2T"), ("at least one Q2T",)),
    Broken(
        "unknown app", _set("serverConfigs.0.app", "Admin"), ("serverConfigs[0].app: 'Admin'",)
    ),
    Broken(
        "serverAddress 0.0.0.0",
        _set("serverConfigs.2.serverAddress", "http://0.0.0.0:9001"),
        ("serverConfigs[2].serverAddress: 'http://0.0.0.0:9001'", "cannot be 0.0.0.0"),
    ),
    Broken(
        "http serverAddress without port",
        _set("serverConfigs.2.serverAddress", f"http://{NLB}"),
        ("serverConfigs[2].serverAddress", "needs a host and a port"),
    ),
    Broken(
        "bindingAddress without port",
        _set("serverConfigs.0.bindingAddress", "http://0.0.0.0"),
        ("serverConfigs[0].bindingAddress: 'http://0.0.0.0'", "port"),
    ),
    Broken(
        "unix bindingAddress",
        _set("serverConfigs.0.bindingAddress", "unix:/tmp/x.ipc"),
        ("serverConfigs[0].bindingAddress", "scheme must be http | https"),
    ),
    Broken(
        "missing serverAddress",
        _delete("serverConfigs.2.serverAddress"),
        ("serverConfigs[2].serverAddress: None", "required"),
    ),
    Broken(
        "passwords in file",
        _set("keys.passwords", ["hunter2"]),
        ("keys.passwords", "must be empty"),
    ),
    Broken(
        "docs' keyVaultConfigType spelling",
        _set("keys.keyVaultConfigs.0.keyVaultConfigType", "AWS"),
        ("keyVaultConfigType", "Tessera reads keyVaultType"),
    ),
    Broken(
        "non-AWS vault",
        _set("keys.keyVaultConfigs.0.keyVaultType", "HASHICORP"),
        ("keys.keyVaultConfigs: ['HASHICORP']", "keyVaultType AWS"),
    ),
    Broken(
        "vault endpoint without scheme",
        _set(
            "keys.keyVaultConfigs.0.properties.endpoint", "secretsmanager.eu-west-1.amazonaws.com"
        ),
        ("properties.endpoint", "with its scheme"),
    ),
    Broken(
        "missing private key id",
        _delete("keys.keyData.0.awsSecretsManagerPrivateKeyId"),
        ("keys.keyData[0].awsSecretsManagerPrivateKeyId: None",),
    ),
    Broken("no jdbc url", _delete("jdbc.url"), ("jdbc.url: None", "JDBC URL is required")),
    Broken(
        "jdbc password in file",
        _set("jdbc.password", "hunter2"),
        ("jdbc.password", "merges it into a tmpfs copy at start"),
    ),
    Broken("useWhiteList not bool", _set("useWhiteList", "yes"), ("useWhiteList: 'yes'",)),
    Broken("peer without port", _set("peer.0.url", "http://peer.example"), ("peer[0].url",)),
    # STRICT would make Tessera's P2P server speak TLS to the proxy (plain HTTP behind the
    # NLB) and its P2P client trust only the configured stores instead of the JVM's.
    Broken(
        "P2P sslConfig STRICT",
        _set("serverConfigs.2.sslConfig", {"tls": "STRICT", "clientTrustMode": "CA"}),
        ("serverConfigs[2].sslConfig.tls: 'STRICT'", "the NLB terminates TLS"),
    ),
    Broken(
        "sslConfig without tls",
        _set("serverConfigs.0.sslConfig", {"clientTrustMode": "CA"}),
        ("serverConfigs[0].sslConfig.tls: None", "OFF"),
    ),
]


@pytest.mark.parametrize("broken", BROKEN, ids=[b.name for b in BROKEN])
def test_validator_rejects_a_hand_broken_config(broken: Broken) -> None:
    cfg = copy.deepcopy(rendered(make_context(Case("full", 2, "tessera", 0))))
    assert [s["app"] for s in cfg["serverConfigs"]] == ["ThirdParty", "Q2T", "P2P"]
    broken.breaks(cfg)
    with pytest.raises(TesseraConfigError) as err:
        validate_tessera_config(cfg)
    message = str(err.value)
    for fragment in broken.fragments:
        assert fragment in message, message
    assert "hunter2" not in message


def test_validator_rejects_text_that_is_not_json() -> None:
    with pytest.raises(TesseraConfigError, match="not JSON"):
        validate_tessera_config("{serverConfigs: [")


def test_every_case_is_covered() -> None:
    # Guard: the table above must not silently shrink to nothing.
    assert len(TESSERA_CASES) == 15  # 2+2+2 machines at N=2, 3+3+3 at N=3
    assert len(BROKEN) >= 15
