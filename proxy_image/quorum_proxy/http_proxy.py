"""HTTP/1.1 listener: routes, retry policy, mirror; one protocol class per client connection.

Built on asyncio protocols with httptools callbacks (uvicorn's httptools_impl is the model):
request bodies stream to the upstream unless a retry or a mirror may need them again.
"""

from __future__ import annotations

import asyncio
import json
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

import httptools

from .config import Limits, Listener, Route
from .metrics import LATENCY_BUCKETS
from .mirror import MirrorCopy
from .upstream import Server, UpstreamConnection, UpstreamGroup, write_batch

if TYPE_CHECKING:
    from .server import ProxyRuntime

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
_LOOKED_AT = HOP_BY_HOP | {b"x-forwarded-for", b"content-length", b"host"}
NON_IDEMPOTENT = frozenset({b"POST", b"LOCK", b"PATCH"})
# a 404 body kept in case every other server fails too; past it the body is dropped, the
# connection closed and the next server asked (nginx retries any 404 and keeps none)
MAX_BUFFERED_404 = 65536
STREAM_BUFFER_HIGH = 65536
# client-side reasons to stop reading
PAUSE_PIPELINE = 1
PAUSE_UPSTREAM = 2
PAUSE_WAIT = 4
# stages of the coroutine-free path
_WAIT_HEAD = 0
_STREAM_BODY = 1
_READ_404 = 2
_NONE_TRIED: list[Server] = []
# answers read whole and held while the next server is asked (see HttpClientProtocol._hold_for)
HOLD_NONE: frozenset[int] = frozenset()
HOLD_404 = frozenset({404})
# idle client connections between requests (nginx keepalive_timeout)
KEEPALIVE_TIMEOUT = 75.0
# after a 413, what the client still sends is read and dropped so that it reads the answer
# instead of a reset (nginx lingering_close; lingering_time 30s, lingering_timeout 5s:
# https://nginx.org/en/docs/http/ngx_http_core_module.html#lingering_time); nginx has no byte
# bound, this proxy stops reading at LINGERING_BYTES
LINGERING_TIME = 30.0
LINGERING_TIMEOUT = 5.0
LINGERING_BYTES = 64 << 20

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


class _RejectError(Exception):
    """Raised inside parser callbacks to refuse a request with a status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _AttemptFailedError(Exception):
    """One attempt on one server failed; sent says whether the request left the proxy."""

    def __init__(self, reason: str, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class _StaleConnectionError(Exception):
    """A pooled connection died before any answer byte: worth one fresh connection."""


class _Outcome:
    """What the retry loop learnt: retries, last failure, a held 404, the answering server."""

    __slots__ = ("failure", "held", "held_server", "retries", "sent", "server")

    def __init__(self) -> None:
        self.retries = 0
        self.failure = "error"
        # some failed attempt sent the request: a server may have acted on it
        self.sent = False
        self.held: tuple[int, bytes, list[tuple[bytes, bytes]], bytes] | None = None
        self.held_server = ""
        self.server = ""


def simple_response(status: int, body: bytes, close: bool = True) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        REASONS.get(status, b"Error"),
        len(body),
        b"Connection: close\r\n" if close else b"",
    )
    return head + body


class RouteState:
    """A route with its upstream groups and mirror accounting."""

    __slots__ = (
        "buffer_all",
        "buffer_idempotent",
        "config",
        "copies",
        "group",
        "host_line",
        "keys",
        "label",
        "mirror_group",
        "picker",
        "retry_404",
    )

    def __init__(
        self, config: Route, group: UpstreamGroup, mirror_group: UpstreamGroup | None
    ) -> None:
        self.config = config
        self.group = group
        self.mirror_group = mirror_group
        # mirror copies not yet answered, for the max_in_flight bound
        self.copies: set[MirrorCopy] = set()
        self.label = config.prefix
        # metric label values by status, made once: (listener, route, status), latency series
        self.keys: dict[int, tuple[tuple[str, str, str], list[float]]] = {}
        self.retry_404 = "http_404" in config.retry_on
        # picks the server for a request's next attempt instead of the group's round-robin
        # (the JSON-RPC listener's primary first, jsonrpc_proxy.py)
        self.picker: Callable[[list[Server]], Server | None] | None = None
        # whether a request's body is kept for a retry or a mirror copy (per method)
        may_retry = len(group.servers) > 1 and bool(config.retry_on)
        self.buffer_all = mirror_group is not None or (may_retry and config.retry_non_idempotent)
        self.buffer_idempotent = may_retry
        # as nginx's default $proxy_host: the upstream's name
        self.host_line = b"Host: %s\r\n" % group.config.name.encode()

    def pick(self, tried: list[Server]) -> Server | None:
        picker = self.picker
        return self.group.pick(tried) if picker is None else picker(tried)


class HttpListener:
    """Shared state of one HTTP listener: its routing table, longest prefix first."""

    def __init__(self, config: Listener, runtime: ProxyRuntime) -> None:
        self.config = config
        self.name = config.name
        self.runtime = runtime
        self.limits: Limits = runtime.config.limits
        self.routes = [
            RouteState(
                r,
                runtime.groups[r.upstream],
                runtime.groups[r.mirror.upstream] if r.mirror else None,
            )
            for r in sorted(config.routes, key=lambda r: len(r.prefix), reverse=True)
        ]
        self.prefixes = [(r.config.prefix.encode(), r) for r in self.routes]
        self.connections: set[HttpClientProtocol] = set()
        self.no_route_keys: dict[int, tuple[tuple[str, str, str], list[float]]] = {}
        # the last response head seen: status, reason, headers, then _passed_head's answer
        self.head_cache: (
            tuple[int, bytes, list[tuple[bytes, bytes]], bytes, int | None, bool] | None
        ) = None

    def match(self, path: bytes) -> RouteState | None:
        for prefix, route in self.prefixes:
            if path.startswith(prefix):
                return route
        return None

    def protocol(self) -> HttpClientProtocol:
        return HttpClientProtocol(self)

    def check_timeouts(self, now: float) -> None:
        """Called by the runtime's sweeper: slow clients and stalled upstreams."""
        for conn in list(self.connections):
            conn.check_timeouts(now)


class Request:
    """One client request as it is parsed and served."""

    __slots__ = (
        "body",
        "body_size",
        "buffered",
        "chunked",
        "complete",
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
        self.buffered = False
        # may go to another server once sent: a mirror buffers a POST, it does not retry it
        self.retryable = False
        self.complete = False
        self.sink: UpstreamConnection | None = None
        self.upstream_chunked = False
        self.started = False
        self.route: RouteState | None = None
        self.head = b""
        self.head_prefix = b""
        self.start = 0.0


class HttpClientProtocol(asyncio.Protocol):
    """A client connection: parses requests, serves one at a time (pipelined ones queue)."""

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.runtime = listener.runtime
        self.limits = listener.limits
        self.loop = asyncio.get_running_loop()
        self.batch = write_batch(self.loop)
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.xff_line = b""
        self.cur: Request | None = None
        self.active: Request | None = None
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.paused = 0
        self.closed = False
        self.url_bytes = 0
        self.header_bytes = 0
        self.head_bytes = 0
        self.waiting_since: float | None = 0.0
        self.partial = False
        self.write_paused = False
        # response state of the current attempt
        self.conn: UpstreamConnection | None = None
        self.resp_head: asyncio.Future[None] | None = None
        self.resp_done: asyncio.Future[None] | None = None
        self.resp_status = 0
        self.resp_reason = b""
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.resp_keep_alive = True
        self.resp_chunked = False
        self.resp_close_delimited = False
        self.resp_no_body = False
        self.hold_body: list[bytes] | None = None
        self.hold_size = 0
        self.hold_dropped = False
        self.streaming = False
        self._hold_statuses = HOLD_NONE
        self.head_start = 0.0
        self.now = 0.0
        self.pending = b""
        # the coroutine-free path (see _try_fast)
        self.fast_req: Request | None = None
        self.fast_server: Server
        self.fast_stage = 0
        # checked by the runtime's sweeper: cheaper than a timer per request
        self.fast_deadline = 0.0
        # lingering close after a 413: until when (0: not lingering), last read, bytes read
        self.linger_until = 0.0
        self.linger_last = 0.0
        self.linger_bytes = 0

    # connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if isinstance(peer, tuple) else b"unix"
        self.xff_line = b"X-Forwarded-For: %s\r\n" % self.peer
        self.waiting_since = self.loop.time()
        self.listener.connections.add(self)
        self.runtime.connection_opened(self.listener.name)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fast_clear()
        if self.conn is not None:
            self.conn.abort()  # its callbacks must not write to this closed transport
        self.listener.connections.discard(self)
        self.runtime.connection_closed(self.listener.name)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()

    def eof_received(self) -> bool | None:
        # as nginx does, a client's EOF means it is gone: close, which cancels the upstream work
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.conn
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            if self.linger_until:
                self._linger_read(len(data))
            return
        # one clock read for the parser callbacks this data triggers
        self.now = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # an Upgrade (h2c, websocket) is ignored: the request is served as HTTP/1.1
            offset = e.args[0] if e.args else len(data)
            rest = data[offset:]
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._reject(cause.status if isinstance(cause, _RejectError) else 400)
            return
        except httptools.HttpParserError:
            self._reject(400)
            return
        if self.waiting_since is not None and self.partial:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes + self.limits.max_uri_bytes:
                self._reject(431)

    def _reject(self, status: int) -> None:
        """Refuse with a status and close; nothing else is read from this client."""
        if self.closed or self.transport is None:
            return
        runtime = self.runtime
        runtime.metrics.bad_requests.inc((self.listener.name, str(status)))
        if runtime.config.access_log:
            cur = self.cur
            runtime.access_log(
                {
                    "time": round(time.time(), 3),
                    "listener": self.listener.name,
                    "client": self.peer.decode(),
                    "method": cur.method.decode() if cur is not None else "",
                    "path": cur.url.decode("latin-1") if cur is not None else "",
                    "status": status,
                    "rejected": True,
                }
            )
        active = self.active
        if active is not None and (active is not self.cur or self.streaming):
            # an earlier answer is owed or under way: answers could not stay in order
            self.batch.flush()
            self.closed = True
            self.transport.abort()
            return
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.fast_req is not None:
            self._fast_clear()
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        body = json.dumps({"error": REASONS.get(status, b"").decode(), "status": status})
        self.batch.flush()
        self.transport.write(simple_response(status, body.encode()))
        self.closed = True
        if status == 413:
            # the client may still be sending its body (nginx keeps lingering for 413 only)
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Half-close after the answer, then read and drop the rest, bounded (see LINGERING_*)."""
        transport = self.transport
        assert transport is not None
        now = self.loop.time()
        self.linger_until = now + LINGERING_TIME
        self.linger_last = now
        if transport.can_write_eof():
            transport.write_eof()  # sent once the 413 is written, as nginx's shutdown(SHUT_WR)
        if self.paused:
            self.paused = 0
            transport.resume_reading()

    def _linger_read(self, size: int) -> None:
        self.linger_bytes += size
        self.linger_last = self.loop.time()
        if self.linger_bytes > LINGERING_BYTES:
            self._linger_end()

    def _linger_end(self) -> None:
        self.linger_until = 0.0
        if self.transport is not None:
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        """Called by the sweeper: slow header senders and idle keep-alives are cut off."""
        if self.linger_until:
            if now >= self.linger_until or now - self.linger_last >= LINGERING_TIMEOUT:
                self._linger_end()
            return
        if self.fast_req is not None and now >= self.fast_deadline:
            self._fast_timeout()
        since = self.waiting_since
        if since is None or self.closed:
            return
        if self.partial:
            if now - self.head_start >= self.limits.header_timeout:
                self._reject(408)
        elif now - since >= KEEPALIVE_TIMEOUT and self.transport is not None:
            self.batch.flush()
            self.closed = True
            self.transport.close()

    def close_if_idle(self) -> None:
        """Draining: close a keep-alive connection between requests."""
        if self.active is None and not self.partial and self.transport is not None:
            self.batch.flush()
            self.closed = True
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.cur = Request()
        self.partial = True
        self.url_bytes = 0
        self.header_bytes = 0
        self.head_start = self.now

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.url_bytes += len(url)
        if self.url_bytes > self.limits.max_uri_bytes:
            raise _RejectError(414)
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            raise _RejectError(431)
        req = self.cur
        assert req is not None
        # sorted as they arrive: on_headers_complete then only joins the passed lines
        lname = name.lower()
        if lname not in _LOOKED_AT:
            req.kept += (name, b": ", value, b"\r\n")
            return
        req.looked.append((lname, value))
        if lname == b"host":
            req.kept += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None
        self.partial = False
        self.head_bytes = 0
        req.start = self.now
        parser = self.parser
        req.method = parser.get_method()
        # the headers the proxy acts on; on_header kept the ones it passes on
        xff = b""
        hosts = 0
        named: set[bytes] | None = None
        connection_header = False
        for lname, value in req.looked:
            if lname == b"content-length":
                try:
                    req.content_length = int(value)
                except ValueError:
                    raise _RejectError(400) from None
            elif lname == b"transfer-encoding":
                req.chunked = b"chunked" in value.lower()
            elif lname == b"expect":
                req.expect_continue = value.lower() == b"100-continue"
            elif lname == b"x-forwarded-for":
                xff = value + b", "
            elif lname == b"host":
                hosts += 1
            elif lname == b"connection":
                # headers the client names in Connection are hop-by-hop too (RFC 9110 7.6.1)
                named = {t.strip().lower() for t in value.split(b",")}
                connection_header = True
            elif lname == b"proxy-connection":
                connection_header = True
        # keep-alive is for HTTP/1.1 only. llhttp says keep-alive without a (Proxy-)Connection
        # header for 1.1 alone (0.9, 1.0 and 2.0 need "keep-alive" in one), so the version,
        # a string made per call, is only asked for when such a header came
        req.keep_alive = parser.should_keep_alive() and (
            not connection_header or parser.get_http_version() == "1.1"
        )
        kept = _drop_named(req.kept, named) if named else req.kept
        if hosts != 1 or req.url[:1] != b"/":
            kept, hosts = self._check_target(req, kept, hosts)
        route = req.route = self.listener.match(req.url.split(b"?", 1)[0])
        lines = [req.method, b" ", req.url, b" HTTP/1.1\r\n", *kept]
        if not hosts and route is not None:
            # as nginx's default $proxy_host: the upstream's name
            lines.append(route.host_line)
        lines += (b"X-Forwarded-For: ", xff, self.peer, b"\r\n") if xff else (self.xff_line,)
        req.head_prefix = b"".join(lines)
        if route is not None:
            req.buffered = route.buffer_all or (
                route.buffer_idempotent and req.method not in NON_IDEMPOTENT
            )
            req.retryable = route.buffer_idempotent and (
                route.config.retry_non_idempotent or req.method not in NON_IDEMPOTENT
            )
        if self.active is None:
            self.waiting_since = None
            self._start(req)
        else:
            self.queue.append(req)
            self._pause(PAUSE_PIPELINE)

    def _check_target(
        self, req: Request, kept: list[bytes], hosts: int
    ) -> tuple[list[bytes], int]:
        """Host rules, and an absolute-form target (GET http://host/path) made origin-form.

        HTTP/1.1 needs exactly one Host; a second one is a smuggling risk (RFC 9112 3.2; nginx:
        "client sent duplicate host header", "client sent HTTP/1.1 request without Host").
        An absolute-form target is routed and sent on by its path, as nginx does, with the
        target's host as Host (RFC 9112 3.2.2: a proxy replaces the received Host with it).
        """
        if hosts != 1 and (hosts or self.parser.get_http_version() == "1.1"):
            raise _RejectError(400)
        scheme, sep, rest = req.url.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            return kept, hosts
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        authority = rest[:cut].rpartition(b"@")[2]
        if not authority:
            raise _RejectError(400)
        path = rest[cut:]
        req.url = path if path[:1] == b"/" else b"/" + path
        return [*_drop_named(kept, {b"host"}), b"Host", b": ", authority, b"\r\n"], 1

    def on_body(self, data: bytes) -> None:
        req = self.cur
        assert req is not None
        sink = req.sink
        if sink is not None and not sink.closed:
            if req.upstream_chunked:
                sink.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                sink.write(data)
            return
        req.body.append(data)
        req.body_size += len(data)
        if req.buffered:
            if req.body_size > self.limits.max_retry_body_bytes:
                raise _RejectError(413)
        elif req.body_size > STREAM_BUFFER_HIGH:
            self._pause(PAUSE_WAIT)

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        self.cur = None
        req.complete = True
        sink = req.sink
        if sink is not None and req.upstream_chunked and not sink.closed:
            sink.write(b"0\r\n\r\n")
        if req is self.active and not req.started:
            self._dispatch(req)

    # serving
    def _start(self, req: Request) -> None:
        """A request's head is parsed and it is next in line."""
        if req.buffered and (req.content_length or 0) > self.limits.max_retry_body_bytes:
            self.cur = None
            self._reject(413)
            return
        self.active = req
        if req.expect_continue:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        streams_body = req.chunked or bool(req.content_length)
        if req.complete or (streams_body and (req.route is None or not req.buffered)):
            self._dispatch(req)
        # else: on_message_complete dispatches it, its body buffered meanwhile

    def _dispatch(self, req: Request) -> None:
        req.started = True
        if req.route is None:
            self._answer_local(req, 404, {"error": "no route", "listener": self.listener.name})
        else:
            # the fast path's pick stands even when it hands over: round-robin stays fair
            first = req.route.pick(_NONE_TRIED)
            if first is None or not (req.complete and self._try_fast(req, first)):
                self.task = self.loop.create_task(self._serve(req, [], _Outcome(), first))

    def _answer_local(self, req: Request, status: int, body_obj: dict[str, object]) -> None:
        body = json.dumps(body_obj).encode()
        keep = req.keep_alive and req.complete and not self.runtime.draining
        self._write(simple_response(status, body, close=not keep))
        self._finish(req, status, "", keep, 0)

    def _finish(self, req: Request, status: int, upstream: str, keep: bool, retries: int) -> None:
        listener = self.listener.name
        runtime = self.runtime
        metrics = runtime.metrics
        keys = req.route.keys if req.route is not None else self.listener.no_route_keys
        entry = keys.get(status)
        if entry is None:
            key = (listener, req.route.label if req.route else "", str(status))
            entry = keys[status] = (key, metrics.latency.series_for(key))
        key, series = entry
        counts = metrics.requests.values
        counts[key] = counts.get(key, 0.0) + 1.0
        now = self.loop.time()
        elapsed = now - req.start
        # Histogram.observe on a series found once per route and status
        series[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        series[-2] += elapsed
        series[-1] += 1
        if runtime.config.access_log:
            runtime.access_log(
                {
                    "time": round(time.time(), 3),
                    "listener": listener,
                    "route": key[1],
                    "client": self.peer.decode(),
                    "method": req.method.decode(),
                    "path": req.url.decode("latin-1"),
                    "status": status,
                    "upstream": upstream,
                    "retries": retries,
                    "duration_ms": round(elapsed * 1000, 3),
                }
            )
        self.active = None
        self.task = None
        self.streaming = False
        if self.closed or self.transport is None:
            return
        if not keep or self.runtime.draining:
            self.batch.flush()
            self.closed = True
            self.transport.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            if not self.queue:
                self._resume(PAUSE_PIPELINE)
            self._start(nxt)
        else:
            self.waiting_since = now
            if self.paused:
                self._resume(PAUSE_PIPELINE)

    async def _serve(
        self, req: Request, tried: list[Server], outcome: _Outcome, first: Server | None = None
    ) -> None:
        """Run the retry policy for one request; the chosen answer streams from callbacks."""
        route = req.route
        assert route is not None
        try:
            if not req.head:
                req.head = self._upstream_head(req)
            conn = await self._first_answer(req, route, tried, outcome, first)
            if route.mirror_group is not None:
                self._mirror(req, route, tried)
            if conn is not None:
                await self._wait_body(conn, route.group.config.read_timeout)
                if self.resp_keep_alive and req.complete and not conn.closed:
                    conn.release()
                else:
                    conn.abort()
                self.conn = None
                keep = req.keep_alive and req.complete and not self.resp_close_delimited
                self._finish(req, self.resp_status, outcome.server, keep, outcome.retries)
            elif outcome.held is not None:
                self.conn = None
                self._send_held(req, outcome)
            else:
                self.conn = None
                self._send_failure(req, route, outcome)
        except asyncio.CancelledError:
            # the client is gone: drop the upstream exchange rather than wait for it
            if self.conn is not None:
                self.conn.abort()
                self.conn = None
            raise
        except _AttemptFailedError:
            # the response broke after it started streaming: nothing can repair it
            if self.conn is not None:
                self.conn.abort()
                self.conn = None
            if self.transport is not None:
                self.batch.flush()
                self.closed = True
                self.transport.abort()
            self._finish(req, self.resp_status, outcome.server, False, outcome.retries)
        # no cleanup after _finish: it may already have started the next pipelined request

    def _try_fast(self, req: Request, server: Server) -> bool:
        """Steady state, without a coroutine: a complete request, a pooled connection.

        Anything unusual (no idle connection, a failure, a 404 to retry) hands over to _serve.
        """
        route = req.route
        assert route is not None
        group = route.group
        conn = server.pooled()
        if conn is None:
            return False
        req.head = self._upstream_head(req)
        more = len(group.servers) > 1 and group.has_untried([server])
        self._bind(conn, self._hold_for(req, route, more), futures=False)
        self.fast_req = req
        self.fast_server = server
        self.fast_stage = _WAIT_HEAD
        self._send(req, conn)
        self.fast_deadline = self.loop.time() + group.config.read_timeout
        return True

    def _fast_head(self) -> None:
        req = self.fast_req
        assert req is not None and req.route is not None
        if self.hold_body is not None:
            self.fast_stage = _READ_404
            return
        self.fast_stage = _STREAM_BODY
        if req.route.mirror_group is not None:
            self._mirror(req, req.route, [self.fast_server])

    def _fast_done(self) -> None:
        req, server, conn = self.fast_req, self.fast_server, self.conn
        assert req is not None and req.route is not None and conn is not None
        self.fast_req = None
        if self.resp_keep_alive and req.complete and not conn.closed:
            conn.release()
        else:
            conn.abort()
        self.conn = None
        if self.hold_body is not None:
            outcome = _Outcome()
            outcome.sent = True
            reason = _held_reason(self.resp_status)
            if reason == "http_404":
                self._hold(outcome, server)
            else:
                self.hold_body = None
                server.record_failure(reason)
            self._fast_retry(req, server, outcome, reason)
            return
        keep = req.keep_alive and req.complete and not self.resp_close_delimited
        self._finish(req, self.resp_status, server.name, keep, 0)

    def _fast_failed(self, reason: str, stale: bool) -> None:
        """The fast attempt broke before an answer started: retry per the policy, or answer."""
        req, server, stage = self.fast_req, self.fast_server, self.fast_stage
        assert req is not None and req.route is not None
        self._fast_clear()
        if self.conn is not None:
            self.conn.abort()
            self.conn = None
        if stage == _STREAM_BODY:
            # the response broke after it started streaming: nothing can repair it
            if self.transport is not None:
                self.batch.flush()
                self.closed = True
                self.transport.abort()
            self._finish(req, self.resp_status, server.name, False, 0)
            return
        outcome = _Outcome()
        outcome.sent = True
        if stale:
            # a pooled connection the server closed meanwhile: not a try of that server
            outcome.retries = 1
            self.runtime.metrics.retries.inc((self.listener.name, req.route.label, "error"))
            self.task = self.loop.create_task(self._serve(req, [], outcome))
            return
        server.record_failure(reason)
        self._fast_retry(req, server, outcome, reason)

    def _fast_retry(self, req: Request, server: Server, outcome: _Outcome, reason: str) -> None:
        route = req.route
        assert route is not None
        outcome.failure = reason
        tried = [server]
        if req.retryable and reason in route.config.retry_on and route.group.has_untried(tried):
            outcome.retries = 1
            self.runtime.metrics.retries.inc((self.listener.name, route.label, reason))
            self.task = self.loop.create_task(self._serve(req, tried, outcome))
            return
        if route.mirror_group is not None:
            self._mirror(req, route, tried)
        if outcome.held is not None:
            self._send_held(req, outcome)
        else:
            self._send_failure(req, route, outcome)

    def _fast_timeout(self) -> None:
        req, conn = self.fast_req, self.conn
        if req is None or conn is None or req.route is None:
            return
        timeout = req.route.group.config.read_timeout
        if self.fast_stage == _STREAM_BODY:
            idle = self.loop.time() - conn.last_read
            if self.write_paused or idle < timeout:
                self.fast_deadline = conn.last_read + timeout
                return
        self._fast_failed("timeout" if self.fast_stage == _WAIT_HEAD else "error", stale=False)

    def _fast_clear(self) -> None:
        self.fast_req = None

    async def _first_answer(
        self,
        req: Request,
        route: RouteState,
        tried: list[Server],
        outcome: _Outcome,
        first: Server | None,
    ) -> UpstreamConnection | None:
        """Try servers per the route's retry policy until one answers; None if none does."""
        group = route.group
        retry_on = route.config.retry_on
        while True:
            server, first = first or route.pick(tried), None
            if server is None:
                return None
            tried.append(server)
            more = group.has_untried(tried)
            try:
                conn = await self._attempt(req, server, route, more)
            except _AttemptFailedError as e:
                outcome.failure = e.reason
                outcome.sent = outcome.sent or e.sent
                if e.reason == "http_404":
                    self._hold(outcome, server)
                else:
                    self.hold_body = None  # a held 502/503 (JSON-RPC listener) is not kept
                    server.record_failure(e.reason)
                if (e.sent and not req.retryable) or e.reason not in retry_on or not more:
                    return None
                outcome.retries += 1
                self.runtime.metrics.retries.inc((self.listener.name, route.label, e.reason))
                continue
            outcome.server = server.name
            return conn

    async def _attempt(
        self, req: Request, server: Server, route: RouteState, more: bool
    ) -> UpstreamConnection:
        """Send req to server and wait for the response head; raises _AttemptFailedError."""
        timeout = route.group.config.read_timeout
        hold = self._hold_for(req, route, more)
        conn = server.pooled()
        if conn is not None:
            try:
                return await self._exchange(req, conn, hold, timeout, fresh=False)
            except _StaleConnectionError:
                # a pooled connection the server closed meanwhile: one fresh try, same server
                self.runtime.metrics.retries.inc((self.listener.name, route.label, "error"))
        try:
            conn = await server.connect()
        except TimeoutError:
            raise _AttemptFailedError("timeout", sent=False) from None
        except OSError:
            raise _AttemptFailedError("error", sent=False) from None
        return await self._exchange(req, conn, hold, timeout, fresh=True)

    async def _exchange(
        self,
        req: Request,
        conn: UpstreamConnection,
        hold: frozenset[int],
        timeout: float,
        fresh: bool,
    ) -> UpstreamConnection:
        self._bind(conn, hold)
        resendable = _resendable(req)
        self._send(req, conn)
        assert self.resp_head is not None
        try:
            await self._await(self.resp_head, timeout)
        except TimeoutError:
            conn.abort()
            raise _AttemptFailedError("timeout") from None
        except ConnectionError:
            conn.abort()
            if not fresh and not conn.got_data and resendable:
                raise _StaleConnectionError from None
            raise _AttemptFailedError("error") from None
        if self.hold_body is not None:
            # a 404 another server may cure: read it whole, keep it in case all fail
            assert self.resp_done is not None
            try:
                await self._await(self.resp_done, timeout)
            except (TimeoutError, ConnectionError):
                conn.abort()
                raise _AttemptFailedError("error") from None
            if self.resp_keep_alive and req.complete:
                conn.release()
            else:
                conn.abort()
            raise _AttemptFailedError(_held_reason(self.resp_status))
        return conn

    def _hold_for(self, req: Request, route: RouteState, more: bool) -> frozenset[int]:
        """Statuses of an answer read whole and held instead of streamed: a 404 that another
        server may cure (the JSON-RPC listener holds 502 and 503 instead)."""
        return HOLD_404 if route.retry_404 and more and req.retryable else HOLD_NONE

    def _bind(self, conn: UpstreamConnection, hold: frozenset[int], futures: bool = True) -> None:
        """Make this protocol the handler of conn's next response."""
        self.conn = conn
        if futures:
            self.resp_head = self.loop.create_future()
            self.resp_done = self.loop.create_future()
        else:
            self.resp_head = self.resp_done = None
        self.streaming = False
        self.hold_body = None
        self.pending = b""
        self.resp_close_delimited = False
        self._hold_statuses = hold
        conn.handler = self

    def _send(self, req: Request, conn: UpstreamConnection) -> None:
        if req.buffered:
            conn.write(req.head + b"".join(req.body) if req.body else req.head)
            return
        data = req.head
        if req.body:
            chunk = b"".join(req.body)
            req.body.clear()
            data += b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.upstream_chunked else chunk
        if req.complete:
            if req.upstream_chunked:
                data += b"0\r\n\r\n"
        else:
            req.sink = conn
        conn.write(data)
        self._resume(PAUSE_WAIT)

    def _take_held(self) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes] | None:
        """The 404 read whole; None when it was too big to keep."""
        assert self.hold_body is not None
        held = (self.resp_status, self.resp_reason, self.resp_headers, b"".join(self.hold_body))
        self.hold_body = None
        return None if self.hold_dropped else held

    def _hold(self, outcome: _Outcome, server: Server) -> None:
        """Keep the 404 just read as the answer should every other server fail."""
        held = self._take_held()
        if held is not None:
            outcome.held = held
            outcome.held_server = server.name

    def _send_held(self, req: Request, outcome: _Outcome) -> None:
        assert outcome.held is not None
        status, reason, headers, body = outcome.held
        keep = req.keep_alive and req.complete
        length: int | None = len(body)
        if req.method == b"HEAD":
            length = _passed_head(status, reason, headers)[1]  # what GET would carry
        self.resp_chunked = False
        self._write(self._client_head(status, reason, headers, length, keep) + body)
        self._finish(req, status, outcome.held_server, keep, outcome.retries)

    def _send_failure(self, req: Request, route: RouteState, outcome: _Outcome) -> None:
        status = 504 if outcome.failure == "timeout" else 502
        body: dict[str, object] = {
            "error": "no upstream answered",
            "listener": self.listener.name,
            "route": route.label,
            "upstream": route.group.config.name,
            "last_failure": outcome.failure,
        }
        self._answer_local(req, status, body)

    async def _await(self, fut: asyncio.Future[None], timeout: float) -> None:
        handle = self.loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()

    async def _wait_body(self, conn: UpstreamConnection, timeout: float) -> None:
        """The response body streams from callbacks; time out only when the server stalls."""
        done = self.resp_done
        assert done is not None
        while not done.done():
            waiter: asyncio.Future[None] = self.loop.create_future()
            done.add_done_callback(partial(_relay, waiter))
            handle = self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                if self.write_paused or self.loop.time() - conn.last_read < timeout:
                    continue
                raise _AttemptFailedError("timeout") from None
            finally:
                handle.cancel()
        if done.exception() is not None:
            raise _AttemptFailedError("error")

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.batch.write(self.transport, data)

    # upstream response callbacks (ResponseHandler)
    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.resp_status = status
        self.resp_reason = reason
        self.resp_headers = headers
        self.resp_keep_alive = keep_alive
        req = self.active
        assert req is not None
        no_body = req.method == b"HEAD" or status in (204, 304) or 100 <= status < 200
        # a server answers alike again and again: the passed lines are built once per shape
        cached = self.listener.head_cache
        if (
            cached is not None
            and cached[0] == status
            and cached[1] == reason
            and cached[2] == headers
        ):
            passed, length, chunked = cached[3], cached[4], cached[5]
        else:
            passed, length, chunked = _passed_head(status, reason, headers)
            self.listener.head_cache = (status, reason, headers, passed, length, chunked)
        self.resp_no_body = no_body
        self.resp_close_delimited = not no_body and length is None and not chunked
        hold = status in self._hold_statuses
        if hold:
            self.hold_body = []
            self.hold_size = 0
            self.hold_dropped = False
        else:
            self.streaming = True
            keep = req.keep_alive and not self.resp_close_delimited
            self.resp_chunked = not no_body and length is None and keep
            if no_body and req.method != b"HEAD":
                length = None  # a HEAD answer keeps the length GET would get, as nginx
            # held back briefly: it leaves with the first body bytes in one write
            self.pending = self._end_head(passed, length, keep)
        head = self.resp_head
        if head is not None and not head.done():
            head.set_result(None)
        elif self.fast_req is not None:
            self._fast_head()
        if no_body:
            # HEAD answers carry a length but no body: the parser would wait for it
            self.resp_keep_alive = False
            self._response_done()
        elif hold and (length or 0) > MAX_BUFFERED_404:
            self._drop_held()

    def _drop_held(self) -> None:
        """A 404 too big to keep: this exchange ends here, unread; the next server is asked."""
        self.hold_dropped = True
        assert self.hold_body is not None
        self.hold_body.clear()
        self.resp_keep_alive = False  # the rest of its body is on the connection: close it
        self._response_done()

    def on_response_body(self, data: bytes) -> None:
        hold = self.hold_body
        if hold is not None:
            if not self.hold_dropped:
                hold.append(data)
                self.hold_size += len(data)
                if self.hold_size > MAX_BUFFERED_404:
                    self._drop_held()
            return
        if self.resp_no_body:
            return
        if self.resp_chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if not self.closed and self.transport is not None:
            self.batch.write(self.transport, data)

    def on_response_complete(self, keep_alive: bool) -> None:
        self.resp_keep_alive = keep_alive and self.resp_keep_alive
        if self.resp_chunked and self.hold_body is None:
            self.pending += b"0\r\n\r\n"
        self._response_done()

    def on_data_end(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = b""

    def _response_done(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = b""
        conn = self.conn
        if conn is not None:
            conn.handler = None
        if self.fast_req is not None:
            self._fast_done()
            return
        done = self.resp_done
        if done is not None and not done.done():
            done.set_result(None)

    def on_upstream_lost(self, exc: BaseException | None) -> None:
        self.on_data_end()
        if self.fast_req is not None:
            conn = self.conn
            if self.fast_stage == _STREAM_BODY and self.resp_close_delimited:
                self.resp_keep_alive = False
                self._fast_done()
            else:
                got_data = conn is not None and conn.got_data
                self._fast_failed("error", stale=not got_data and _resendable(self.fast_req))
            return
        error = ConnectionError(str(exc))
        head = self.resp_head
        if head is not None and not head.done():
            _fail(head, error)
            return
        done = self.resp_done
        if done is not None and not done.done():
            if self.resp_close_delimited:
                self.resp_keep_alive = False
                done.set_result(None)
            else:
                _fail(done, error)

    def on_upstream_pause(self, paused: bool) -> None:
        if paused:
            self._pause(PAUSE_UPSTREAM)
        else:
            self._resume(PAUSE_UPSTREAM)

    # message building
    def _upstream_head(self, req: Request) -> bytes:
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

    def _client_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        length: int | None,
        keep: bool,
    ) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or REASONS.get(status, b"Status"))]
        for name, value in headers:
            lname = name.lower()
            if lname not in HOP_BY_HOP and lname != b"content-length":
                lines.append(b"%s: %s\r\n" % (name, value))
        return self._end_head(b"".join(lines), length, keep)

    def _end_head(self, passed: bytes, length: int | None, keep: bool) -> bytes:
        """Status line and passed headers, plus this hop's framing and Connection."""
        close = not keep or self.runtime.draining
        if length is not None:
            if not close:
                return passed + b"Content-Length: %d\r\n\r\n" % length
            framing = b"Content-Length: %d\r\n" % length
        elif self.resp_chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b""
        return b"".join((passed, framing, b"Connection: close\r\n\r\n" if close else b"\r\n"))

    # mirror
    def _mirror(self, req: Request, route: RouteState, tried: list[Server]) -> None:
        """Fire-and-forget copies to every other server of the mirror upstream, bounded."""
        mgroup = route.mirror_group
        mcfg = route.config.mirror
        assert mgroup is not None and mcfg is not None
        if req.method == b"HEAD":
            return  # nothing to teach a server, and pipelined HEAD answers cannot be framed
        runtime = self.runtime
        now = time.monotonic()
        payload = req.head + b"".join(req.body)
        deadline = self.loop.time() + mcfg.timeout
        key = (self.listener.name, route.label)
        copies = route.copies
        # by name: the mirror upstream may be another group listing the same servers
        sent = [s.name for s in tried]
        for server in mgroup.servers:
            if server.name in sent:
                continue
            if len(copies) >= mcfg.max_in_flight or not server.available(now):
                runtime.metrics.mirror.inc((*key, "dropped"))
                continue
            copy = MirrorCopy(payload, deadline, key, copies.discard)
            copies.add(copy)
            runtime.mirror_channel(server).submit(copy)


def _drop_named(kept: list[bytes], named: set[bytes]) -> list[bytes]:
    """The kept header lines (4 parts each) less those named in the Connection header."""
    return [
        part
        for i in range(0, len(kept), 4)
        if kept[i].lower() not in named
        for part in kept[i : i + 4]
    ]


def _passed_head(
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


def _held_reason(status: int) -> str:
    """The retry reason of a held answer: http_404 (or http_502, http_503)."""
    return f"http_{status}"


def _resendable(req: Request) -> bool:
    """Whether req may go again after a pooled connection died under it.

    As nginx: a POST, LOCK or PATCH already sent is not sent again unless the route allows it
    (then it is buffered), and a streamed body is gone.
    """
    if req.method in NON_IDEMPOTENT:
        return req.retryable
    return req.buffered or (not req.chunked and not req.content_length)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _fail(fut: asyncio.Future[None], error: BaseException) -> None:
    """Set an error; marked retrieved so a cancelled waiter leaves no "never retrieved" log."""
    fut.set_exception(error)
    fut.exception()


def _relay(waiter: asyncio.Future[None], _done: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
