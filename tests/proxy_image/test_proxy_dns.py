"""Issue 13, DNS re-resolution: a moved name takes all traffic; lookups never fail health."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from proxy_support import Client, Proxy, Reply, UpstreamServer, http_config, request, wait_for

NAME = "tessera-0.dev.quorum-ha.internal"


class Dns:
    """A resolver whose records the test changes: getaddrinfo's errors for a gone name or DNS."""

    def __init__(self, records: dict[str, int]) -> None:
        self.records = records
        self.failing = False
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> tuple[str, int]:
        self.lookups += 1
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return "127.0.0.1", self.records[host]


def server_addr(proxy: Proxy) -> Any:
    return proxy.loop.call(lambda: proxy.runtime.groups["tessera"].servers[0].addr)


def test_a_connection_busy_when_the_name_moves_is_closed_when_it_comes_back(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    old, new = upstreams("old"), upstreams("new")
    old.handler = lambda seen: Reply(delay=0.5) if seen.path == "/slow" else Reply()
    dns = Dns({NAME: old.port})
    proxy = start_proxy(
        http_config([f"{NAME}:9001"], upstream={"resolve_interval": "50ms"}), resolver=dns
    )
    with Client(proxy.addr("p2p")) as slow:
        slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: len(old.seen) == 1, what="the slow request at the old address")
        dns.records[NAME] = new.port  # the machine was replaced while the request ran
        wait_for(lambda: server_addr(proxy) == ("127.0.0.1", new.port), what="new address")
        assert slow.read_response().json()["server"] == "old"
        # the connection that served it went back to the pool: it must not carry more
        with Client(proxy.addr("p2p")) as client:
            answered = [client.request("GET", "/upcheck").json()["server"] for _ in range(4)]
        assert answered == ["new"] * 4
    assert len(old.seen) == 1
    wait_for(lambda: not old.conns, what="the old address's connection closed")


def check_config(server: str) -> dict[str, Any]:
    check = {"type": "http", "path": "/upcheck", "interval": "50ms", "fall": 1, "rise": 1}
    return http_config([server], upstream={"resolve_interval": "50ms", "health_check": check})


def ready(proxy: Proxy) -> int:
    return request(proxy.addr("admin"), "GET", "/readyz/p2p").status


@pytest.mark.parametrize(
    ("outage", "reason"), [("dns down", "error"), ("name gone", "no_such_name")]
)
def test_a_failed_lookup_is_counted_and_logged_never_a_health_failure(
    outage: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    a = upstreams("a")
    dns = Dns({NAME: a.port})
    proxy = start_proxy(check_config(f"{NAME}:9001"), resolver=dns)
    wait_for(lambda: len(a.seen) >= 2, what="health checks at the address")
    assert ready(proxy) == 200
    caplog.set_level(logging.WARNING, logger="quorum_proxy")
    if outage == "dns down":
        dns.failing = True
    else:
        dns.records.clear()
    checks = len(a.seen)
    failures = dict(upstream="tessera", server=f"{NAME}:9001", reason=reason)
    wait_for(
        lambda: proxy.metric("quorum_proxy_dns_lookup_failures_total", **failures) >= 3,
        what="counted lookup failures",
    )
    # the checks go on at the last known address, and pass
    wait_for(lambda: len(a.seen) >= checks + 3, what="checks at the last address")
    assert proxy.loop.call(lambda: proxy.runtime.groups["tessera"].servers[0].active_ok)
    assert ready(proxy) == 200
    assert request(proxy.addr("p2p"), "GET", "/x").status == 200
    assert any(f"resolve {NAME}:9001 failed" in r.getMessage() for r in caplog.records)


def test_the_mirror_follows_a_moved_name(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    answering, old, new = upstreams("answering"), upstreams("old"), upstreams("new")
    other = "tessera-1.dev.quorum-ha.internal"
    dns = Dns({NAME: answering.port, other: old.port})
    route = {"prefix": "/partyinfo", "upstream": "tessera", "mirror": {"upstream": "copies"}}
    config = http_config([f"{NAME}:9001"], routes=[route])
    # the copies' own upstream: only the mirror channel ever connects to the moved name
    config["upstreams"]["copies"] = {"servers": [f"{other}:9001"], "resolve_interval": "50ms"}
    proxy = start_proxy(config, resolver=dns)
    assert request(proxy.addr("p2p"), "POST", "/partyinfo", b"one").status == 200
    wait_for(lambda: len(old.seen) == 1, what="the first copy at the old address")
    dns.records[other] = new.port  # the machine was replaced; the mirror's connection is open
    wait_for(
        lambda: (
            proxy.loop.call(lambda: proxy.runtime.groups["copies"].servers[0].addr)
            == ("127.0.0.1", new.port)
        ),
        what="new address",
    )
    assert request(proxy.addr("p2p"), "POST", "/partyinfo", b"two").status == 200
    wait_for(lambda: len(new.seen) == 1, what="the second copy at the new address")
    assert [s.body for s in old.seen] == [b"one"]
    wait_for(lambda: not old.conns, what="the old address's connection closed")
