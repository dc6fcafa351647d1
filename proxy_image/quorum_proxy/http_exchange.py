"""The upstream exchange of one client connection: fast path, retry loop, response relay.

UpstreamExchange is the base of the client protocol (http_client) and the ResponseHandler of
the upstream connection it holds. The client hands it each request (`_dispatch`); it sends the
request upstream, runs the route's retry policy (the coroutine-free fast path first, `_serve`
when anything is unusual), relays the response as it arrives (request bodies stream unless a
retry or a mirror may need them again), mirrors the request, and hands back through `_finish`.
`_end_upstream` is the one place an upstream connection is let go. Upstream-side bounds
(upstream send timeouts, response limits) belong here; the client side is http_client's.
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from functools import partial
from typing import TYPE_CHECKING

from .http_wire import NON_IDEMPOTENT, Request, passed_head, simple_response, upstream_head
from .mirror import MirrorCopy
from .upstream import Server, UpstreamConnection, write_batch

if TYPE_CHECKING:
    from .http_routes import HttpListener, RouteState

# a 404 body kept in case every other server fails too; past it the body is dropped, the
# connection closed and the next server asked (nginx retries any 404 and keeps none)
MAX_BUFFERED_404 = 65536
# client-side reasons to stop reading
PAUSE_PIPELINE = 1
PAUSE_UPSTREAM = 2
PAUSE_WAIT = 4
# the client does not read its answers: its next requests wait (backpressure)
PAUSE_CLIENT_WRITE = 8
# the connection's last request (limits.keepalive_requests) is read: nothing more is parsed
PAUSE_LAST = 16
# a connect that fails for want of descriptors or memory here says nothing of the server
LOCAL_CONNECT_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# stages of the coroutine-free path
_WAIT_HEAD = 0
_STREAM_BODY = 1
_READ_404 = 2
# the servers tried before a request's first attempt (shared: never appended to)
NONE_TRIED: list[Server] = []
# answers read whole and held while the next server is asked (see UpstreamExchange._hold_for)
HOLD_NONE: frozenset[int] = frozenset()
HOLD_404 = frozenset({404})


class _AttemptFailedError(Exception):
    """One attempt on one server failed; sent says whether the request left the proxy.

    local: the failure was this process's (no descriptor left), not the server's.
    """

    def __init__(self, reason: str, sent: bool = True, local: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent
        self.local = local


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


class UpstreamExchange(asyncio.Protocol):
    """A client connection's upstream side: one request at a time is sent and answered."""

    # Slots in every class of a client connection: an attribute is found at a fixed offset,
    # not in a dict of 75 keys (7% fewer instructions per relayed call). mypy checks that
    # every attribute assigned has one.
    __slots__ = (
        "_hold_statuses",
        "active",
        "batch",
        "closed",
        "conn",
        "fast_deadline",
        "fast_req",
        "fast_server",
        "fast_stage",
        "hold_body",
        "hold_dropped",
        "hold_size",
        "listener",
        "loop",
        "paused",
        "pending",
        "resp_chunked",
        "resp_close_delimited",
        "resp_done",
        "resp_head",
        "resp_headers",
        "resp_keep_alive",
        "resp_no_body",
        "resp_reason",
        "resp_status",
        "runtime",
        "streaming",
        "task",
        "transport",
        "write_paused",
        "write_resumed_at",
    )

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.runtime = listener.runtime
        self.loop = asyncio.get_running_loop()
        self.batch = write_batch(self.loop)
        self.transport: asyncio.Transport | None = None
        self.active: Request | None = None
        self.task: asyncio.Task[None] | None = None
        self.paused = 0
        self.closed = False
        self.write_paused = False
        # when the client last let its answers flow again (a timeout spanning a pause is the
        # client's doing, not the server's)
        self.write_resumed_at = 0.0
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
        self.pending = b""
        # the coroutine-free path (see _try_fast)
        self.fast_req: Request | None = None
        self.fast_server: Server
        self.fast_stage = 0
        # checked by the runtime's sweeper: cheaper than a timer per request
        self.fast_deadline = 0.0

    def _finish(self, req: Request, status: int, upstream: str, keep: bool, retries: int) -> None:
        """The request is answered: count it, then go on with the connection (http_client)."""
        raise NotImplementedError

    # the client's transport: while it cannot take more, the upstream is not read
    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self.conn
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_resumed_at = self.loop.time()
        conn = self.conn
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def _client_held(self, since: float) -> bool:
        """Whether the client held its answer back at some time since `since`."""
        return self.write_paused or self.write_resumed_at > since

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.batch.write(self.transport, data)

    def _end_upstream(self, reuse: bool) -> None:
        """The one place the upstream connection is let go: pooled again when reuse, else closed.

        UpstreamConnection.release closes a connection that died meanwhile.
        """
        conn = self.conn
        if conn is not None:
            self.conn = None
            if reuse:
                conn.release()
            else:
                conn.abort()

    def _broken(self, req: Request, upstream: str, retries: int) -> None:
        """The response broke after it started streaming: nothing can repair it; cut the client."""
        if self.transport is not None:
            self.batch.flush()
            self.closed = True
            self.transport.abort()
        self._finish(req, self.resp_status, upstream, False, retries)

    def _dispatch(self, req: Request) -> None:
        """Answer a request: a local 404 without a route, else the fast path or the retry loop."""
        req.started = True
        if req.route is None:
            self._answer_local(req, 404, {"error": "no route", "listener": self.listener.name})
        else:
            # the fast path's pick stands even when it hands over: round-robin stays fair
            first = req.route.pick(NONE_TRIED)
            if first is None or not (req.complete and self._try_fast(req, first)):
                self.task = self.loop.create_task(self._serve(req, [], _Outcome(), first))

    def _answer_local(self, req: Request, status: int, body_obj: dict[str, object]) -> None:
        body = json.dumps(body_obj).encode()
        keep = req.keep_alive and req.complete and not self.runtime.draining
        self._write(simple_response(status, body, close=not keep))
        self._finish(req, status, "", keep, 0)

    async def _serve(
        self, req: Request, tried: list[Server], outcome: _Outcome, first: Server | None = None
    ) -> None:
        """Run the retry policy for one request; the chosen answer streams from callbacks."""
        route = req.route
        assert route is not None
        try:
            if not req.head:
                req.head = upstream_head(req)
            conn = await self._first_answer(req, route, tried, outcome, first)
            if route.mirror_group is not None:
                self._mirror(req, route, tried)
            if conn is not None:
                await self._wait_body(conn, route.group.config.read_timeout)
                self._end_upstream(self.resp_keep_alive and req.complete)
                keep = req.keep_alive and req.complete and not self.resp_close_delimited
                self._finish(req, self.resp_status, outcome.server, keep, outcome.retries)
            # else every attempt let its connection go (_end_upstream)
            elif outcome.held is not None:
                self._send_held(req, outcome)
            else:
                self._send_failure(req, route, outcome)
        except asyncio.CancelledError:
            # the client is gone: drop the upstream exchange rather than wait for it
            self._end_upstream(False)
            raise
        except _AttemptFailedError:
            self._end_upstream(False)
            self._broken(req, outcome.server, outcome.retries)
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
        req.head = upstream_head(req)
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
        req, server = self.fast_req, self.fast_server
        assert req is not None and req.route is not None
        self.fast_req = None
        self._end_upstream(self.resp_keep_alive and req.complete)
        if self.hold_body is not None:
            outcome = _Outcome()
            outcome.sent = True
            reason = _held_reason(self.resp_status)
            if reason == "http_404":
                self._hold(outcome, server)
            else:
                self.hold_body = None  # a held 502/503 (JSON-RPC listener) is not kept
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
        self._end_upstream(False)
        if stage == _STREAM_BODY:
            self._broken(req, server.name, 0)
            return
        self._first_failed(req, server, reason, stale)

    def _first_failed(self, req: Request, server: Server, reason: str, stale: bool) -> None:
        """A first attempt sent on a pooled connection failed before its answer: retry per the
        policy, or answer. stale: the connection died before any answer byte."""
        assert req.route is not None
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
            if self._client_held(self.loop.time() - timeout) or idle < timeout:
                self.fast_deadline = conn.last_read + timeout
                return
        elif self._client_held(self.fast_deadline - timeout):
            # the upstream was not read while the client held its answers back
            self.fast_deadline = self.loop.time() + timeout
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
                    if not e.local:
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
        except OSError as e:
            local = e.errno in LOCAL_CONNECT_ERRORS
            raise _AttemptFailedError("error", sent=False, local=local) from None
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
            await self._await_upstream(self.resp_head, req, timeout)
        except TimeoutError:
            self._end_upstream(False)
            raise _AttemptFailedError("timeout") from None
        except ConnectionError:
            self._end_upstream(False)
            if not fresh and not conn.got_data and resendable:
                raise _StaleConnectionError from None
            raise _AttemptFailedError("error") from None
        if self.hold_body is not None:
            # a 404 another server may cure: read it whole, keep it in case all fail
            assert self.resp_done is not None
            try:
                await self._await_upstream(self.resp_done, req, timeout)
            except (TimeoutError, ConnectionError):
                self._end_upstream(False)
                raise _AttemptFailedError("error") from None
            self._end_upstream(self.resp_keep_alive and req.complete)
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
        passed, length, _ = passed_head(status, reason, headers)
        if req.method != b"HEAD":
            length = len(body)  # a HEAD answer keeps the length GET would carry
        self.resp_chunked = False
        self._write(self._end_head(passed, length, keep) + body)
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

    async def _await_upstream(
        self, fut: asyncio.Future[None], req: Request, timeout: float
    ) -> None:
        """Wait for the upstream, timing out on its delays only (nginx proxy_read_timeout).

        Time the client is the cause of is not the server's: answers the client holds back
        (the upstream is not read meanwhile), and a body the client is still sending while the
        upstream takes it (it may wait for the whole body to answer).
        """
        while not fut.done():
            waiter: asyncio.Future[None] = self.loop.create_future()
            fut.add_done_callback(partial(_relay, waiter))
            start = self.loop.time()
            handle = self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                if req.complete:
                    body_coming = req.completed_at > start
                else:
                    body_coming = not self.paused & PAUSE_UPSTREAM
                if body_coming or self._client_held(start):
                    continue
                raise
            finally:
                handle.cancel()
        fut.result()

    async def _wait_body(self, conn: UpstreamConnection, timeout: float) -> None:
        """The response body streams from callbacks; time out only when the server stalls."""
        done = self.resp_done
        assert done is not None
        while not done.done():
            waiter: asyncio.Future[None] = self.loop.create_future()
            done.add_done_callback(partial(_relay, waiter))
            start = self.loop.time()
            handle = self.loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                if self._client_held(start) or self.loop.time() - conn.last_read < timeout:
                    continue
                raise _AttemptFailedError("timeout") from None
            finally:
                handle.cancel()
        if done.exception() is not None:
            raise _AttemptFailedError("error")

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
            passed, length, chunked = passed_head(status, reason, headers)
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
