"""Issue 13: the same requests to Debian's nginx and to the proxy, configured alike, same answers.

nginx runs the equivalent of the proxy's config (a retry-everything route, as the third-party
listener: `proxy_next_upstream error timeout http_404 non_idempotent`; a second route to another
upstream; `client_max_body_size` equal to `limits.max_retry_body_bytes`), in front of the same
upstream stand-ins. Each case states what both must observe.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from proxy_support import Client, Proxy, Reply, UpstreamServer, free_port, http_config, nginx_front

LIMIT = 4096
BIG_404 = 150_000  # more than the proxy holds for a retry, more than nginx's proxy buffers
RETRY_ALL = {"retry_on": ["error", "timeout", "http_404"], "retry_non_idempotent": True}


def nginx_http(port: int, root: list[str], upcheck: str) -> str:
    """nginx's http block equivalent to the proxy's config of the stack fixture."""
    servers = " ".join(f"server {s};" for s in root)
    return f"""
    client_max_body_size {LIMIT};
    upstream tessera {{ {servers} keepalive 16; }}
    upstream upcheck {{ server {upcheck}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{
            proxy_next_upstream error timeout http_404 non_idempotent;
            proxy_pass http://tessera;
        }}
        location /upcheck {{ proxy_pass http://upcheck; }}
    }}"""


@dataclass
class Stack:
    """Both front ends over the same three upstream stand-ins: a and b (route /), c (/upcheck)."""

    a: UpstreamServer
    b: UpstreamServer
    c: UpstreamServer
    fronts: dict[str, tuple[str, int]]

    def reset(self) -> None:
        for s in (self.a, self.b, self.c):
            s.seen.clear()


@pytest.fixture
def stack(
    tmp_path: Path,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> Iterator[Stack]:
    a, b, c = upstreams("a"), upstreams("b"), upstreams("c")
    port = free_port()
    config = http_config(
        [a.address, b.address],
        routes=[
            {"prefix": "/", "upstream": "tessera", **RETRY_ALL},
            {"prefix": "/upcheck", "upstream": "upcheck"},
        ],
        limits={"max_retry_body_bytes": LIMIT},
    )
    config["upstreams"]["upcheck"] = {"servers": [c.address]}
    proxy = start_proxy(config)
    http = nginx_http(port, [a.address, b.address], c.address)
    with nginx_front(tmp_path, http, port, worker_connections=256) as nginx:
        yield Stack(a, b, c, {"nginx": nginx, "proxy": proxy.addr("p2p")})


def compare(stack: Stack, observe: Callable[[tuple[str, int]], Any]) -> dict[str, Any]:
    """observe() on each front end in turn, upstream logs cleared before each."""
    seen = {}
    for name, addr in stack.fronts.items():
        stack.reset()
        seen[name] = observe(addr)
    return seen


def test_a_big_404_is_retried_on_the_next_server_as_nginx_does(stack: Stack) -> None:
    stack.a.handler = lambda seen: Reply(status=404, body=b"n" * BIG_404)

    def observe(addr: tuple[str, int]) -> Any:
        answers = []
        for _ in range(2):  # whichever server a front end starts on
            with Client(addr) as client:
                r = client.request("POST", "/send", b"{}")
                answers.append((r.status, r.json()["server"]))
        return answers, len(stack.a.seen)

    assert compare(stack, observe) == {
        "nginx": ([(200, "b")] * 2, 1),
        "proxy": ([(200, "b")] * 2, 1),
    }


def test_when_every_server_says_404_the_last_answer_is_passed_as_nginx_does(stack: Stack) -> None:
    stack.a.handler = lambda seen: Reply(status=404, body=b"a" * BIG_404)
    stack.b.handler = lambda seen: Reply(status=404, body=b"b" * BIG_404)

    def observe(addr: tuple[str, int]) -> Any:
        with Client(addr) as client:
            r = client.request("POST", "/send", b"{}")
        return r.status, len(r.body), len(stack.a.seen), len(stack.b.seen)

    assert compare(stack, observe) == {
        "nginx": (404, BIG_404, 1, 1),
        "proxy": (404, BIG_404, 1, 1),
    }


def test_an_oversized_body_gets_413_and_a_lingering_close_as_nginx_does(stack: Stack) -> None:
    body = b"x" * (4 << 20)

    def observe(addr: tuple[str, int]) -> Any:
        with socket.create_connection(addr, timeout=5) as s:
            try:
                s.sendall(
                    b"POST /send HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                s.sendall(body)
                s.shutdown(socket.SHUT_WR)
                data = bytearray()
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionError as e:
                return type(e).__name__
        return bytes(data).split(b" ", 2)[1], b"\r\nConnection: close\r\n" in data

    assert compare(stack, observe) == {"nginx": (b"413", True), "proxy": (b"413", True)}


def test_a_head_answer_keeps_the_content_length_as_nginx_does(stack: Stack) -> None:
    def observe(addr: tuple[str, int]) -> Any:
        with Client(addr) as client:
            get = client.request("GET", "/upcheck")
            head = client.request("HEAD", "/upcheck")
        return head.status, head.headers.get("content-length") == str(len(get.body))

    assert compare(stack, observe) == {"nginx": (200, True), "proxy": (200, True)}


HOST_CASES = [
    ("no host", b"GET /upcheck HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET /upcheck HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("absolute without host", b"GET http://a/upcheck HTTP/1.1\r\n\r\n", 400),
    ("1.0 without host", b"GET /upcheck HTTP/1.0\r\n\r\n", 200),
]


@pytest.mark.parametrize(
    ("raw", "status"), [c[1:] for c in HOST_CASES], ids=[c[0] for c in HOST_CASES]
)
def test_host_header_rules_are_nginx_s(stack: Stack, raw: bytes, status: int) -> None:
    def observe(addr: tuple[str, int]) -> Any:
        with Client(addr) as client:
            client.send(raw)
            return client.read_response().status, len(stack.c.seen)

    forwarded = 1 if status == 200 else 0
    assert compare(stack, observe) == {"nginx": (status, forwarded), "proxy": (status, forwarded)}


def test_an_absolute_form_target_is_routed_by_its_path_as_nginx_does(stack: Stack) -> None:
    def observe(addr: tuple[str, int]) -> Any:
        with Client(addr) as client:
            client.send(
                b"GET http://node.example:9001/upcheck?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"
            )
            status = client.read_response().status
        return status, [s.path for s in stack.c.seen], len(stack.a.seen) + len(stack.b.seen)

    assert compare(stack, observe) == {
        "nginx": (200, ["/upcheck?x=1"], 0),
        "proxy": (200, ["/upcheck?x=1"], 0),
    }
