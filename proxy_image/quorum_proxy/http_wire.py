"""The HTTP/1.1 wire format: the request record, headers, and the heads this proxy writes.

Pure functions and constants, no I/O and no state: what a request or response looks like on
the wire (hop-by-hop headers, reasons, the upstream request head, the passed response head,
local answers). Rules about what a message may contain (size or framing bounds) belong here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .http_routes import RouteState
    from .upstream import UpstreamConnection

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)
# request headers the proxy acts on or rewrites (all others pass, unless hop-by-hop)
LOOKED_AT = HOP_BY_HOP | {b"x-forwarded-for", b"content-length", b"host"}
NON_IDEMPOTENT = frozenset({b"POST", b"LOCK", b"PATCH"})

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class RejectError(Exception):
    """Raised inside parser callbacks to refuse a request with a status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Request:
    """One client request as it is parsed and served."""

    __slots__ = (
        "accounted",
        "body",
        "body_size",
        "buffered",
        "chunked",
        "complete",
        "completed_at",
        "content_length",
        "expect_continue",
        "head",
        "head_prefix",
        "keep_alive",
        "kept",
        "looked",
        "method",
        "retryable",
        "route",
        "sink",
        "start",
        "started",
        "unaccounted",
        "upstream_chunked",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        # passed header lines as name, ": ", value, CRLF (joined once, in on_headers_complete)
        self.kept: list[bytes] = []
        # the few headers the proxy acts on, lowercased, in order
        self.looked: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.keep_alive = True
        self.chunked = False
        self.content_length: int | None = None
        self.expect_continue = False
        self.body: list[bytes] = []
        self.body_size = 0
        # bytes of body counted in the process's BodyBudget (bodies.py), and bytes read since
        # (counted as the read ends: whole, or still coming and so a candidate for refusal)
        self.accounted = 0
        self.unaccounted = 0
        self.buffered = False
        # may go to another server once sent: a mirror buffers a POST, it does not retry it
        self.retryable = False
        self.complete = False
        # when its last body byte was read (the upstream's read timeout starts there)
        self.completed_at = 0.0
        self.sink: UpstreamConnection | None = None
        self.upstream_chunked = False
        self.started = False
        self.route: RouteState | None = None
        self.head = b""
        self.head_prefix = b""
        self.start = 0.0

    def take_unaccounted(self) -> int:
        """The body bytes read since the last count, now counted (accounted)."""
        size = self.unaccounted
        self.unaccounted = 0
        self.accounted += size
        return size


def simple_response(status: int, body: bytes, close: bool = True) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        REASONS.get(status, b"Error"),
        len(body),
        b"Connection: close\r\n" if close else b"",
    )
    return head + body


def drop_named(kept: list[bytes], named: set[bytes]) -> list[bytes]:
    """The kept header lines (4 parts each) less those named in the Connection header."""
    return [
        part
        for i in range(0, len(kept), 4)
        if kept[i].lower() not in named
        for part in kept[i : i + 4]
    ]


def passed_head(
    status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, int | None, bool]:
    """A response's status line and the headers passed on; its length and whether chunked."""
    length: int | None = None
    chunked = False
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b"Status"))]
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            length = int(value) if value.isdigit() else None
        elif lname == b"transfer-encoding":
            chunked = True
        elif lname not in HOP_BY_HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines), length, chunked


def upstream_head(req: Request) -> bytes:
    """The request head for the upstream: the kept headers plus this hop's framing."""
    if req.buffered:
        if req.body_size or req.chunked or req.content_length is not None:
            return req.head_prefix + b"Content-Length: %d\r\n\r\n" % req.body_size
    elif req.chunked:
        req.upstream_chunked = True
        return req.head_prefix + b"Transfer-Encoding: chunked\r\n\r\n"
    elif req.content_length is not None:
        return req.head_prefix + b"Content-Length: %d\r\n\r\n" % req.content_length
    return req.head_prefix + b"\r\n"
