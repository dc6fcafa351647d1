"""Item 3: HTTP/1.1 proxying: keep-alive, pooling, streamed bodies, 413, round-robin, headers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from proxy_support import Client, Proxy, Reply, UpstreamServer, http_config, request, wait_for

RETRY_ALL = {"retry_on": ["error", "timeout", "http_404"], "retry_non_idempotent": True}
NO_RETRY = {"retry_on": []}


def test_requests_on_one_client_connection_reuse_one_pooled_upstream_connection(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        for i in range(5):
            r = client.request("POST", f"/send/{i}", b'{"n": %d}' % i)
            assert r.status == 200 and r.json()["path"] == f"/send/{i}"
    assert len(a.seen) == 5
    # one client connection, answered over one pooled upstream connection
    assert len(a.conns) == 1


def test_round_robin_spreads_requests_over_healthy_servers(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    servers = [upstreams(n) for n in ("a", "b", "c")]
    proxy = start_proxy(http_config([s.address for s in servers]))
    with Client(proxy.addr("p2p")) as client:
        answered = [client.request("GET", "/upcheck").json()["server"] for _ in range(9)]
    assert sorted(answered) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


def test_hop_by_hop_headers_are_dropped_and_x_forwarded_for_added(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    a.handler = lambda seen: Reply(headers=[("Keep-Alive", "timeout=5"), ("X-Tessera", "1")])
    proxy = start_proxy(http_config([a.address]))
    r = request(
        proxy.addr("p2p"),
        "GET",
        "/version",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "Keep-Alive": "timeout=9",
            "Proxy-Connection": "keep-alive",
            "TE": "trailers",
            "X-Secret-Hop": "for the proxy only",
            "X-Forwarded-For": "10.9.8.7",
            "X-Custom": "kept",
        },
    )
    seen = a.seen[0].headers
    for hop in ("keep-alive", "proxy-connection", "te", "x-secret-hop"):
        assert hop not in seen
    assert seen.get("connection", "keep-alive") == "keep-alive"
    assert seen["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert seen["x-custom"] == "kept" and seen["host"] == "test"
    assert "keep-alive" not in r.headers and r.headers["x-tessera"] == "1"


def test_chunked_request_body_is_streamed_to_a_route_without_retry(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address], route=NO_RETRY))
    with Client(proxy.addr("p2p")) as client:
        client.send(b"POST /push HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"5\r\nhello\r\n")
        # the first chunk reaches the upstream before the client has finished the body
        wait_for(lambda: len(a.conns) == 1, what="upstream connection while body streams")
        client.send(b"6\r\n world\r\n0\r\n\r\n")
        r = client.read_response()
    assert r.status == 200
    assert a.seen[0].body == b"hello world"
    assert a.seen[0].headers["transfer-encoding"] == "chunked"


def test_large_body_streams_through_a_route_without_retry_beyond_the_buffer_limit(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(
        http_config([a.address], route=NO_RETRY, limits={"max_retry_body_bytes": 1024})
    )
    body = bytes(range(256)) * 4096  # 1 MiB
    r = request(proxy.addr("p2p"), "POST", "/storeraw", body)
    assert r.status == 200 and r.json()["body_len"] == len(body)
    assert a.seen[0].body == body


def test_body_over_the_retry_buffer_limit_gets_413(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, limits={"max_retry_body_bytes": 1000})
    )
    assert request(proxy.addr("p2p"), "POST", "/send", b"x" * 1000).status == 200
    assert request(proxy.addr("p2p"), "POST", "/send", b"x" * 1001).status == 413
    assert len(a.seen) + len(b.seen) == 1


def test_chunked_body_over_the_retry_buffer_limit_gets_413(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, limits={"max_retry_body_bytes": 100})
    )
    with Client(proxy.addr("p2p")) as client:
        client.send(b"POST /send HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        client.send(b"64\r\n" + b"y" * 100 + b"\r\n" + b"1\r\nz\r\n0\r\n\r\n")
        assert client.read_response().status == 413
    assert a.seen == [] and b.seen == []


def test_chunked_response_is_relayed_chunked_to_the_client(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    a.handler = lambda seen: Reply(body=b"0123456789" * 10, chunked=True)
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):
            r = client.request("GET", "/metrics")
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.body == b"0123456789" * 10


def test_head_request_gets_headers_without_a_body(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        r = client.request("HEAD", "/upcheck")
        assert r.status == 200 and r.body == b""
        assert client.request("GET", "/upcheck").status == 200


def test_pipelined_requests_are_answered_in_order(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        client.send(b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3)))
        paths = [client.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/p0", "/p1", "/p2"]


def test_http_1_0_client_gets_its_answer_and_a_close(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with socket.create_connection(proxy.addr("p2p"), timeout=5) as s:
        s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()
    assert a.seen[0].headers["host"] == "tessera"  # the upstream's name, as nginx sends


def test_interim_1xx_answers_from_the_upstream_are_passed_over(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    a.handler = lambda seen: Reply(status=201, interim=True)
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):  # fresh, then pooled connection
            r = client.request("POST", "/push", b"x")
            assert r.status == 201 and r.json()["server"] == "a"


def test_a_client_that_does_not_read_stops_the_proxy_reading_the_upstream(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    big = b"r" * (32 * 1024 * 1024)
    a = upstreams("a")
    a.handler = lambda seen: Reply(body=big)
    proxy = start_proxy(http_config([a.address]))

    def upstream_backlog() -> int:
        return sum(c.transport.get_write_buffer_size() for c in a.conns if c.transport)

    def proxy_backlog() -> int:
        conns = proxy.runtime.listeners["p2p"].connections
        return sum(c.transport.get_write_buffer_size() for c in conns if c.transport)

    with Client(proxy.addr("p2p"), timeout=20) as client:
        client.send(b"GET /receiveraw HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: proxy.loop.call(proxy_backlog) > 0, what="the client falling behind")
        time.sleep(0.3)  # room to drain the upstream, were the proxy not holding back
        # nobody reads: the proxy stopped reading too, the upstream keeps most of the body
        assert proxy.loop.call(proxy_backlog) < 2 * 1024 * 1024
        assert a.loop.call(upstream_backlog) > 16 * 1024 * 1024
        r = client.read_response()
    assert len(r.body) == len(big)
