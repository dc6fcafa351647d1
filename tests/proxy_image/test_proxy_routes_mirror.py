"""Items 5 and 6: longest-prefix routes (the seed's P2P table + catch-all), the mirror."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from proxy_support import Client, Proxy, Reply, UpstreamServer, request, wait_for

# the seed's P2P locations, each on its own upstream here so the test can see where requests land
SEED_P2P = ["/resend", "/push", "/partyinfo", "/partyinfo/validate", "/upcheck"]


def p2p_config(
    route_servers: dict[str, str], mirror: dict[str, Any] | None = None, **upstream: Any
) -> dict[str, Any]:
    ups = {
        f"u{i}": {"servers": [addr], **upstream} for i, addr in enumerate(route_servers.values())
    }
    routes: list[dict[str, Any]] = []
    for i, prefix in enumerate(route_servers):
        routes.append({"prefix": prefix, "upstream": f"u{i}"})
    return {
        "upstreams": ups,
        "listeners": [{"name": "p2p", "listen": "127.0.0.1:0", "routes": routes}],
    }


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/resend", "/resend"),
        ("/resendBatch", "/resend"),
        ("/push", "/push"),
        ("/pushPrivacyGroup", "/push"),
        ("/partyinfo", "/partyinfo"),
        ("/partyinfo/keys", "/partyinfo"),
        ("/partyinfo/validate", "/partyinfo/validate"),
        ("/upcheck", "/upcheck"),
        ("/version/api", "/"),
        ("/metrics", "/"),
        ("/transaction/abc?x=/push", "/"),
    ],
)
def test_longest_prefix_wins_with_a_catch_all(
    path: str,
    route: str,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    prefixes = ["/", *SEED_P2P]
    servers = {p: upstreams(p) for p in prefixes}
    proxy = start_proxy(p2p_config({p: s.address for p, s in servers.items()}))
    r = request(proxy.addr("p2p"), "GET", path)
    assert r.status == 200
    assert r.json()["server"] == route
    assert (
        proxy.metric("quorum_proxy_http_requests_total", listener="p2p", route=route, status="200")
        == 1
    )


def test_path_without_a_route_gets_404_from_the_proxy(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    proxy = start_proxy(p2p_config({"/upcheck": a.address}))
    r = request(proxy.addr("p2p"), "GET", "/other")
    assert r.status == 404 and r.json()["error"] == "no route"
    assert a.seen == []


def mirror_config(addresses: list[str], **mirror: Any) -> dict[str, Any]:
    return {
        "upstreams": {"p2p": {"servers": addresses, "connect_timeout": "1s"}},
        "listeners": [
            {
                "name": "p2p",
                "listen": "127.0.0.1:0",
                "routes": [
                    {
                        "prefix": "/partyinfo",
                        "upstream": "p2p",
                        "retry_on": ["error", "timeout", "http_404"],
                        "retry_non_idempotent": True,
                        "mirror": {"upstream": "p2p", **mirror},
                    },
                    {"prefix": "/", "upstream": "p2p"},
                ],
            }
        ],
    }


def test_partyinfo_reaches_every_tessera_once_whatever_their_number(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    servers = [upstreams(f"t{i}") for i in range(4)]
    proxy = start_proxy(mirror_config([s.address for s in servers]))
    r = request(proxy.addr("p2p"), "POST", "/partyinfo", b"\x00\x01party")
    assert r.status == 200
    wait_for(lambda: all(len(s.seen) == 1 for s in servers), what="a copy on every tessera")
    assert all(s.seen[0].body == b"\x00\x01party" for s in servers)
    wait_for(
        lambda: (
            proxy.metric(
                "quorum_proxy_mirror_requests_total",
                listener="p2p",
                route="/partyinfo",
                result="ok",
            )
            == 3
        )
    )


def test_other_routes_are_not_mirrored(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    servers = [upstreams(f"t{i}") for i in range(3)]
    proxy = start_proxy(mirror_config([s.address for s in servers]))
    assert request(proxy.addr("p2p"), "POST", "/push", b"x").status == 200
    time.sleep(0.1)  # room for a wrong copy to arrive; the assertion is on counts, not time
    assert sum(len(s.seen) for s in servers) == 1


def test_a_slow_or_failing_mirror_target_neither_delays_nor_changes_the_answer(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    fast, slow, broken = upstreams("fast"), upstreams("slow"), upstreams("broken")
    slow.handler = lambda seen: Reply(delay=3.0)
    broken.handler = lambda seen: Reply(status=500)
    proxy = start_proxy(
        mirror_config([fast.address, slow.address, broken.address], timeout="500ms")
    )
    # pin the answer on fast: slow and broken only ever see mirror copies
    proxy.loop.call(lambda: _only_fast_answers(proxy))
    with Client(proxy.addr("p2p"), timeout=2.0) as client:
        r = client.request("POST", "/partyinfo", b"info")
    assert r.status == 200 and r.json()["server"] == "fast"
    metric = "quorum_proxy_mirror_requests_total"
    labels = {"listener": "p2p", "route": "/partyinfo"}
    wait_for(lambda: proxy.metric(metric, result="timeout", **labels) == 1, what="mirror timeout")
    wait_for(lambda: proxy.metric(metric, result="http_error", **labels) == 1, what="mirror 500")
    assert len(slow.seen) == 1 and len(broken.seen) == 1


def _only_fast_answers(proxy: Proxy) -> None:
    """The routes of the p2p upstream send every request to its first server, and no retry."""
    group = proxy.runtime.groups["p2p"]
    first = group.servers[0]
    for listener in proxy.runtime.http_listeners:
        for route in listener.routes:
            if route.group is group:
                route.pick = lambda tried: None if tried else first


def test_mirror_copies_over_the_bound_are_dropped_and_counted(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    fast, slow = upstreams("fast"), upstreams("slow")
    slow.handler = lambda seen: Reply(delay=1.0)
    proxy = start_proxy(mirror_config([fast.address, slow.address], max_in_flight=2, timeout="2s"))
    proxy.loop.call(lambda: _only_fast_answers(proxy))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(5):
            assert client.request("POST", "/partyinfo", b"x").status == 200
    metric = "quorum_proxy_mirror_requests_total"
    labels = {"listener": "p2p", "route": "/partyinfo"}
    assert proxy.metric(metric, result="dropped", **labels) == 3
    wait_for(lambda: proxy.metric(metric, result="ok", **labels) == 2, what="bounded copies")
    assert len(fast.seen) == 5


def test_path_without_a_route_gets_404_even_with_a_large_body_in_flight(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    proxy = start_proxy(p2p_config({"/upcheck": a.address}))
    with Client(proxy.addr("p2p")) as client:
        client.send(b"POST /other HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n")
        client.send(b"z" * 200_000)  # far from complete: the answer must not wait for it
        r = client.read_response()
    assert r.status == 404 and r.headers["connection"] == "close"
    assert a.seen == []


def test_mirror_copies_made_together_share_one_pipelined_connection(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    answering, copied = upstreams("answering"), upstreams("copied")
    proxy = start_proxy(mirror_config([answering.address, copied.address]))
    proxy.loop.call(lambda: _only_fast_answers(proxy))
    clients = [Client(proxy.addr("p2p")) for _ in range(10)]
    try:
        for i, client in enumerate(clients):
            client.send(
                b"POST /partyinfo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n%02d" % i
            )
        assert all(client.read_response().status == 200 for client in clients)
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: len(copied.seen) == 10, what="ten copies")
    assert sorted(s.body for s in copied.seen) == [b"%02d" % i for i in range(10)]
    metric = "quorum_proxy_mirror_requests_total"
    wait_for(lambda: proxy.metric(metric, listener="p2p", route="/partyinfo", result="ok") == 10)
    # one connection carried them all (the answering server got none of the copies)
    assert len(answering.seen) == 10 and copied.accepted == 1


def test_a_mirror_target_that_drops_its_connection_is_counted_and_reconnected(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    answering, copied = upstreams("answering"), upstreams("copied")
    copied.handler = lambda seen: Reply(close=True) if seen.body == b"drop" else Reply()
    proxy = start_proxy(mirror_config([answering.address, copied.address]))
    proxy.loop.call(lambda: _only_fast_answers(proxy))
    metric = "quorum_proxy_mirror_requests_total"
    labels = {"listener": "p2p", "route": "/partyinfo"}
    with Client(proxy.addr("p2p")) as client:
        assert client.request("POST", "/partyinfo", b"drop").status == 200
        wait_for(lambda: proxy.metric(metric, result="error", **labels) == 1, what="error")
        assert client.request("POST", "/partyinfo", b"keep").status == 200
        wait_for(lambda: proxy.metric(metric, result="ok", **labels) == 1, what="ok again")
    assert [s.body for s in copied.seen] == [b"drop", b"keep"]
