"""One-shot HTTP/1.1 requests the proxy makes itself: active health checks, the Tessera probes."""

from __future__ import annotations

import asyncio

import httptools

MAX_BODY = 4 * 1024 * 1024  # a Tessera party list of thousands of keys still fits


class _Response:
    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.size = 0
        self.done = False

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY:
            raise ValueError("response body too large")
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


async def http_request(
    addr: tuple[str, int],
    method: str,
    target: str,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    host: str | None = None,
    whole: bool = True,
) -> tuple[int, bytes]:
    """One exchange on a fresh connection (Connection: close): the status and the body.

    host: the Host header, by default the address (host:port).
    whole: a response that ends before its framing says raises ConnectionError. httptools
    cannot be told of EOF, so a close-delimited answer never looks whole: a health check
    that accepts any server passes whole=False and takes what came.
    """
    reader, writer = await asyncio.open_connection(*addr)
    try:
        host = host or f"{addr[0]}:{addr[1]}"
        head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        for name, value in headers:
            head += f"{name}: {value}\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
        if whole and not response.done:
            raise ConnectionError("connection closed before the end of the response")
        return parser.get_status_code(), b"".join(response.body)
    finally:
        writer.close()
