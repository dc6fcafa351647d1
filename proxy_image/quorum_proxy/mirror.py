"""Mirror copies: fire-and-forget, pipelined per target server.

Copies made during one turn of the event loop leave together, in one write, on one connection per
target server (HTTP/1.1 pipelining); their answers come back in order and are only counted. This
keeps a mirrored request to about one extra syscall per loop turn instead of two per copy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from .metrics import Metrics
from .upstream import Server, UpstreamConnection

if TYPE_CHECKING:
    from collections.abc import Callable


class MirrorCopy:
    """One copy of a request for one server; finished exactly once with a result."""

    __slots__ = ("deadline", "done", "key", "on_done", "payload", "status")

    def __init__(
        self,
        payload: bytes,
        deadline: float,
        key: tuple[str, str],
        on_done: Callable[[MirrorCopy], None],
    ) -> None:
        self.payload = payload
        self.deadline = deadline
        self.key = key  # (listener, route) for the metric
        self.on_done = on_done
        self.done = False
        self.status = 0


class MirrorChannel:
    """The copies bound for one server: a queue, one dedicated connection, answers in order."""

    def __init__(self, server: Server, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.conn: UpstreamConnection | None = None
        self.connecting = False
        self.outbox: list[MirrorCopy] = []
        self.in_flight: deque[MirrorCopy] = deque()
        self.flush_scheduled = False

    def submit(self, copy: MirrorCopy) -> None:
        self.outbox.append(copy)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if not self.outbox:
            return
        if self._moved():
            # no new copy to the name's old address; the connection goes once the copies on it
            # are answered (on_response_complete flushes again)
            if self.in_flight:
                return
            self._drop_connection()
        conn = self.conn
        if conn is None or conn.closed:
            self.conn = None
            if not self.connecting:
                self.connecting = True
                task = self.loop.create_task(self.server.connect())
                task.add_done_callback(self._connected)
            return
        batch = [c for c in self.outbox if not c.done]
        self.outbox.clear()
        self.in_flight.extend(batch)
        conn.write(b"".join(c.payload for c in batch))

    def _connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        self.connecting = False
        if task.cancelled() or task.exception() is not None:
            for copy in self.outbox:
                self._finish(copy, "error")
            self.outbox.clear()
            return
        self.conn = task.result()
        self.conn.handler = self
        self._flush()

    def _finish(self, copy: MirrorCopy, result: str) -> None:
        if copy.done:
            return
        copy.done = True
        self.metrics.mirror.inc((*copy.key, result))
        copy.on_done(copy)

    def check_timeouts(self, now: float) -> None:
        """A copy past its deadline: the connection is stuck behind it, so drop them all."""
        expired = [c for c in self.outbox if now >= c.deadline]
        for copy in expired:
            self._finish(copy, "timeout")
        if expired:
            self.outbox = [c for c in self.outbox if not c.done]
        if self.in_flight and now >= self.in_flight[0].deadline:
            for copy in self.in_flight:
                self._finish(copy, "timeout")
            self.in_flight.clear()
            self._drop_connection()

    def close(self) -> None:
        for copy in (*self.in_flight, *self.outbox):
            self._finish(copy, "error")
        self.in_flight.clear()
        self.outbox.clear()
        self._drop_connection()

    def _moved(self) -> bool:
        conn = self.conn
        return conn is not None and conn.addr is not self.server.addr

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()

    # ResponseHandler of the channel's connection
    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        if self.in_flight:
            self.in_flight[0].status = status

    def on_response_body(self, data: bytes) -> None:
        return

    def on_response_complete(self, keep_alive: bool) -> None:
        if self.in_flight:
            copy = self.in_flight.popleft()
            self._finish(copy, "ok" if copy.status < 400 else "http_error")
        if not keep_alive or (self._moved() and not self.in_flight):
            self._drop_connection()
            for copy in self.in_flight:
                self._finish(copy, "error")
            self.in_flight.clear()
            if self.outbox:
                self._flush()

    def on_upstream_lost(self, exc: BaseException | None) -> None:
        self.conn = None
        for copy in self.in_flight:
            self._finish(copy, "error")
        self.in_flight.clear()
        if self.outbox and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def on_upstream_pause(self, paused: bool) -> None:
        return

    def on_data_end(self) -> None:
        return
