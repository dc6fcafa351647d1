"""The JSON-RPC listener (`protocol: jsonrpc`): Quorum RPC that survives its primary.

The HTTP engine (http_client, http_exchange) with a JSON-RPC policy on top: every request goes
to one primary (the first healthy server, as the TCP listener picks it), a failed request goes
to the next server only when every call in it is safe to repeat (jsonrpc.py), and a failed
unsafe call is answered with a JSON-RPC error saying its outcome is unknown. The steady state
skips the engine (jsonrpc_relay.py relays plain requests as bytes and hands it every failure).
WebSocket upgrades become a byte stream to the primary (tcp_proxy.py). See
proxy_image/README.md, "JSON-RPC mode".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import httptools

from .config import Listener, Route
from .http_exchange import HOLD_NONE, NONE_TRIED, _AttemptFailedError, _Outcome
from .http_probe import http_request
from .http_routes import HttpListener, RouteState
from .http_wire import Request, passed_head
from .jsonrpc import (
    CLASSES,
    SAFE,
    Body,
    Call,
    Failure,
    as_success,
    call_kinds,
    dumps,
    failure_answer,
    loads,
    lookup_found,
    parse_body,
    settle_raw_transactions,
    transaction_lookup,
)
from .jsonrpc_relay import HOLD_5XX, RelayClientProtocol
from .tcp_proxy import TcpListener
from .upstream import Server, UpstreamConnection, UpstreamGroup

if TYPE_CHECKING:
    from .server import ProxyRuntime

log = logging.getLogger("quorum_proxy")

# what a node fails a request with: as the HTTP listener, plus a 502 or 503 (HOLD_5XX), each
# read whole and never streamed to the client
RETRY_ON = ("error", "timeout", "http_502", "http_503")
# a repeat's answer is read whole to rewrite "already known" up to this; a bigger one (a batch
# with large reads beside its transactions) streams on as it is
MAX_COLLECTED = 1 << 20


def pick_primary(group: UpstreamGroup, tried: list[Server]) -> Server | None:
    """The first server in config order that takes traffic and was not tried.

    As UpstreamGroup.pick without the round-robin: when no server takes traffic the untried
    ones are tried anyway (fail open); when some do and all of those were tried, None.
    """
    now = time.monotonic()
    fallback = None
    any_up = False
    for server in group.servers:
        if server.available(now):
            any_up = True
            if server not in tried:
                return server
        elif fallback is None and server not in tried:
            fallback = server
    return None if any_up else fallback


class JsonRpcListener(HttpListener):
    """An HTTP listener with one route, "/", to its upstream, and the JSON-RPC policy."""

    def __init__(self, config: Listener, runtime: ProxyRuntime) -> None:
        assert config.upstream is not None
        route = Route(
            prefix="/", upstream=config.upstream, retry_on=RETRY_ON, retry_non_idempotent=True
        )
        super().__init__(dataclasses.replace(config, routes=(route,)), runtime)
        state = self.routes[0]
        # every body is read whole: classified before it goes, kept for a repeat, 413 past
        # limits.max_retry_body_bytes
        state.buffer_all = True
        state.buffer_idempotent = True
        state.pick = self._pick
        self.route: RouteState = state
        self.primary: Server | None = None
        self.first = state.group.servers[0]
        self.read_timeout = state.group.config.read_timeout
        # WebSocket upgrades: handed to a TCP pipe to the primary (tcp_proxy.py)
        self.streams = TcpListener(config, runtime)
        metrics = runtime.metrics
        self.call_counts = {kind: (self.name, kind) for kind in CLASSES}
        for key in self.call_counts.values():
            metrics.jsonrpc_calls.inc(key, 0)
        for counter in (
            metrics.jsonrpc_repeats,
            metrics.jsonrpc_unknown_outcomes,
            metrics.jsonrpc_already_known,
            metrics.primary_changes,
        ):
            counter.inc((self.name,), 0)

    def protocol(self) -> JsonRpcClientProtocol:
        return JsonRpcClientProtocol(self)

    def pick_primary(self) -> Server | None:
        """The primary for a request's first attempt (a change is counted and logged)."""
        primary = self.primary
        # the steady state: the first server is primary and takes traffic
        if primary is self.first and primary.available(time.monotonic()):
            return primary
        return self._pick(NONE_TRIED)

    def _pick(self, tried: list[Server]) -> Server | None:
        server = pick_primary(self.route.group, tried)
        if not tried and server is not None and server is not self.primary:
            if self.primary is not None:
                self.runtime.metrics.primary_changes.inc((self.name,))
                log.warning(
                    "listener %s primary changed from %s to %s",
                    self.name,
                    self.primary.name,
                    server.name,
                )
            self.primary = server
        return server


def _upgrades_to_websocket(req: Request) -> bool:
    upgrade = connection = False
    for name, value in req.looked:
        if name == b"upgrade":
            upgrade = b"websocket" in value.lower()
        elif name == b"connection":
            connection = b"upgrade" in value.lower()
    return upgrade and connection


class JsonRpcClientProtocol(RelayClientProtocol):
    """A client connection of the JSON-RPC listener: the relay, else the engine's path."""

    # see UpstreamExchange
    __slots__ = (
        "collected",
        "collected_head",
        "collected_size",
        "collecting",
        "rpc_body",
        "rpc_data",
        "rpc_kinds",
        "rpc_sent",
        "rpc_server",
        "rpc_server_obj",
        "ws_rest",
    )
    listener: JsonRpcListener

    def __init__(self, listener: JsonRpcListener) -> None:
        super().__init__(listener)
        # the request being served: its body, its calls' classes (None: not JSON-RPC, passed
        # as is), and its calls, parsed from the body when a failure or a repeat needs them
        self.rpc_data = b""
        self.rpc_kinds: tuple[str, ...] | None = None
        self.rpc_body: Body | None = None
        # an attempt sent it and failed: a further attempt is a repeat
        self.rpc_sent = False
        # a repeated eth_sendRawTransaction's answer, read whole to rewrite "already known"
        self.collecting = False
        self.collected: list[bytes] = []
        self.collected_size = 0
        self.collected_head = b""
        # the server the last attempt went to, named in a failure answer
        self.rpc_server = ""
        self.rpc_server_obj: Server | None = None
        # a WebSocket upgrade (ws_req, RelayClientProtocol's): bytes that came after its head
        self.ws_rest: list[bytes] = []

    # requests
    def _dispatch(self, req: Request) -> None:
        data = b"".join(req.body)
        req.body = [data] if data else []
        kinds = call_kinds(data)
        self.rpc_data = data
        self.rpc_kinds = kinds
        self.rpc_body = None
        self.rpc_sent = False
        self.collecting = False
        # not JSON-RPC: never repeated; else never repeated once sent unless every call is safe
        req.retryable = kinds is not None and all(kind == SAFE for kind in kinds)
        failed = self.relay_failed
        if failed is not None:
            # the relay sent it (its calls counted) and the node failed it
            self.relay_failed = None
            server, reason, stale, req.start = failed
            req.started = True
            self._first_failed(req, server, reason, stale)
            return
        self._count_calls(kinds)
        if not req.retryable:
            self._drop_old_idle()
        super()._dispatch(req)

    @property
    def rpc(self) -> Body | None:
        """The request's calls (None: not JSON-RPC), parsed once when first asked."""
        if self.rpc_kinds is None:
            return None
        if self.rpc_body is None:
            self.rpc_body = parse_body(self.rpc_data)
        return self.rpc_body

    def _hold_for(self, req: Request, route: RouteState, more: bool) -> frozenset[int]:
        # a 502/503 is a failed call even when it cannot be repeated: answered as JSON-RPC
        return HOLD_5XX if self.rpc_kinds is not None else HOLD_NONE

    def _first_failed(self, req: Request, server: Server, reason: str, stale: bool) -> None:
        self.rpc_sent = True
        self.rpc_server = server.name
        super()._first_failed(req, server, reason, stale)

    def _fast_retry(self, req: Request, server: Server, outcome: _Outcome, reason: str) -> None:
        self.rpc_sent = True
        self.rpc_server = server.name
        super()._fast_retry(req, server, outcome, reason)

    async def _attempt(
        self, req: Request, server: Server, route: RouteState, more: bool
    ) -> UpstreamConnection:
        self.rpc_server = server.name
        self.rpc_server_obj = server
        repeat = self.rpc_sent
        # the node that failed may have passed the transaction on: "already known" here
        if repeat:
            rpc = self.rpc
            self.collecting = rpc is not None and rpc.sends_raw
        else:
            self.collecting = False
        try:
            conn = await super()._attempt(req, server, route, more)
        except _AttemptFailedError as e:
            if e.sent:
                self._count_repeat(repeat)
                self.rpc_sent = True
            raise
        self._count_repeat(repeat)
        return conn

    def _count_repeat(self, repeat: bool) -> None:
        """A body sent once more after a node failed it (a connect error sends nothing)."""
        if repeat:
            self.runtime.metrics.jsonrpc_repeats.inc((self.listener.name,))

    def _send_failure(self, req: Request, route: RouteState, outcome: _Outcome) -> None:
        body = self.rpc
        if body is None:
            super()._send_failure(req, route, outcome)  # not JSON-RPC: a 502/504 as HTTP
            return
        failure = Failure(
            reason=outcome.failure,
            sent=outcome.sent,
            repeated=outcome.sent and outcome.retries > 0,
            server=self.rpc_server,
        )
        data, unknown = failure_answer(body, failure)
        if unknown:
            self.runtime.metrics.jsonrpc_unknown_outcomes.inc((self.listener.name,), unknown)
        keep = req.keep_alive and req.complete and not self.runtime.draining
        self.resp_chunked = False
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        self._write(self._end_head(head, len(data), keep) + data)
        self._finish(req, 200, "", keep, outcome.retries)

    # a repeated eth_sendRawTransaction: its answer is read whole, then rewritten
    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if not self.collecting or status in self._hold_statuses:
            super().on_response_head(status, reason, headers, keep_alive)
            return
        passed, length, chunked = passed_head(status, reason, headers)
        self.resp_status = status
        self.resp_reason = reason
        self.resp_headers = headers
        self.resp_keep_alive = keep_alive
        self.resp_no_body = False
        self.resp_close_delimited = length is None and not chunked
        self.resp_chunked = False
        self.streaming = True
        self.pending = b""
        self.collected = []
        self.collected_size = 0
        self.collected_head = passed
        head = self.resp_head
        if head is not None and not head.done():
            head.set_result(None)

    def on_response_body(self, data: bytes) -> None:
        if self.collecting and self.hold_body is None:
            self.collected.append(data)
            self.collected_size += len(data)
            if self.collected_size > MAX_COLLECTED:
                self._stop_collecting()
            return
        super().on_response_body(data)

    def _stop_collecting(self) -> None:
        """Too big to rewrite: what came goes to the client, the rest streams as it comes."""
        self.collecting = False
        req = self.active
        assert req is not None
        keep = req.keep_alive and not self.resp_close_delimited
        self.resp_chunked = keep  # the length is unknown here: chunked, or until the close
        data = b"".join(self.collected)
        self.collected = []
        if self.resp_chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._write(self._end_head(self.collected_head, None, keep) + data)

    def _finish(self, req: Request, status: int, upstream: str, keep: bool, retries: int) -> None:
        if not self.collecting:
            super()._finish(req, status, upstream, keep, retries)
            return
        self.collecting = False
        data = b"".join(self.collected)
        self.collected = []
        rpc = self.rpc
        answer = None
        if rpc is not None and status == 200 and not self.closed:
            with contextlib.suppress(ValueError, RecursionError):
                answer = loads(data)
        if answer is None or rpc is None:
            self._write(self._end_head(self.collected_head, len(data), keep) + data)
            super()._finish(req, status, upstream, keep, retries)
            return
        made, low = settle_raw_transactions(rpc, answer)
        if not low:
            self._answer_settled(req, status, upstream, keep, retries, data, answer, made)
            return
        self.task = self.loop.create_task(
            self._answer_repeat(req, status, upstream, keep, retries, data, answer, made, low)
        )

    async def _answer_repeat(
        self,
        req: Request,
        status: int,
        upstream: str,
        keep: bool,
        retries: int,
        data: bytes,
        answer: Any,
        made: int,
        low: list[tuple[dict[str, Any], Call]],
    ) -> None:
        """A repeat's answer, with its raw transactions' errors made successes where they are.

        "nonce too low" to a repeated transaction may mean the failed node had it mined (a Raft
        block comes within 50 ms): the node that answered is asked for the transaction by hash
        (one-shot, within read_timeout), and if it has it, it is a success. A failed lookup
        leaves the node's answer as it was.
        """
        server = self.rpc_server_obj
        if low and server is not None and server.addr is not None:
            timeout = server.group.config.read_timeout
            for item, call in low:
                try:
                    async with asyncio.timeout(timeout):
                        _, found = await http_request(
                            server.addr,
                            "POST",
                            "/",
                            transaction_lookup(call.tx_hash),
                            headers=(("Content-Type", "application/json"),),
                            host=server.name,
                        )
                except (OSError, TimeoutError, httptools.HttpParserError):
                    continue
                if lookup_found(found):
                    as_success(item, call)
                    made += 1
        self._answer_settled(req, status, upstream, keep, retries, data, answer, made)

    def _answer_settled(
        self,
        req: Request,
        status: int,
        upstream: str,
        keep: bool,
        retries: int,
        data: bytes,
        answer: Any,
        made: int,
    ) -> None:
        if made:
            self.runtime.metrics.jsonrpc_already_known.inc((self.listener.name,), made)
            data = dumps(answer).encode()
        self._write(self._end_head(self.collected_head, len(data), keep) + data)
        super()._finish(req, status, upstream, keep, retries)

    # WebSocket upgrades: a byte stream to the primary, as the TCP listener pipes one
    def on_headers_complete(self) -> None:
        req = self.cur
        if (
            req is not None
            and self.active is None
            and not self.queue
            and _upgrades_to_websocket(req)
        ):
            self.partial = False
            self.ws_req = req  # the parser stops at the upgrade: data_received hands over
            return
        super().on_headers_complete()

    def _received(self, data: bytes) -> None:
        if self.ws_req is not None:
            self.ws_rest.append(data)  # after the head, from the engine's upgrade handling
            return
        super()._received(data)
        if self.ws_req is not None and not self.closed:
            self._hand_over_stream()

    def _hand_over_stream(self) -> None:
        """Give this connection to a TCP pipe to the primary, the upgrade request first."""
        req = self.ws_req
        transport = self.transport
        assert req is not None and transport is not None
        lines = [req.method, b" ", req.url, b" HTTP/1.1\r\n", *req.kept]
        xff = b""
        for name, value in req.looked:
            if name == b"x-forwarded-for":
                xff = value + b", "
            elif name != b"host":  # Host is among the kept lines
                lines += (name, b": ", value, b"\r\n")
        lines += (b"X-Forwarded-For: ", xff, self.peer, b"\r\n\r\n")
        self.closed = True  # nothing of the HTTP side acts on this connection any more
        self.listener.connections.discard(self)
        self.runtime.connection_closed(self.listener.name)
        stream = self.listener.streams.protocol()
        transport.set_protocol(stream)
        stream.connection_made(transport)
        stream.data_received(b"".join(lines) + b"".join(self.ws_rest))
        self.ws_rest = []
