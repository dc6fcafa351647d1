"""Item 4: retry policy = nginx `proxy_next_upstream error timeout http_404 non_idempotent`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from proxy_support import Client, Proxy, Reply, UpstreamServer, http_config, request

RETRY_ALL = {"retry_on": ["error", "timeout", "http_404"], "retry_non_idempotent": True}
FAST = {"read_timeout": "300ms", "connect_timeout": "1s", "max_fails": 0}


@dataclass(frozen=True)
class Fault:
    id: str
    reply: Reply | None  # None: the first server is not listening at all
    reason: str


FAULTS = [
    Fault("connect error", None, "error"),
    Fault("timeout", Reply(delay=2.0), "timeout"),
    Fault("http 404", Reply(status=404, body=b"Recipient not found for key"), "http_404"),
    Fault("connection dropped", Reply(close=True), "error"),
    Fault("garbage answer", Reply(garbage=True), "error"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_post_goes_to_the_next_server_on_each_retry_reason(
    fault: Fault,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    refused_address: Callable[[], str],
) -> None:
    good = upstreams("good")
    bad_address = refused_address()
    if fault.reply is not None:
        bad = upstreams("bad")
        reply = fault.reply
        bad.handler = lambda seen: reply
        bad_address = bad.address
    proxy = start_proxy(http_config([bad_address, good.address], route=RETRY_ALL, upstream=FAST))
    with Client(proxy.addr("p2p")) as client:
        for i in range(2):  # round-robin: one of the two starts on the bad server
            r = client.request("POST", "/send", b'{"payload": %d}' % i)
            assert r.status == 200 and r.json()["server"] == "good"
    assert [s.body for s in good.seen] == [b'{"payload": 0}', b'{"payload": 1}']
    assert (
        proxy.metric("quorum_proxy_retries_total", listener="p2p", route="/", reason=fault.reason)
        == 1
    )


def test_each_server_is_tried_at_most_once_and_the_last_404_is_returned(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    servers = [upstreams(n) for n in ("a", "b", "c")]
    for s in servers:
        s.handler = lambda seen: Reply(status=404, body=b"Recipient not found for key")
    proxy = start_proxy(http_config([s.address for s in servers], route=RETRY_ALL))
    r = request(proxy.addr("p2p"), "POST", "/send", b"{}")
    assert r.status == 404 and r.body == b"Recipient not found for key"
    assert [len(s.seen) for s in servers] == [1, 1, 1]


def test_a_404_does_not_count_as_a_passive_failure(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404)
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, upstream={"max_fails": 1})
    )
    for _ in range(4):
        assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 200
    # a stays in rotation: it keeps receiving its share of first attempts
    assert len(a.seen) >= 2
    assert proxy.metric_sum("quorum_proxy_upstream_failures_total") == 0


@pytest.mark.parametrize(
    ("reply", "status", "failure"),
    [
        (None, 502, "error"),
        (Reply(delay=2.0), 504, "timeout"),
        (Reply(garbage=True), 502, "error"),
    ],
    ids=["all refuse", "all time out", "all answer garbage"],
)
def test_when_every_server_fails_the_client_gets_a_json_error_naming_the_route(
    reply: Reply | None,
    status: int,
    failure: str,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    refused_address: Callable[[], str],
) -> None:
    if reply is None:
        addresses = [refused_address(), refused_address()]
    else:
        servers = [upstreams(), upstreams()]
        for s in servers:
            s.handler = lambda seen: reply
        addresses = [s.address for s in servers]
    proxy = start_proxy(http_config(addresses, route=RETRY_ALL, upstream=FAST))
    r = request(proxy.addr("p2p"), "POST", "/send", b"{}")
    assert r.status == status
    assert r.json() == {
        "error": "no upstream answered",
        "listener": "p2p",
        "route": "/",
        "upstream": "tessera",
        "last_failure": failure,
    }


def test_post_is_not_retried_after_sending_without_retry_non_idempotent(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    for s in (a, b):
        s.handler = lambda seen: Reply(close=True)
    route = {"retry_on": ["error", "timeout", "http_404"]}
    proxy = start_proxy(http_config([a.address, b.address], route=route, upstream=FAST))
    assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 502
    assert len(a.seen) + len(b.seen) == 1


def test_get_is_retried_without_retry_non_idempotent(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404)
    b.handler = lambda seen: Reply(status=404)
    route = {"retry_on": ["http_404"]}
    proxy = start_proxy(http_config([a.address, b.address], route=route))
    assert request(proxy.addr("p2p"), "GET", "/transaction/abc").status == 404
    assert (len(a.seen), len(b.seen)) == (1, 1)


def test_connect_error_moves_on_even_when_the_body_streams(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    refused_address: Callable[[], str],
) -> None:
    good = upstreams("good")
    dead = refused_address()
    route = {"retry_on": ["error"]}  # POST without non_idempotent: the body streams
    proxy = start_proxy(http_config([dead, good.address], route=route, upstream=FAST))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):
            assert client.request("POST", "/send", b"streamed").status == 200
    assert [s.body for s in good.seen] == [b"streamed", b"streamed"]


def test_reason_not_listed_in_retry_on_is_not_retried(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404)
    b.handler = lambda seen: Reply(status=404)
    route = {"retry_on": ["error", "timeout"], "retry_non_idempotent": True}
    proxy = start_proxy(http_config([a.address, b.address], route=route))
    assert request(proxy.addr("p2p"), "POST", "/send", b"{}").status == 404
    assert len(a.seen) + len(b.seen) == 1


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_post_goes_to_the_next_server_when_a_pooled_connection_meets_the_fault(
    fault: Fault, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    good, bad = upstreams("good"), upstreams("bad")
    proxy = start_proxy(http_config([bad.address, good.address], route=RETRY_ALL, upstream=FAST))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):  # warm up: one idle pooled connection to each server
            assert client.request("GET", "/upcheck").status == 200
        assert len(bad.seen) == 1
        if fault.reply is None:
            bad.kill()
        else:
            reply = fault.reply
            bad.handler = lambda seen: reply
        for i in range(2):
            r = client.request("POST", "/send", b'{"payload": %d}' % i)
            assert r.status == 200 and r.json()["server"] == "good"
    assert [s.body for s in good.seen[1:]] == [b'{"payload": 0}', b'{"payload": 1}']
    retries = proxy.metric(
        "quorum_proxy_retries_total", listener="p2p", route="/", reason=fault.reason
    )
    assert retries >= 1


@pytest.mark.parametrize("warm", [False, True], ids=["fresh connection", "pooled connection"])
def test_a_body_that_stalls_mid_way_is_cut_off_after_read_timeout(
    warm: bool, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address], upstream=FAST))
    with Client(proxy.addr("p2p")) as client:
        if warm:
            assert client.request("GET", "/upcheck").status == 200
        a.handler = lambda seen: Reply(body=b"x" * 1000, stall_body=True)
        client.send(b"GET /transaction/abc HTTP/1.1\r\nHost: t\r\n\r\n")
        data = bytearray()
        while chunk := client.sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 1000" in data and data.endswith(b"x" * 500)


def test_answers_stay_in_order_when_pipelined_requests_mix_fresh_and_pooled_connections(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404) if seen.path.endswith("3") else Reply()
    proxy = start_proxy(http_config([a.address, b.address], route=RETRY_ALL))
    with Client(proxy.addr("p2p")) as client:
        client.send(
            b"".join(
                b"POST /send/%d HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n%d" % (i, i)
                for i in range(6)
            )
        )
        answers = [client.read_response() for _ in range(6)]
    assert [r.status for r in answers] == [200] * 6
    assert [r.json()["path"] for r in answers] == [f"/send/{i}" for i in range(6)]


@pytest.mark.parametrize(
    ("method", "sent_again"), [("GET", True), ("POST", False)], ids=["get", "post"]
)
def test_a_dead_pooled_connection_resends_only_what_nginx_would(
    method: str,
    sent_again: bool,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address], route={"retry_on": ["error", "timeout"]}))
    with Client(proxy.addr("p2p")) as client:
        assert client.request("GET", "/upcheck").status == 200  # leaves a pooled connection
        # the server takes the request and dies with it, without a byte of answer
        a.handler = lambda seen: Reply(close=True) if len(a.seen) == 2 else Reply()
        r = client.request(method, "/transaction/abc")
    assert r.status == (200 if sent_again else 502)
    assert len(a.seen) == (3 if sent_again else 2)


def test_a_mirror_does_not_make_a_post_retryable_without_retry_non_idempotent(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    # The mirror keeps the body for its copies; that alone must not re-send a sent POST.
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(close=True)
    route = {"retry_on": ["error", "timeout", "http_404"], "mirror": {"upstream": "tessera"}}
    proxy = start_proxy(http_config([a.address, b.address], route=route, upstream=FAST))
    statuses = sorted(
        request(proxy.addr("p2p"), "POST", "/partyinfo", b"%d" % i).status for i in range(2)
    )
    assert statuses == [200, 502]  # round robin: one POST met the failing server first
    assert proxy.metric_sum("quorum_proxy_retries_total") == 0
