"""The one-shot HTTP client of the health checks and the Tessera probes, on a real socket."""

from __future__ import annotations

import asyncio

import httptools
import pytest
from quorum_proxy.http_probe import MAX_BODY, http_request

CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"
FRAMED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"
TRUNCATED = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
TOO_BIG = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1)


async def exchange(answer: bytes, **kwargs: object) -> tuple[tuple[int, bytes], bytes]:
    """http_request against a server that sends answer and closes; its result and the request."""
    seen = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(30):
            result = await http_request(("127.0.0.1", port), **kwargs)
    finally:
        server.close()
    return result, bytes(seen).replace(str(port).encode(), b"PORT")


@pytest.mark.parametrize(
    ("answer", "whole", "expected"),
    [
        (FRAMED, True, (404, b"no")),
        (CLOSE_DELIMITED, False, (200, b"ok")),
        (TRUNCATED, False, (200, b"short")),
    ],
    ids=["framed", "close-delimited-taken", "truncated-taken"],
)
def test_answers(answer: bytes, whole: bool, expected: tuple[int, bytes]) -> None:
    result, _ = asyncio.run(exchange(answer, method="GET", target="/", whole=whole))
    assert result == expected


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (CLOSE_DELIMITED, ConnectionError),
        (TRUNCATED, ConnectionError),
        # the ValueError raised in the parser's callback, as httptools wraps it
        (TOO_BIG, httptools.HttpParserCallbackError),
    ],
    ids=["close-delimited", "truncated", "too-big"],
)
def test_refuses_what_the_tessera_probes_must_not_trust(
    answer: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        asyncio.run(exchange(answer, method="GET", target="/"))


@pytest.mark.parametrize(
    ("kwargs", "head"),
    [
        (
            {"method": "POST", "target": "/resend", "headers": (("Accept", "application/json"),)},
            b"POST /resend HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n"
            b"Accept: application/json\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            {"method": "GET", "target": "/health", "host": "geth"},
            b"GET /health HTTP/1.1\r\nHost: geth\r\nConnection: close\r\n\r\n",
        ),
    ],
    ids=["post-default-host", "get-named-host"],
)
def test_request_head(kwargs: dict[str, object], head: bytes) -> None:
    _, seen = asyncio.run(exchange(FRAMED, **kwargs))
    assert seen == head
