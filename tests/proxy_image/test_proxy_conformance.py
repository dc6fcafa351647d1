"""Issue 13, HTTP conformance: the proxy answers as nginx does (see test_proxy_nginx_parity)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxy_support import (
    Client,
    Proxy,
    Reply,
    UpstreamServer,
    http_config,
    request,
    wait_for,
)
from quorum_proxy import http_client, http_exchange

RETRY_ALL = {"retry_on": ["error", "timeout", "http_404"], "retry_non_idempotent": True}
# more than a 404 body held for a retry (http_exchange.MAX_BUFFERED_404)
BIG = http_exchange.MAX_BUFFERED_404 + 40_000


def read_all(sock: socket.socket) -> bytes:
    """Everything until the proxy's FIN; a reset fails the test (the client lost data)."""
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


# 404 retry: nginx `proxy_next_upstream http_404` retries any 404, whatever its body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_404_too_big_to_hold_is_retried_on_the_next_server(
    chunked: bool, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404, body=b"n" * BIG, chunked=chunked)
    proxy = start_proxy(http_config([a.address, b.address], route=RETRY_ALL))
    with Client(proxy.addr("p2p")) as client:
        for i in range(2):  # round robin: one of the two starts on a
            r = client.request("POST", "/send", b'{"n": %d}' % i)
            assert r.status == 200 and r.json()["server"] == "b"
    assert len(a.seen) == 1 and len(b.seen) == 2
    assert (
        proxy.metric("quorum_proxy_retries_total", listener="p2p", route="/", reason="http_404")
        == 1
    )


def test_when_every_server_says_a_big_404_the_last_one_is_answered_whole(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404, body=b"a" * BIG)
    b.handler = lambda seen: Reply(status=404, body=b"b" * BIG)
    proxy = start_proxy(http_config([a.address, b.address], route=RETRY_ALL))
    with Client(proxy.addr("p2p")) as client:
        r = client.request("POST", "/send", b"{}")
        assert r.status == 404 and r.body in (b"a" * BIG, b"b" * BIG)
        last = a if r.body[:1] == b"a" else b
        # the connection that carried the whole answer stays usable
        assert client.request("GET", "/upcheck").status == 404
    assert (len(a.seen), len(b.seen)) == (2, 2)
    assert last.seen[0].body == b"{}"  # the answer came from a server that had the request


def test_a_404_too_big_to_hold_is_not_kept_when_the_next_server_fails(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    refused_address: Callable[[], str],
) -> None:
    # the memory held for a 404 is bounded for chunked answers too; nginx answers 502 here
    a = upstreams("a")
    a.handler = lambda seen: Reply(status=404, body=b"n" * BIG, chunked=True)
    dead = refused_address()
    # round robin starts on the second server: a, then the dead one
    proxy = start_proxy(http_config([dead, a.address], route=RETRY_ALL, upstream={"max_fails": 0}))
    r = request(proxy.addr("p2p"), "POST", "/send", b"{}")
    assert r.status == 502 and r.json()["last_failure"] == "error"
    assert len(a.seen) == 1


# 413 then lingering close (nginx lingering_close, ngx_http_special_response.c keeps it for 413)


def oversized(chunked: bool, size: int) -> tuple[bytes, bytes]:
    """A POST head announcing a body over the limit, and that body."""
    if chunked:
        head = b"POST /send HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        step = 16384
        body = b"".join(b"%x\r\n%s\r\n" % (step, b"y" * step) for _ in range(size // step))
        return head, body + b"0\r\n\r\n"
    return b"POST /send HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size, b"x" * size


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_still_sending_an_oversized_body_reads_the_413_and_a_clean_close(
    chunked: bool, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, limits={"max_retry_body_bytes": 1000})
    )
    head, body = oversized(chunked, 4 << 20)
    with socket.create_connection(proxy.addr("p2p"), timeout=5) as s:
        s.sendall(head)
        s.sendall(body)  # read and discarded by the proxy, not refused with a reset
        s.shutdown(socket.SHUT_WR)
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 413 ") and b"Connection: close\r\n" in data
    assert a.seen == [] and b.seen == []


def send_until_refused(sock: socket.socket, seconds: float, pause: float = 0.0) -> float:
    """Keep sending; the time until the proxy ends the connection (fails past seconds)."""
    start = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while time.monotonic() - start < seconds:
            sock.sendall(b"z" * 65536)
            if pause:
                time.sleep(pause)
        raise AssertionError(f"the proxy still read after {seconds}s")
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("bound", "value", "pause"),
    [("LINGERING_BYTES", 1 << 20, 0.0), ("LINGERING_TIME", 0.5, 0.05)],
    ids=["bytes", "time"],
)
def test_lingering_after_413_is_bounded(
    bound: str,
    value: Any,
    pause: float,
    monkeypatch: pytest.MonkeyPatch,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    monkeypatch.setattr(http_client, bound, value)
    a, b = upstreams("a"), upstreams("b")
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, limits={"max_retry_body_bytes": 1000})
    )
    with socket.create_connection(proxy.addr("p2p"), timeout=5) as s:
        s.sendall(oversized(False, 1 << 30)[0])
        assert send_until_refused(s, 4.0, pause) < 4.0


def open_connections(proxy: Proxy) -> int:
    return proxy.loop.call(lambda: proxy.runtime.open_connections["p2p"])


def test_lingering_after_413_ends_when_the_client_goes_quiet(
    monkeypatch: pytest.MonkeyPatch,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    monkeypatch.setattr(http_client, "LINGERING_TIMEOUT", 0.5)
    a, b = upstreams("a"), upstreams("b")
    proxy = start_proxy(
        http_config([a.address, b.address], route=RETRY_ALL, limits={"max_retry_body_bytes": 1000})
    )
    with socket.create_connection(proxy.addr("p2p"), timeout=3) as s:
        head, body = oversized(False, 1 << 20)
        s.sendall(head + body[:100_000])  # then silence, the socket left open
        # the 413, then the proxy's half-close (nginx shuts its write side down too)
        assert read_all(s).startswith(b"HTTP/1.1 413 ")
        start = time.monotonic()
        wait_for(lambda: open_connections(proxy) == 0, 3.0, "the lingering connection closed")
        assert 0.2 < time.monotonic() - start < 2.0


# HEAD: the answer keeps the upstream's Content-Length (what GET would carry)


def test_a_head_answer_keeps_the_upstreams_content_length(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        get = client.request("GET", "/upcheck")
        for _ in range(2):  # a fresh, then a pooled upstream connection
            head = client.request("HEAD", "/upcheck")
            assert head.status == 200
            assert head.headers["content-length"] == str(len(get.body))


def test_a_held_404_answering_head_keeps_the_upstreams_content_length(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404, body=b"not here")
    b.handler = lambda seen: Reply(close=True)
    # [b, a]: round robin starts on a, whose 404 is held while b fails
    proxy = start_proxy(
        http_config([b.address, a.address], route=RETRY_ALL, upstream={"max_fails": 0})
    )
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):  # a fresh, then a pooled connection to a
            head = client.request("HEAD", "/transaction/x")
            assert head.status == 404 and head.headers["content-length"] == "8"


# Host: HTTP/1.1 needs exactly one (RFC 9112 3.2); absolute-form targets route by their path

HOST_CASES = [
    (b"GET /upcheck HTTP/1.1\r\n\r\n", 400),
    (b"GET /upcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /upcheck HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
    (b"GET http://a/upcheck HTTP/1.1\r\n\r\n", 400),
    (b"GET /upcheck HTTP/1.0\r\n\r\n", 200),
    (b"GET /upcheck HTTP/1.1\r\nHost: a\r\n\r\n", 200),
]


@pytest.mark.parametrize(
    ("raw", "status"),
    HOST_CASES,
    ids=["no host", "two hosts", "same host twice", "absolute no host", "1.0 no host", "one"],
)
def test_http11_requests_need_exactly_one_host(
    raw: bytes,
    status: int,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        client.send(raw)  # no half-close: a client's EOF would cancel the request
        assert client.read_response().status == status
    assert len(a.seen) == (1 if status == 200 else 0)


def two_route_config(root: UpstreamServer, upcheck: UpstreamServer) -> dict[str, Any]:
    config = http_config(
        [root.address],
        routes=[
            {"prefix": "/", "upstream": "tessera"},
            {"prefix": "/upcheck", "upstream": "upcheck"},
        ],
    )
    config["upstreams"]["upcheck"] = {"servers": [upcheck.address]}
    return config


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (b"http://node.example:9001/upcheck?x=1", "/upcheck?x=1", "node.example:9001"),
        (b"HTTP://Node.Example/upcheck", "/upcheck", "Node.Example"),
        (b"http://node.example?x=1", "/?x=1", "node.example"),
        (b"http://node.example", "/", "node.example"),
    ],
    ids=["path and query", "scheme in capitals", "query only", "no path"],
)
def test_an_absolute_form_target_is_routed_by_its_path(
    target: bytes,
    path: str,
    host: str,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    root, upcheck = upstreams("root"), upstreams("upcheck")
    proxy = start_proxy(two_route_config(root, upcheck))
    with Client(proxy.addr("p2p")) as client:
        client.send(b"GET %s HTTP/1.1\r\nHost: other\r\n\r\n" % target)
        r = client.read_response()
    assert r.status == 200
    expected = upcheck if path.startswith("/upcheck") else root
    assert [(s.path, s.headers["host"]) for s in expected.seen] == [(path, host)]
