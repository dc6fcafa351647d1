"""Items 7 and 8: passive and active health, fail open, DNS names re-resolved."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxy_support import (
    Proxy,
    Reply,
    Seen,
    UpstreamServer,
    free_port,
    http_config,
    request,
    wait_for,
)

RETRY = {"retry_on": ["error", "timeout"], "retry_non_idempotent": True}


def healthy(proxy: Proxy, server: str, upstream: str = "tessera") -> bool:
    def read() -> bool:
        group = proxy.runtime.groups[upstream]
        s = next(s for s in group.servers if s.name == server)
        return s.available(time.monotonic())

    return proxy.loop.call(read)


def test_max_fails_within_fail_timeout_takes_a_server_out_then_back(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(close=True)
    proxy = start_proxy(
        http_config(
            [a.address, b.address], route=RETRY, upstream={"max_fails": 2, "fail_timeout": "400ms"}
        )
    )
    for _ in range(4):
        assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 200
    assert len(a.seen) == 2  # two failures, then no more traffic
    assert not healthy(proxy, a.address)
    assert request(proxy.addr("p2p"), "POST", "/send", b"{}").json()["server"] == "b"
    a.handler = lambda seen: Reply()
    wait_for(lambda: healthy(proxy, a.address), what="fail_timeout to pass")
    answered = {request(proxy.addr("p2p"), "GET", "/upcheck").json()["server"] for _ in range(4)}
    assert answered == {"a", "b"}


def test_all_servers_down_are_tried_anyway(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    for s in (a, b):
        s.handler = lambda seen: Reply(close=True)
    proxy = start_proxy(
        http_config(
            [a.address, b.address], route=RETRY, upstream={"max_fails": 1, "fail_timeout": "1m"}
        )
    )
    assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 502
    assert not healthy(proxy, a.address) and not healthy(proxy, b.address)
    a.handler = lambda seen: Reply()
    b.handler = lambda seen: Reply()
    # fail open: with every server marked down, traffic still goes to them
    assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 200


def check_config(addresses: list[str], check: dict[str, Any]) -> dict[str, Any]:
    return http_config(
        addresses, upstream={"health_check": {"interval": "50ms", "timeout": "500ms", **check}}
    )


def test_http_check_takes_out_a_server_whose_upcheck_fails_and_rise_brings_it_back(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    state = {"up": True}

    def upcheck(seen: Seen) -> Reply:
        if seen.path == "/upcheck":
            return Reply(body=b"I'm up!") if state["up"] else Reply(status=503)
        return Reply()

    a.handler = upcheck
    proxy = start_proxy(
        check_config(
            [a.address, b.address], {"type": "http", "path": "/upcheck", "rise": 2, "fall": 2}
        )
    )
    wait_for(lambda: any(s.path == "/upcheck" for s in a.seen), what="first check")
    state["up"] = False
    wait_for(lambda: not healthy(proxy, a.address), what="fall")
    before = len([s for s in a.seen if s.path != "/upcheck"])
    for _ in range(4):
        assert request(proxy.addr("p2p"), "GET", "/version").json()["server"] == "b"
    assert len([s for s in a.seen if s.path != "/upcheck"]) == before
    state["up"] = True
    wait_for(lambda: healthy(proxy, a.address), what="rise")


def test_http_check_counts_only_the_expected_status_as_healthy(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    a.handler = lambda seen: Reply(status=200)
    proxy = start_proxy(
        check_config([a.address], {"type": "http", "expect_status": 204, "fall": 1})
    )
    wait_for(lambda: not healthy(proxy, a.address), what="200 is not the expected 204")


def test_jsonrpc_check_marks_a_node_whose_block_number_stalls_unhealthy(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum = upstreams("quorum")
    chain = {"block": 100, "advancing": True}

    def rpc(seen: Seen) -> Reply:
        call = json.loads(seen.body)
        assert call["method"] == "eth_blockNumber" and seen.method == "POST"
        if chain["advancing"]:
            chain["block"] += 1
        return Reply(
            body=json.dumps(
                {"jsonrpc": "2.0", "id": call["id"], "result": hex(chain["block"])}
            ).encode()
        )

    quorum.handler = rpc
    proxy = start_proxy(
        check_config(
            [quorum.address], {"type": "jsonrpc", "stall_after": "200ms", "fall": 1, "rise": 1}
        )
    )
    wait_for(lambda: len(quorum.seen) >= 3, what="several checks")
    assert healthy(proxy, quorum.address)
    chain["advancing"] = False
    wait_for(lambda: not healthy(proxy, quorum.address), what="stall detected")
    chain["advancing"] = True
    wait_for(lambda: healthy(proxy, quorum.address), what="advancing again")


def test_tcp_check_follows_whether_the_port_accepts(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(check_config([a.address], {"type": "tcp", "fall": 1, "rise": 1}))
    a.kill()
    wait_for(lambda: not healthy(proxy, a.address), what="port closed")
    a.start()
    wait_for(lambda: healthy(proxy, a.address), what="port open again")


def test_readyz_follows_upstream_health(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(check_config([a.address], {"type": "tcp", "fall": 1, "rise": 1}))
    assert request(proxy.addr("admin"), "GET", "/readyz").status == 200
    a.kill()
    wait_for(
        lambda: request(proxy.addr("admin"), "GET", "/readyz").status == 503, what="not ready"
    )
    assert request(proxy.addr("admin"), "GET", "/healthz").status == 200


def test_dns_names_are_re_resolved_and_a_moved_node_is_picked_up(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    old, new = upstreams("old"), upstreams("new")
    hosts = {"tessera-0.node.quorum-ha.internal": ("127.0.0.1", old.port)}
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> tuple[str, int]:
        lookups.append(host)
        if host not in hosts:
            raise OSError(f"unknown host {host}")
        await asyncio.sleep(0)
        return hosts[host]

    proxy = start_proxy(
        http_config(
            ["tessera-0.node.quorum-ha.internal:9001"], upstream={"resolve_interval": "50ms"}
        ),
        resolver=resolver,
    )
    assert request(proxy.addr("p2p"), "GET", "/upcheck").json()["server"] == "old"
    hosts["tessera-0.node.quorum-ha.internal"] = ("127.0.0.1", new.port)  # the node was replaced
    wait_for(
        lambda: request(proxy.addr("p2p"), "GET", "/upcheck").json()["server"] == "new",
        what="new address",
    )
    assert len(lookups) >= 2


def test_failed_re_resolution_keeps_the_last_good_address(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    hosts: dict[str, tuple[str, int]] = {"tessera-0": ("127.0.0.1", a.port)}
    calls = {"n": 0}

    async def resolver(host: str, port: int) -> tuple[str, int]:
        calls["n"] += 1
        if host not in hosts:
            raise OSError("NXDOMAIN")
        return hosts[host]

    proxy = start_proxy(
        http_config([f"tessera-0:{free_port()}"], upstream={"resolve_interval": "30ms"}),
        resolver=resolver,
    )
    assert request(proxy.addr("p2p"), "GET", "/x").status == 200
    hosts.clear()
    n = calls["n"]
    wait_for(lambda: calls["n"] > n + 1, what="failed lookups")
    assert request(proxy.addr("p2p"), "GET", "/x").status == 200


@pytest.mark.parametrize("kind", ["http", "jsonrpc", "tcp"])
def test_health_state_is_exported_as_a_gauge(
    kind: str, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    a.handler = lambda seen: Reply(body=b'{"jsonrpc":"2.0","id":1,"result":"0x1"}')
    proxy = start_proxy(check_config([a.address], {"type": kind}))
    text = request(proxy.addr("admin"), "GET", "/metrics").body.decode()
    assert f'quorum_proxy_upstream_healthy{{upstream="tessera",server="{a.address}"}} 1' in text
