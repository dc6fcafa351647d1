"""The JSON-RPC listener's relay: its steady state as bytes, without the HTTP engine.

A plain request (a POST read whole in one read, keep-alive, one Host, a body framed by
Content-Length within limits.max_retry_body_bytes, no Expect) goes to a pooled connection of
the primary as the client sent it, plus an X-Forwarded-For line (a second line of a field is
the same as a comma and the value: RFC 9110 5.3); the answer goes back as the node sent it.
Two small parsers only find where messages end and read the answer's status; the body is
classified (calls counted, unsafe ones kept off old connections) and its bytes kept until the
answer starts.

Everything else is the engine's (http_client, http_exchange, jsonrpc_proxy): a request split
over reads or pipelined, chunked, not a POST, no pooled connection, the last request of a
connection, draining. So is every failure: the node failing the request before its answer
starts (connection lost, garbage, no answer in read_timeout, a 502 or 503 to a JSON-RPC body)
hands the request's bytes to the engine with the node and the reason (`relay_failed`), and the
JSON-RPC policy goes on as if the engine had sent it: repeated on the next node when every
call is safe, else answered with an unknown outcome. Once an answer streams, the client's
connection ends with the node's: after an answer that says the node closes, or when the node's
connection dies (the client sees the answer cut, as in the engine). See proxy_image/README.md,
"JSON-RPC mode".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from .http_client import HttpClientProtocol
from .http_exchange import PAUSE_PIPELINE
from .jsonrpc import INVALID, MAX_DEPTH, ONE_SAFE, PLAIN_READS, SAFE, call_kinds
from .relay_scan import Lane, plain_answer, plain_request

if TYPE_CHECKING:
    from .config import Limits
    from .http_wire import Request
    from .jsonrpc_proxy import JsonRpcListener
    from .upstream import Server, UpstreamConnection

# what a node fails a request with besides a broken connection: a 502 or 503 (a node behind a
# gateway, or one shutting down), when the body is JSON-RPC (else passed on as it is)
HOLD_5XX = frozenset({502, 503})
# An unsafe call does not go on a pooled connection idle longer than this: geth closes idle
# HTTP connections after 120 s (GoQuorum rpc/http.go DefaultHTTPTimeouts.IdleTimeout), and a
# call written as that close crosses it fails with an unknown outcome though never read.
UNSAFE_MAX_IDLE = 60.0
# an answer's head longer than this is not a node's: the connection is dropped as broken
MAX_ANSWER_HEAD = 65536
# A relayed request from this size on counts in the process's body budget (bodies.py) while
# it is served, as the engine's buffered bodies do; a smaller one (most calls) does not: at
# most max_connections x 4 KiB uncounted, and no bookkeeping on the hot path.
COUNTED_FROM = 4096


class RequestScan:
    """httptools callbacks that only find where a request ends, its body and keep-alive."""

    __slots__ = ("begun", "body", "done", "keep", "parser")

    def __init__(self) -> None:
        self.begun = self.done = 0
        self.body = b""
        self.keep = False
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.begun += 1
        self.body = b""

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done += 1
        # asked here: llhttp forgets it once the message is complete
        self.keep = self.parser.should_keep_alive()

    def plain_body(self, data: bytes, limits: Limits) -> bytes | None:
        """The body of data when data is one plain request, read by llhttp; else None."""
        self.begun = self.done = 0
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.parser = httptools.HttpRequestParser(self)  # the engine reads what is wrong
            return None
        if self.done != 1 or self.begun != 1:
            if self.begun != self.done:
                # mid-message: the engine reads it from its start
                self.parser = httptools.HttpRequestParser(self)
            return None
        body = self.body
        # the head ends at the first blank line and the body ends the read: llhttp lets empty
        # lines pass before and after a request, which would move the X-Forwarded-For line
        size = data.find(b"\r\n\r\n") + 4
        if (
            size + len(body) != len(data)
            # as the engine counts a head if it reads it again after a failure (a header is
            # its name, value and 4 bytes: one more than `a:b` takes), as _relay_scan.c does
            or size + data.count(b"\r\n", 0, size) - 2 > limits.max_header_bytes
            or len(body) > limits.max_retry_body_bytes
            or not self.keep
            or not plain_head(data[:size], limits.max_uri_bytes)
        ):
            return None
        return body


def plain_head(head: bytes, max_uri_bytes: int) -> bool:
    """Whether a request head may go on as it came, as the engine would accept it: `POST /...
    HTTP/1.1` (origin-form, the target within limits.max_uri_bytes, nothing before it), one
    Host line (RFC 9112 3.2), no Transfer-Encoding (the body is framed by its length) and no
    Expect (the engine answers 100-continue). llhttp has checked its syntax: no space before a
    colon, no folded line."""
    line_end = head.find(b"\r\n")
    if (
        not head.startswith(b"POST /")
        or head[line_end - 9 : line_end] != b" HTTP/1.1"
        or line_end - 14 > max_uri_bytes  # "POST " and " HTTP/1.1" around the target
    ):
        return False
    lower = head.lower()
    return (
        lower.count(b"\r\nhost:") == 1
        and b"\r\ntransfer-encoding:" not in lower
        and b"\r\nexpect:" not in lower
    )


def closing(answer: bytes, interims: int) -> bytes:
    """An answer's first bytes, its head saying the connection closes after it (draining, as
    the engine says it); the interim answers before it (1xx, heads only) left as they are."""
    start = 0
    for _ in range(interims):
        start = answer.find(b"\r\n\r\n", start) + 4
    end = answer.find(b"\r\n\r\n", start) + 2
    return answer[:end] + b"Connection: close\r\n" + answer[end:]


class ResponseScan:
    """httptools callbacks for an upstream connection's answers: status, end, keep-alive.

    Interim answers (1xx) before the final one are counted, not taken for it; the relay passes
    them on, as a client must be able to read them (RFC 9110 15.2).
    """

    __slots__ = ("begun", "done", "head", "interim", "interims", "keep", "parser", "status")

    def __init__(self) -> None:
        self.begun = self.interims = self.status = 0
        self.head = self.done = self.keep = self.interim = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            self.interim = True
            self.interims += 1
            return
        self.head = True
        self.status = status

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True
        self.keep = self.parser.should_keep_alive()


class RelayClientProtocol(HttpClientProtocol):
    """A client connection of the JSON-RPC listener: the relay first, the engine otherwise."""

    # see UpstreamExchange
    __slots__ = (
        "backlog",
        "call_values",
        "data_received",
        "relay_answer",
        "relay_answering",
        "relay_conn",
        "relay_data",
        "relay_deadline",
        "relay_failed",
        "relay_head",
        "relay_kinds",
        "relay_start",
        "relay_status",
        "safe_key",
        "scan",
        "ws_req",
    )
    listener: JsonRpcListener

    def __init__(self, listener: JsonRpcListener) -> None:
        super().__init__(listener)
        # a WebSocket upgrade being handed over (jsonrpc_proxy): what follows is not requests
        self.ws_req: Request | None = None
        self.scan = RequestScan()
        # the request being relayed: its connection (None: none), bytes as they came,
        # calls' classes (None: not JSON-RPC), start and answer deadline
        self.relay_conn: UpstreamConnection | None = None
        self.relay_data = b""
        self.relay_kinds: tuple[str, ...] | None = None
        self.relay_start = 0.0
        self.relay_deadline = 0.0
        # its answer: bytes before the head is whole, then whether it streams to the client,
        # and its status
        self.relay_head = b""
        self.relay_answering = False
        self.relay_status = 0
        self.relay_answer: Callable[[bytes], None] = self._relay_answer
        # reads that came while an answer was relayed (a pipelining client)
        self.backlog: list[bytes] = []
        # the calls counter's values, and the key of a safe call's count (the hot path's)
        self.call_values = self.runtime.metrics.jsonrpc_calls.values
        self.safe_key = listener.call_counts[SAFE]
        # a relayed request the node failed, handed to the engine: (node, reason, whether the
        # connection died before any byte of an answer, when the request came)
        self.relay_failed: tuple[Server, str, bool, float] | None = None
        # What the loop calls with each read (a slot: the transport looks it up once; mypy
        # sees HttpClientProtocol's method, which the slot shadows). The compiled lane relays
        # the common request (one plain call of a PLAIN_READS method) as _relay does and
        # hands every other read to _read's path; its answer method passes the common answer
        # on as _relay_answer does (then _relay_done), and every other read to _relay_read.
        # Without it, _read and _relay_answer.
        read: Callable[[bytes], object] = self._read
        if Lane is not None:
            lane = Lane(self, PLAIN_READS, ONE_SAFE, HOLD_5XX, COUNTED_FROM, MAX_DEPTH)
            read = lane
            self.relay_answer = lane.answer
        self.data_received = read  # type: ignore[method-assign,assignment]

    # the connection
    def busy(self) -> bool:
        # a request read while an answer was relayed is owed an answer too
        return self.relay_conn is not None or bool(self.backlog) or super().busy()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay_conn is not None:
            self._relay_let_go()
        self.relay_conn = None  # the engine's _end_upstream aborts it (it is self.conn)
        self.relay_failed = None
        self.backlog.clear()
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.backlog and self.relay_conn is None and not super().busy() and not self.closed:
            self._relay_backlog()

    def check_timeouts(self, now: float) -> None:
        if self.relay_conn is not None and now >= self.relay_deadline:
            self._relay_timeout(now)
        super().check_timeouts(now)

    def _read(self, data: bytes) -> None:
        """A read from the client (data_received without the compiled lane)."""
        # busy() spelled out (both classes' parts): this runs for every read
        if (
            self.relay_conn is not None
            or self.backlog
            or self.ws_req is not None
            or self.active is not None
            or self.partial
            or self.queue
            or self.closed
            or self.last_request
            or not self._relay(data)
        ):
            self._received(data)

    def _received(self, data: bytes) -> None:
        """Bytes the relay does not send: the engine's, or the next request's."""
        if self.relay_conn is not None or self.backlog:
            # the next request came while an answer is relayed (or before the ones read then
            # are served): it waits in order, as pipelined ones
            self.backlog.append(data)
            self._pause(PAUSE_PIPELINE)
            return
        HttpClientProtocol.data_received(self, data)

    # requests
    def _relay(self, data: bytes) -> bool:
        """Send data to the primary as it is, when it is one plain request; else False.

        Written for speed (it runs for every call): what a request may be is the compiled
        scan's, else RequestScan's; its calls' classes are call_kinds'.
        """
        limits = self.limits
        if self.requests + 1 >= limits.keepalive_requests or self.runtime.draining:
            return False
        size = (
            plain_request(
                data, limits.max_header_bytes, limits.max_uri_bytes, limits.max_retry_body_bytes
            )
            if plain_request is not None
            else -1
        )
        if size >= 0:
            body = data[size:]
        else:
            plain = self.scan.plain_body(data, limits)
            if plain is None:
                return False
            body = plain
        kinds = call_kinds(body)
        listener = self.listener
        server = listener.pick_primary()
        if server is None:
            return False
        if kinds is not ONE_SAFE and (kinds is None or kinds.count(SAFE) != len(kinds)):
            self._drop_old_idle()
        idle = server.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                break
        else:
            return False
        self.requests += 1
        self.fresh = False
        self.waiting_since = None
        if kinds is ONE_SAFE:
            values = self.call_values
            values[self.safe_key] += 1.0
        else:
            self._count_calls(kinds)
        self.relay_kinds = kinds
        self.relay_data = data
        if len(data) >= COUNTED_FROM:
            self.budget.keep(len(data))
        self.relay_start = now = self.loop.time()
        self.relay_deadline = now + listener.read_timeout
        self.relay_answering = False
        self.conn = self.relay_conn = conn
        conn.handler = self
        conn.raw = self.relay_answer
        transport = conn.transport
        assert transport is not None
        cut = len(data) - len(body) - 2  # before the blank line that ends the head (as read)
        self.batch.write_now(transport, b"".join((data[:cut], self.xff_line, data[cut:])))
        return True

    def _count_calls(self, kinds: tuple[str, ...] | None) -> None:
        calls = self.runtime.metrics.jsonrpc_calls
        counts = self.listener.call_counts
        for kind in (INVALID,) if kinds is None else kinds:
            calls.inc(counts[kind])

    def _drop_old_idle(self) -> None:
        """Close pooled connections idle past UNSAFE_MAX_IDLE (the newest is used first)."""
        now = self.loop.time()
        for server in self.listener.route.group.servers:
            idle = server.idle
            if idle and now - idle[-1].last_read > UNSAFE_MAX_IDLE:
                for conn in list(idle):
                    conn.abort()

    # the answer
    def _relay_answer(self, data: bytes) -> None:
        conn = self.relay_conn
        assert conn is not None
        status = 0
        if not self.relay_answering and not self.relay_head and plain_answer is not None:
            # an answer's first read; the common one holds the whole answer, kept alive
            status = plain_answer(data)
            if (
                status
                and (status not in HOLD_5XX or self.relay_kinds is None)
                and not self.runtime.draining
            ):
                # passed on as it came, and done (written for speed: this runs for every call)
                self.relay_status = status
                transport = self.transport
                if not self.closed and transport is not None:
                    self.batch.write_now(transport, data)
                self._relay_done(conn, True)
                return
        self._relay_read(conn, data, status)

    def _relay_read(self, conn: UpstreamConnection, data: bytes, status: int) -> None:
        """A read of an answer other than the common one: in parts, 1xx first, held (a 502
        or 503 the request may be repeated after), or while draining. status: the compiled
        scan's, when it read the whole answer."""
        first = not self.relay_answering and not self.relay_head  # the answer's first read
        if status:
            whole = keep = True
            interims = 0
        else:
            scan = conn.scan
            if scan is None:  # this connection's first answer read here: a new scan
                scan = conn.scan = ResponseScan()
            elif first:
                scan.begun = scan.interims = 0
                scan.head = scan.done = False
            try:
                scan.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._relay_lost(conn)
                return
            whole = scan.done
            # nothing may come after the answer on the node's connection
            keep = scan.keep and scan.begun == 1 + scan.interims
            interims = scan.interims
            if not self.relay_answering:
                if not scan.head:
                    self.relay_head += data
                    if len(self.relay_head) > MAX_ANSWER_HEAD:
                        self._relay_lost(conn)
                    return
                status = scan.status
                if self.relay_head:
                    data = self.relay_head + data
                    self.relay_head = b""
        if not self.relay_answering:
            if status in HOLD_5XX and self.relay_kinds is not None:
                self._relay_fail(f"http_{status}", False)
                return
            self.relay_status = status
            self.relay_answering = True
            if self.runtime.draining:
                data = closing(data, interims)
        transport = self.transport
        if not self.closed and transport is not None:
            self.batch.write(transport, data)
        if whole:
            self._relay_done(conn, keep)

    def _relay_done(self, conn: UpstreamConnection, keep: bool) -> None:
        """The answer is whole: the node's connection goes back to the pool, unless the node
        closes it; then so does the client's (the answer, passed as it came, said so)."""
        self.relay_conn = None
        self._end_upstream(keep)
        now = conn.last_read  # the loop's time as this read came
        self._relay_count(now, conn.server)
        if self.closed:
            return
        if not keep or self.runtime.draining:
            self._close()
            return
        if not self.backlog:
            self.waiting_since = now
        elif not self.write_paused:
            self._relay_backlog()
        # else resume_writing goes on: pipelined answers wait for the client

    def _close(self) -> None:
        transport = self.transport
        assert transport is not None
        self.batch.flush()
        self.closed = True
        transport.close()

    def _relay_count(self, now: float, server: Server) -> None:
        """The relayed request is answered (or its answer broke): counted, its bytes let go."""
        data = self.relay_data
        self._count_answer(
            self.listener.route,
            self.relay_status,
            self.relay_start,
            now,
            b"POST",
            data[5 : data.find(b" ", 5)] if self.runtime.config.access_log else b"",
            server.name,
            0,
        )
        self._relay_let_go()

    def _relay_let_go(self) -> None:
        size = len(self.relay_data)
        if size >= COUNTED_FROM:
            self.budget.give_back(size)
        self.relay_data = b""

    def _relay_backlog(self) -> None:
        data = b"".join(self.backlog)
        self.backlog.clear()
        self._resume(PAUSE_PIPELINE)
        self.data_received(data)

    # failures
    def on_upstream_lost(self, exc: BaseException | None) -> None:
        conn = self.relay_conn
        if conn is None:
            super().on_upstream_lost(exc)
        else:
            self._relay_lost(conn)

    def _relay_lost(self, conn: UpstreamConnection) -> None:
        """The node's connection died or sent garbage."""
        if self.relay_answering:
            self._relay_broken(conn)
            return
        kinds = self.relay_kinds
        # as the engine's fast path: a pooled connection that died before any answer byte is
        # not a try of the node, when the request may go again (every call safe)
        stale = not conn.got_data and kinds is not None and all(k == SAFE for k in kinds)
        self._relay_fail("error", stale)

    def _relay_timeout(self, now: float) -> None:
        conn = self.relay_conn
        assert conn is not None
        timeout = self.listener.read_timeout
        if self.relay_answering:
            if self._client_held(now - timeout) or now - conn.last_read < timeout:
                self.relay_deadline = max(now, conn.last_read + timeout)
                return
            self._relay_broken(conn)
        elif self._client_held(self.relay_deadline - timeout):
            # the node was not read while the client held its answers back
            self.relay_deadline = now + timeout
        else:
            self._relay_fail("timeout", False)

    def _relay_broken(self, conn: UpstreamConnection) -> None:
        """The answer stopped after it started: the client's connection ends with what came.

        A close, not a reset: an answer delimited by the node's close (no length, no chunks)
        ends so; any other is cut short of its length or last chunk, which the client sees.
        """
        self.relay_conn = None
        self._end_upstream(False)
        self._relay_count(self.loop.time(), conn.server)
        self.backlog.clear()
        if self.transport is not None and not self.closed:
            self._close()

    def _relay_fail(self, reason: str, stale: bool) -> None:
        """Hand the request to the engine, which goes on as if its own first attempt failed."""
        conn = self.relay_conn
        assert conn is not None
        server = conn.server
        self.relay_conn = None
        self.relay_head = b""
        self._end_upstream(False)
        data = self.relay_data
        if self.backlog:
            data += b"".join(self.backlog)
            self.backlog.clear()
        self._relay_let_go()  # the engine counts the body again as it reads it
        self.relay_failed = (server, reason, stale, self.relay_start)
        self.requests -= 1  # the engine counts it as it reads it
        self._resume(PAUSE_PIPELINE)
        # the engine's next dispatch is this request's, now or once the client reads again
        HttpClientProtocol.data_received(self, data)
