"""Issue 13, bounded under abuse: the header and send timeouts, on real sockets.

nginx is the yardstick (measured with Debian's nginx 1.22): a connection that sends nothing is
closed without an answer at `client_header_timeout`, counted from the accept; a client that
stops reading is closed at `send_timeout`, and its upstream connection with it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from proxy_support import (
    Client,
    Proxy,
    Reply,
    UpstreamServer,
    http_config,
    read_until_closed,
    wait_for,
)

# generous against a loaded machine: the tests assert behaviour, never speed
SLACK = 8.0


def timeouts(proxy: Proxy, kind: str, listener: str = "p2p") -> float:
    """quorum_proxy_client_timeouts_total for one listener and kind."""
    return proxy.loop.call(lambda: proxy.runtime.metrics.client_timeouts.get((listener, kind)))


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address], limits={"header_timeout": "500ms"}))
    with socket.create_connection(proxy.addr("p2p")) as sock:
        # before this change it was held for the 75 s keep-alive timeout: recv timed out
        data, elapsed = read_until_closed(sock, SLACK)
    # as nginx: no request, so no answer; the close is the whole message
    assert data == b""
    assert elapsed < SLACK
    wait_for(lambda: timeouts(proxy, "header") == 1, what="the timeout counted")


def test_a_keep_alive_connection_between_requests_waits_longer_than_the_header_timeout(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address], limits={"header_timeout": "300ms"}))
    with Client(proxy.addr("p2p")) as client:
        assert client.request("GET", "/a").status == 200
        # idle after an answer is the keep-alive timeout's business (nginx keepalive_timeout)
        time.sleep(1.0)
        assert client.request("GET", "/b").status == 200


def _small_window_reader(
    body: bytes,
    send_timeout: str,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> tuple[UpstreamServer, Proxy, socket.socket]:
    """An upstream answering body, the proxy with that send timeout, and a client connected
    to it with a 4 KiB receive buffer (so that what it does not read stays in the proxy)."""
    up = upstreams()
    up.handler = lambda seen: Reply(body=body)
    proxy = start_proxy(http_config([up.address], limits={"send_timeout": send_timeout}))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(proxy.addr("p2p"))
    return up, proxy, sock


def test_a_client_that_stops_reading_is_closed_at_the_send_timeout_with_its_upstream(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    big = b"x" * (16 << 20)  # far more than the socket buffers on both sides hold
    up, proxy, sock = _small_window_reader(big, "500ms", upstreams, start_proxy)
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: len(up.conns) == 1, what="the upstream connection")
        # the client reads nothing: the proxy closes both sides, the upstream one unpooled
        wait_for(lambda: not up.conns, SLACK, "the upstream connection closed")
        data, _ = read_until_closed(sock, SLACK)
        assert len(data) < len(big)
    finally:
        sock.close()
    assert timeouts(proxy, "send") == 1


def test_a_slow_reader_that_keeps_reading_is_not_cut_off(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    body = b"y" * (1 << 20)
    *_, sock = _small_window_reader(body, "1s", upstreams, start_proxy)
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        got = b""
        start = time.monotonic()
        # progress within every send_timeout, slower overall than one send_timeout
        while time.monotonic() - start < 2.5:
            got += sock.recv(16384)
            time.sleep(0.05)
        data, _ = read_until_closed(sock, SLACK)
        got += data
    finally:
        sock.close()
    assert got.endswith(body)
