"""render_ipc_proxy_config and render_standalone_proxy_config (node_bootstrap/proxy.py).

Both outputs are loaded the way the proxy loads them and validated by the proxy's own
quorum_proxy.config.parse_config, then checked for the seed's wiring.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from boot_fixtures import CASES, Case, make_context
from quorum_proxy.config import SERVER_PORT, ConfigError, parse_config

from domain.paths import TM_IPC_PATH
from node_bootstrap import (
    BootContextError,
    NodeBootContext,
    render_ipc_proxy_config,
    render_standalone_proxy_config,
)
from node_bootstrap.proxy import standalone_proxy_config

PROXY_CASES = [c for c in CASES if c.role == "quorum"]


@pytest.fixture(params=PROXY_CASES, ids=[c.id for c in PROXY_CASES])
def quorum_ctx(request: pytest.FixtureRequest) -> NodeBootContext:
    return make_context(request.param)


def ipc_config(ctx: NodeBootContext) -> dict[str, Any]:
    data = yaml.safe_load(render_ipc_proxy_config(ctx))
    assert isinstance(data, dict)
    return data


def test_ipc_proxy_config_is_accepted_by_the_proxy(quorum_ctx: NodeBootContext) -> None:
    config = parse_config(ipc_config(quorum_ctx))
    (listener,) = config.listeners
    assert listener.unix_path == TM_IPC_PATH
    assert listener.socket_mode == 0o660
    assert config.admin_listen == "127.0.0.1:9900"


def test_ipc_proxy_sends_q2t_to_every_tessera(quorum_ctx: NodeBootContext) -> None:
    config = parse_config(ipc_config(quorum_ctx))
    expected = tuple((name, 9101) for name in quorum_ctx.tessera_dns_names)
    assert config.upstreams["q2t"].servers == expected
    health = config.upstreams["q2t"].health_check
    assert health is not None
    # the deep check on the only Tessera port a Quorum machine reaches (components/network.py)
    assert (health.type, health.q2t_port) == ("tessera", SERVER_PORT)  # each server's: 9101
    assert (health.third_party_port, health.p2p_port, health.public_key) == (None, None, None)


def test_ipc_proxy_retries_post_on_error_timeout_and_404(quorum_ctx: NodeBootContext) -> None:
    (listener,) = parse_config(ipc_config(quorum_ctx)).listeners
    (route,) = listener.routes
    assert route.prefix == "/"
    assert set(route.retry_on) == {"error", "timeout", "http_404"}
    assert route.retry_non_idempotent is True
    assert route.mirror is None


@pytest.mark.parametrize("case", [Case("pair", 2, "pair", 0), Case("full", 3, "tessera", 1)])
def test_ipc_proxy_is_only_for_quorum_machines_of_full_and_tessera(case: Case) -> None:
    with pytest.raises(BootContextError, match="role"):
        render_ipc_proxy_config(make_context(case))


TESSERA_KEY = base64.b64encode(bytes(range(32))).decode()


def standalone(
    quorum: tuple[str, ...], tessera: tuple[str, ...], key: str | None = TESSERA_KEY
) -> dict[str, Any]:
    text = render_standalone_proxy_config(
        quorum_dns_names=quorum, tessera_dns_names=tessera, tessera_public_key=key
    )
    data = json.loads(text)
    assert isinstance(data, dict)
    # The ECS task passes the JSON through QUORUM_PROXY_CONFIG, which the proxy reads as YAML.
    assert yaml.safe_load(text) == data
    return data


STACKS = [
    (("pair-0.z", "pair-1.z"), ("pair-0.z", "pair-1.z")),
    (("quorum-0.z", "quorum-1.z", "quorum-2.z"), ("tessera-0.z", "tessera-1.z", "tessera-2.z")),
    (("quorum-0.z",), ("tessera-0.z", "tessera-1.z")),
]


@pytest.mark.parametrize(("quorum", "tessera"), STACKS)
def test_standalone_config_is_accepted_by_the_proxy(
    quorum: tuple[str, ...], tessera: tuple[str, ...]
) -> None:
    config = parse_config(standalone(quorum, tessera))
    assert config.admin_listen == "0.0.0.0:9900"
    assert {listener.listen for listener in config.listeners} == {
        "0.0.0.0:22000",
        "0.0.0.0:9081",
        "0.0.0.0:9001",
    }


@pytest.mark.parametrize(("quorum", "tessera"), STACKS)
def test_rpc_is_jsonrpc_with_the_first_quorum_primary(
    quorum: tuple[str, ...], tessera: tuple[str, ...]
) -> None:
    config = parse_config(standalone(quorum, tessera))
    rpc = next(lst for lst in config.listeners if lst.name == "quorum-rpc")
    assert (rpc.protocol, rpc.upstream) == ("jsonrpc", "quorum")
    upstream = config.upstreams["quorum"]
    # jsonrpc listeners use the first healthy server as primary: keep the given order.
    assert upstream.servers == tuple((name, 22000) for name in quorum)
    assert upstream.health_check is not None
    assert upstream.health_check.type == "jsonrpc"


@pytest.mark.parametrize(("quorum", "tessera"), STACKS)
def test_third_party_retries_404_for_post_over_every_tessera(
    quorum: tuple[str, ...], tessera: tuple[str, ...]
) -> None:
    config = parse_config(standalone(quorum, tessera))
    listener = next(lst for lst in config.listeners if lst.listen.endswith(":9081"))
    (route,) = listener.routes
    assert route.upstream == "third_party"
    assert set(route.retry_on) == {"error", "timeout", "http_404"}
    assert route.retry_non_idempotent is True
    assert config.upstreams["third_party"].servers == tuple((t, 9081) for t in tessera)


@pytest.mark.parametrize(("quorum", "tessera"), STACKS)
def test_p2p_mirrors_partyinfo_and_keeps_a_catch_all(
    quorum: tuple[str, ...], tessera: tuple[str, ...]
) -> None:
    config = parse_config(standalone(quorum, tessera))
    listener = next(lst for lst in config.listeners if lst.listen.endswith(":9001"))
    routes = {route.prefix: route for route in listener.routes}
    partyinfo = routes["/partyinfo"]
    assert partyinfo.mirror is not None
    assert partyinfo.mirror.upstream == "p2p"
    assert partyinfo.retry_non_idempotent is True
    # The seed's other routes, none mirrored, and "/" for /version, /metrics, /pushBatch...
    for prefix in ("/partyinfo/validate", "/resend", "/push", "/upcheck", "/"):
        assert routes[prefix].upstream == "p2p"
        assert routes[prefix].mirror is None
    assert config.upstreams["p2p"].servers == tuple((t, 9001) for t in tessera)


@pytest.mark.parametrize(("quorum", "tessera"), STACKS)
def test_standalone_tessera_upstreams_use_the_deep_check_on_ports_the_proxy_reaches(
    quorum: tuple[str, ...], tessera: tuple[str, ...]
) -> None:
    config = parse_config(standalone(quorum, tessera))
    for name in ("third_party", "p2p"):
        check = config.upstreams[name].health_check
        assert check is not None
        assert (check.type, check.public_key) == ("tessera", TESSERA_KEY)
        # the proxy's security group reaches Tessera on 9081 and 9001 only, not Q2T's 9101
        assert (check.third_party_port, check.p2p_port, check.q2t_port) == (9081, 9001, None)
        assert (check.interval, check.timeout, check.rise, check.fall) == (5.0, 2.0, 2, 3)


def test_standalone_without_the_key_keeps_upcheck() -> None:
    config = parse_config(standalone(("q.z",), ("t.z",), key=None))
    for name in ("third_party", "p2p"):
        check = config.upstreams[name].health_check
        assert check is not None
        assert (check.type, check.path) == ("http", "/upcheck")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"quorum_dns_names": (), "tessera_dns_names": ("t.z",)}, "quorum_dns_names"),
        (
            {
                "quorum_dns_names": ("q.z",),
                "tessera_dns_names": ("t.z",),
                "tessera_public_key": "x",
            },
            "tessera_public_key",
        ),
        (
            {
                "quorum_dns_names": ("q.z",),
                "tessera_dns_names": ("t.z",),
                "tessera_public_key": base64.b64encode(b"k" * 33).decode(),
            },
            "tessera_public_key",
        ),
        ({"quorum_dns_names": ("q.z",), "tessera_dns_names": ("t.z", "t.z")}, "each name once"),
        ({"quorum_dns_names": ("q.z",), "tessera_dns_names": ("bad name",)}, "tessera_dns_names"),
        ({"quorum_dns_names": ("q.z",), "tessera_dns_names": ("t.z",), "workers": 0}, "workers"),
    ],
)
def test_standalone_config_refuses_bad_input(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BootContextError, match=fragment):
        standalone_proxy_config(**kwargs)


def test_proxy_parser_would_catch_a_route_to_a_missing_upstream() -> None:
    # Guard that parse_config is a real check here: break the rendered config on purpose.
    data = standalone(("q.z",), ("t.z",))
    data["listeners"][1]["routes"][0]["upstream"] = "nowhere"
    with pytest.raises(ConfigError, match="nowhere"):
        parse_config(data)
