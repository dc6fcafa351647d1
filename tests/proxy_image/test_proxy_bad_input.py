"""Item 11: malformed requests, limits, slow senders, upstream garbage, disconnects, fuzzing."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_support import (
    Client,
    LogSink,
    Proxy,
    Reply,
    UpstreamServer,
    http_config,
    request,
    wait_for,
)

STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5]\d\d ")


def exchange(addr: tuple[str, int], raw: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, half-close, read until the proxy closes."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = bytearray()
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return bytes(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    ids=[
        "not http",
        "header without colon",
        "bad length",
        "length and chunked",
        "bad chunk",
        "two lengths",
        "tls hello",
    ],
)
def test_malformed_request_gets_400_and_close(
    raw: bytes, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    proxy = start_proxy(http_config([a.address]))
    with socket.create_connection(proxy.addr("p2p"), timeout=3) as s:
        s.sendall(raw)
        data = bytearray()
        while chunk := s.recv(65536):  # no half-close: the proxy itself must close
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert a.seen == []


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 600 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Endless: " + b"c" * 5000, 431),
    ],
    ids=["long uri", "long header", "many headers", "header never ends"],
)
def test_uri_or_header_section_over_limits_is_refused(
    raw: bytes,
    status: int,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    a = upstreams()
    limits = {"max_uri_bytes": 256, "max_header_bytes": 512}
    proxy = start_proxy(http_config([a.address], limits=limits))
    with socket.create_connection(proxy.addr("p2p"), timeout=3) as s:
        s.sendall(raw)
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert (
        proxy.metric("quorum_proxy_rejected_requests_total", listener="p2p", status=str(status))
        == 1
    )
    assert a.seen == []


def test_refused_requests_are_logged_too(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy], log_sink: LogSink
) -> None:
    proxy = start_proxy(http_config([upstreams().address], limits={"max_uri_bytes": 16}))
    with socket.create_connection(proxy.addr("p2p"), timeout=3) as s:
        s.sendall(b"GET /" + b"u" * 40 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 414 ")
    wait_for(lambda: len(log_sink.lines) == 1, what="a log line")
    (entry,) = log_sink.entries()
    assert entry["status"] == 414 and entry["rejected"] is True and entry["listener"] == "p2p"


def test_slow_header_sender_is_cut_off_with_408(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address], limits={"header_timeout": "300ms"}))
    with socket.create_connection(proxy.addr("p2p"), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Drip: ")
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 ")


def test_upstream_garbage_gets_502(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    a.handler = lambda seen: Reply(garbage=True)
    proxy = start_proxy(http_config([a.address]))
    r = request(proxy.addr("p2p"), "GET", "/version")
    assert r.status == 502 and r.json()["route"] == "/"


@pytest.mark.parametrize("warm", [False, True], ids=["fresh connection", "pooled connection"])
def test_client_disconnect_cancels_the_upstream_request(
    warm: bool, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    proxy = start_proxy(http_config([a.address]))
    client = Client(proxy.addr("p2p"))
    if warm:
        assert client.request("GET", "/upcheck").status == 200
    a.handler = lambda seen: Reply(delay=5.0)
    client.send(b"GET /transaction/slow HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: len(a.seen) == 1 + warm, what="request upstream")
    client.close()
    # the proxy drops its upstream connection instead of waiting for the answer
    wait_for(lambda: len(a.conns) == 0, timeout=3, what="upstream connection closed")
    assert request(proxy.addr("admin"), "GET", "/healthz").status == 200


def test_oversized_pipelined_request_behind_a_pending_answer_closes_the_connection(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams()
    a.handler = lambda seen: Reply(delay=0.3)
    proxy = start_proxy(http_config([a.address], limits={"max_header_bytes": 512}))
    with Client(proxy.addr("p2p")) as client:
        assert client.request("GET", "/upcheck").status == 200  # pooled from now on
        client.send(
            b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /second HTTP/1.1\r\nX-Big: " + b"b" * 600 + b"\r\n\r\n"
        )
        data = bytearray()
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.sock.recv(65536):
                data += chunk
    # no 431 slipped in ahead of (or into) the answer still owed for /first
    assert b"431" not in data
    assert proxy.metric("quorum_proxy_rejected_requests_total", listener="p2p", status="431") == 1


def test_eof_inside_a_request_body_closes_without_forwarding(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams(), upstreams()
    route = {"retry_on": ["error"], "retry_non_idempotent": True}
    proxy = start_proxy(http_config([a.address, b.address], route=route))
    data = exchange(
        proxy.addr("p2p"), b"POST /send HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"
    )
    assert data == b""
    assert a.seen == [] and b.seen == []


FRAGMENTS = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"/",
    b"/partyinfo",
    b"?q=1",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"\n",
    b"Host: t",
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"hello",
    b":",
    b"\x00",
    b"\xff",
    b" ",
]

raw_requests = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=24).map(b"".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=24).map(
        lambda parts: b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + b"".join(parts)
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=raw_requests)
def test_fuzzed_requests_never_crash_or_hang_the_proxy(
    raw: bytes, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    # one proxy for all examples: a crash or a wedged loop would show in every later one
    proxy = _FUZZ_PROXY.get(id(start_proxy))
    if proxy is None:
        _FUZZ_PROXY.clear()
        proxy = _FUZZ_PROXY[id(start_proxy)] = start_proxy(
            http_config([upstreams("fuzz").address])
        )
    data = exchange(proxy.addr("p2p"), raw)
    assert data == b"" or STATUS_LINE.match(data), data[:80]
    assert request(proxy.addr("admin"), "GET", "/healthz").status == 200
    assert request(proxy.addr("p2p"), "GET", "/upcheck").status == 200


_FUZZ_PROXY: dict[int, Proxy] = {}
