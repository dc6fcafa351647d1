"""Issue 13: how Debian's nginx and the proxy end a client that is too slow, side by side.

Both run with the same header and body timeouts in front of the same upstream stand-in. nginx
closes without a word in every case (it logs 408 for a started request); the proxy closes a
connection that sent nothing the same way, and sends 408 before closing a started one, so that
the client can tell a timeout from a crash (proxy_image/README.md, "Bounded under abuse").
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_support import (
    Proxy,
    UpstreamServer,
    free_port,
    http_config,
    nginx_front,
    read_until_closed,
)

SLACK = 8.0


@pytest.fixture
def fronts(
    tmp_path: Path, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> Iterator[dict[str, tuple[str, int]]]:
    up = upstreams()
    port = free_port()
    http = f"""
    client_header_timeout 1s; client_body_timeout 1s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://{up.address}; }}
    }}"""
    limits = {"header_timeout": "1s", "body_timeout": "1s"}
    proxy = start_proxy(http_config([up.address], limits=limits))
    with nginx_front(tmp_path, http, port) as nginx:
        yield {"nginx": nginx, "proxy": proxy.addr("p2p")}


def _ending(addr: tuple[str, int], sent: bytes) -> str:
    """The status the front end answered before closing, or "close" if it said nothing."""
    with socket.create_connection(addr) as sock:
        sock.sendall(sent)
        data, _ = read_until_closed(sock, SLACK)
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "close"


@pytest.mark.parametrize(
    "sent, expected",
    [
        pytest.param(b"", {"nginx": "close", "proxy": "close"}, id="nothing sent"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHo", {"nginx": "close", "proxy": "408"}, id="half a head"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{",
            {"nginx": "close", "proxy": "408"},
            id="a body that stops",
        ),
    ],
)
def test_a_too_slow_client_is_ended_as_nginx_does_or_told_why(
    fronts: dict[str, tuple[str, int]], sent: bytes, expected: dict[str, str]
) -> None:
    assert {name: _ending(addr, sent) for name, addr in fronts.items()} == expected
