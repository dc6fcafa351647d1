"""The client side of an HTTP/1.1 connection: parsing, pipelining, client timeouts, linger.

HttpClientProtocol is the asyncio protocol of one client connection. It parses requests with
httptools (uvicorn's httptools_impl is the model), refuses bad ones, queues pipelined ones and
serves one at a time through its base, UpstreamExchange (http_exchange). Client-side bounds
(body and send timeouts, pipelining backpressure, connection shedding) belong here.
"""

from __future__ import annotations

import asyncio
import json
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from .bodies import BodyBudget
from .http_exchange import (
    PAUSE_CLIENT_WRITE,
    PAUSE_LAST,
    PAUSE_PIPELINE,
    PAUSE_WAIT,
    UpstreamExchange,
)
from .http_wire import (
    LOOKED_AT,
    NON_IDEMPOTENT,
    REASONS,
    RejectError,
    Request,
    drop_named,
    simple_response,
)
from .metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .http_routes import HttpListener, RouteState

STREAM_BUFFER_HIGH = 65536
# idle client connections between requests (nginx keepalive_timeout)
KEEPALIVE_TIMEOUT = 75.0
# after a 413, what the client still sends is read and dropped so that it reads the answer
# instead of a reset (nginx lingering_close; lingering_time 30s, lingering_timeout 5s:
# https://nginx.org/en/docs/http/ngx_http_core_module.html#lingering_time); nginx has no byte
# bound, this proxy stops reading at LINGERING_BYTES
LINGERING_TIME = 30.0
LINGERING_TIMEOUT = 5.0
LINGERING_BYTES = 64 << 20
# what a refusal says beyond its status, when the status alone would not tell why
DETAILS = {
    503: "request bodies kept for retries are at limits.max_buffered_body_bytes; "
    "this one was the largest unfinished: send it again later",
}


class _StopParsingError(Exception):
    """Raised in on_message_begin after a connection's last request: the rest is not read."""


class HttpClientProtocol(UpstreamExchange):
    """A client connection: parses requests, serves one at a time (pipelined ones queue)."""

    # see UpstreamExchange
    __slots__ = (
        "body_last",
        "budget",
        "cur",
        "fresh",
        "head_bytes",
        "head_start",
        "header_bytes",
        "last_request",
        "limits",
        "linger_bytes",
        "linger_last",
        "linger_until",
        "now",
        "parser",
        "partial",
        "peer",
        "queue",
        "requests",
        "send_since",
        "send_size",
        "url_bytes",
        "waiting_since",
        "xff_line",
    )

    def __init__(self, listener: HttpListener) -> None:
        super().__init__(listener)
        # abuse bounds, set per connection as they change: no request yet (header_timeout
        # counts from the accept), the body's last read (body_timeout), the write buffer's
        # size and since when it has not shrunk (send_timeout)
        self.fresh = True
        self.body_last = 0.0
        self.send_size = 0
        self.send_since = 0.0
        self.limits = listener.limits
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b""
        self.xff_line = b""
        self.cur: Request | None = None
        self.queue: deque[Request] = deque()
        self.url_bytes = 0
        self.header_bytes = 0
        self.head_bytes = 0
        self.waiting_since: float | None = 0.0
        self.partial = False
        self.head_start = 0.0
        self.now = 0.0
        # lingering close after a 413: until when (0: not lingering), last read, bytes read
        self.linger_until = 0.0
        self.linger_last = 0.0
        self.linger_bytes = 0
        # requests read on this connection (limits.keepalive_requests)
        self.requests = 0
        self.last_request = False
        self.budget: BodyBudget = self.runtime.bodies

    # connection events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.runtime.connection_opened(self.listener.name):
            self.closed = True
            self.transport.abort()  # over limits.max_connections, none idle to shed
            return
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if isinstance(peer, tuple) else b"unix"
        self.xff_line = b"X-Forwarded-For: %s\r\n" % self.peer
        self.waiting_since = self.loop.time()
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for req in (self.cur, self.active, *self.queue):
            if req is not None:
                self._release(req)
        self._fast_clear()
        self._end_upstream(False)  # its callbacks must not write to this closed transport
        self.listener.connections.discard(self)
        self.runtime.connection_closed(self.listener.name)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()

    def eof_received(self) -> bool | None:
        # as nginx does, a client's EOF means it is gone: close, which cancels the upstream work
        return None

    def pause_writing(self) -> None:
        # the answer under way waits upstream (the base), and so do the client's next requests;
        # a body still coming is read on (a client busy sending may read only once it is sent)
        super().pause_writing()
        active = self.active
        if active is None or active.complete:
            self._pause(PAUSE_CLIENT_WRITE)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._resume(PAUSE_CLIENT_WRITE)
        if self.active is None and self.queue and not self.closed:
            self._next()

    def busy(self) -> bool:
        """A request is being read, served or waits in line (draining waits for these)."""
        return self.active is not None or self.partial or bool(self.queue)

    def idle_since(self) -> float | None:
        """When this connection went idle (between requests, or none yet); None when busy."""
        if self.closed or self.busy():
            return None
        return self.waiting_since

    def shed(self) -> None:
        """Closed to make room under limits.max_connections (nginx: reusing connections)."""
        if self.transport is not None:
            self.batch.flush()
            self.closed = True
            self.transport.close()

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
            if isinstance(cause, _StopParsingError):
                self._pause(PAUSE_LAST)
                return
            self._reject(cause.status if isinstance(cause, RejectError) else 400)
            return
        except httptools.HttpParserError:
            self._reject(400)
            return
        cur = self.cur
        if cur is not None and cur.unaccounted:
            self._count_body_read(cur)
        if self.waiting_since is not None and self.partial and not self.closed:
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
        self._end_upstream(False)
        if self.cur is not None:
            self._release(self.cur)
        answer: dict[str, object] = {"error": REASONS.get(status, b"").decode(), "status": status}
        if status in DETAILS:
            answer["detail"] = DETAILS[status]
        self.batch.flush()
        self.transport.write(simple_response(status, json.dumps(answer).encode()))
        self.closed = True
        if status in (413, 503):
            # the client may still be sending its body (nginx keeps lingering for 413 only;
            # a 503 for the body bound comes mid-body too)
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
        """Called by the sweeper: slow header or body senders, clients that stop reading, and
        idle keep-alives are cut off."""
        if self._send_stalled(now):
            return
        if self.linger_until:
            if now >= self.linger_until or now - self.linger_last >= LINGERING_TIMEOUT:
                self._linger_end()
            return
        if self.fast_req is not None and now >= self.fast_deadline:
            self._fast_timeout()
        if self.closed or self.transport is None:
            return
        limits = self.limits
        if self.cur is not None and not self.partial:
            # reading a body (nginx client_body_timeout: 408 logged, nothing sent; this proxy
            # sends the 408 so that the client knows why). Time the proxy itself stops reading
            # (a slow upstream, a pipelined request waiting) is not the client's: the timer
            # starts again (to within a sweep) when reading resumes.
            if self.paused:
                self.body_last = now
            elif now - self.body_last >= limits.body_timeout:
                self._count_timeout("body")
                self._reject(408)
            return
        since = self.waiting_since
        if since is None:
            return
        if self.partial:
            if now - self.head_start >= limits.header_timeout:
                self._count_timeout("header")
                self._reject(408)
        elif self.fresh:
            # nothing sent since the accept: closed without an answer, as nginx does at
            # client_header_timeout ("client timed out while waiting for request")
            if now - since >= limits.header_timeout:
                self._count_timeout("header")
                self.closed = True
                self.transport.close()
        elif now - since >= KEEPALIVE_TIMEOUT:
            self.batch.flush()
            self.closed = True
            self.transport.close()

    def _send_stalled(self, now: float) -> bool:
        """nginx send_timeout: the client has not taken a byte of what is queued for it for
        limits.send_timeout; then this connection and its upstream one are aborted (the upstream
        answer is incomplete: never pooled)."""
        transport = self.transport
        if transport is None:
            return False
        size = transport.get_write_buffer_size()
        if not size:
            self.send_since = 0.0
            return False
        if not self.send_since or size < self.send_size:
            self.send_since = now
        self.send_size = size
        if now - self.send_since < self.limits.send_timeout:
            return False
        self._count_timeout("send")
        self._end_upstream(False)
        self.closed = True
        self.linger_until = 0.0
        transport.abort()
        return True

    def _count_timeout(self, kind: str) -> None:
        self.runtime.metrics.client_timeouts.inc((self.listener.name, kind))

    # request bodies kept in memory (a BodyHolder of the process's BodyBudget)
    def held_body_bytes(self) -> int:
        return self.cur.accounted if self.cur is not None else 0

    def refuse_body(self) -> None:
        """The largest unfinished body at the global bound: 503 (see bodies.py). Never inside
        this connection's parser callbacks: a body still coming is counted after its read."""
        if self.cur is not None:
            self._release(self.cur)
        self._reject(503)

    def _count_body_read(self, req: Request) -> None:
        """A body still coming: what this read brought counts, and the body is a candidate."""
        self.budget.add(self, req.take_unaccounted())

    def _release(self, req: Request) -> None:
        if req.accounted:
            self.budget.release(self, req.accounted)
            req.accounted = 0
            req.body.clear()
        elif req.unaccounted:
            req.unaccounted = 0
            req.body.clear()

    def close_if_idle(self) -> None:
        """Draining: close a keep-alive connection between requests."""
        if not self.busy() and self.transport is not None:
            self.batch.flush()
            self.closed = True
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.last_request:
            raise _StopParsingError
        self.cur = Request()
        self.fresh = False
        self.partial = True
        self.url_bytes = 0
        self.header_bytes = 0
        self.head_start = self.now

    def on_url(self, url: bytes) -> None:
        assert self.cur is not None
        self.url_bytes += len(url)
        if self.url_bytes > self.limits.max_uri_bytes:
            raise RejectError(414)
        self.cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:
            raise RejectError(431)
        req = self.cur
        assert req is not None
        # sorted as they arrive: on_headers_complete then only joins the passed lines
        lname = name.lower()
        if lname not in LOOKED_AT:
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
        req.start = self.body_last = self.now
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
                    raise RejectError(400) from None
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
        self._count_request(req)
        kept = drop_named(req.kept, named) if named else req.kept
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
        self.waiting_since = None
        if self.active is None and not self.write_paused:
            self._start(req)
        else:
            # an answer is under way, or the last one is not read yet: resume_writing starts it
            self.queue.append(req)
            self._pause(PAUSE_PIPELINE)

    def _count_request(self, req: Request) -> None:
        """limits.keepalive_requests: as nginx, the last answer says Connection: close and
        nothing after that request is read."""
        self.requests += 1
        if self.requests >= self.limits.keepalive_requests:
            req.keep_alive = False
            self.last_request = True

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
            raise RejectError(400)
        scheme, sep, rest = req.url.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            return kept, hosts
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        authority = rest[:cut].rpartition(b"@")[2]
        if not authority:
            raise RejectError(400)
        path = rest[cut:]
        req.url = path if path[:1] == b"/" else b"/" + path
        return [*drop_named(kept, {b"host"}), b"Host", b": ", authority, b"\r\n"], 1

    def on_body(self, data: bytes) -> None:
        req = self.cur
        assert req is not None
        self.body_last = self.now
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
                raise RejectError(413)
            req.unaccounted += len(data)  # counted as this read ends (data_received)
        elif req.body_size > STREAM_BUFFER_HIGH:
            self._pause(PAUSE_WAIT)

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        self.cur = None
        req.complete = True
        req.completed_at = self.now
        if req.accounted:
            self.budget.done_reading(self)  # counted on earlier reads: no longer a candidate
        if req.unaccounted:
            # whole: counted while it is served, never refused
            self.budget.keep(req.take_unaccounted())
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

    def _count_answer(
        self,
        route: RouteState | None,
        status: int,
        start: float,
        now: float,
        method: bytes,
        url: bytes,
        upstream: str,
        retries: int,
    ) -> None:
        """An answered request in the metrics (count, latency) and the access log."""
        listener = self.listener.name
        runtime = self.runtime
        metrics = runtime.metrics
        keys = route.keys if route is not None else self.listener.no_route_keys
        entry = keys.get(status)
        if entry is None:
            key = (listener, route.label if route else "", str(status))
            entry = keys[status] = (key, metrics.latency.series_for(key))
        key, series = entry
        counts = metrics.requests.values
        counts[key] = counts.get(key, 0.0) + 1.0
        elapsed = now - start
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
                    "method": method.decode(),
                    "path": url.decode("latin-1"),
                    "status": status,
                    "upstream": upstream,
                    "retries": retries,
                    "duration_ms": round(elapsed * 1000, 3),
                }
            )

    def _finish(self, req: Request, status: int, upstream: str, keep: bool, retries: int) -> None:
        now = self.loop.time()
        self._count_answer(
            req.route, status, req.start, now, req.method, req.url, upstream, retries
        )
        self.active = None
        self.task = None
        self.streaming = False
        self._release(req)
        if self.closed or self.transport is None:
            return
        if not keep or self.runtime.draining:
            self.batch.flush()
            self.closed = True
            if self.last_request:
                # pipelined requests may follow unread: a close now would reset the connection
                # and lose the answers in flight (nginx lingers then too)
                self._linger()
            else:
                self.transport.close()
            return
        if self.queue:
            # the answer's bytes reach the transport now, so that its flow control decides
            self.batch.flush()
            if not self.write_paused:
                self._next()
            # else resume_writing starts the next one: pipelined answers wait for the client
        else:
            self.waiting_since = now
            if self.paused:
                self._resume(PAUSE_PIPELINE)

    def _next(self) -> None:
        """Serve the next pipelined request."""
        nxt = self.queue.popleft()
        if not self.queue:
            self._resume(PAUSE_PIPELINE)
        self._start(nxt)
