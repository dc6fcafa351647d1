"""TCP stream listener: primary/backup servers (nginx stream + backup), bytes piped both ways."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

from .config import Listener
from .upstream import Server, UpstreamGroup

if TYPE_CHECKING:
    from .server import ProxyRuntime

# client bytes held while the upstream connects; more pauses the client
CONNECT_BUFFER_HIGH = 262144


class TcpListener:
    """Shared state of one TCP listener."""

    def __init__(self, config: Listener, runtime: ProxyRuntime) -> None:
        assert config.upstream is not None
        self.config = config
        self.name = config.name
        self.runtime = runtime
        self.group: UpstreamGroup = runtime.groups[config.upstream]
        self.connections: set[TcpClientProtocol] = set()

    def protocol(self) -> TcpClientProtocol:
        return TcpClientProtocol(self)

    def order(self) -> list[Server]:
        """Healthy servers in config order (primary, then backups), then the others."""
        now = time.monotonic()
        servers = self.group.servers
        return [s for s in servers if s.available(now)] + [
            s for s in servers if not s.available(now)
        ]


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, client: TcpClientProtocol) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.bytes_out += len(data)
        if client.transport is not None:
            client.transport.write(data)

    def eof_received(self) -> bool:
        self.client.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.closed:
            self.client.transport.resume_reading()


class TcpClientProtocol(asyncio.Protocol):
    """One client connection piped to the first server that accepts it."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.runtime = listener.runtime
        self.transport: asyncio.Transport | None = None
        self.upstream: _UpstreamSide | None = None
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.client_eof = False
        self.server_eof = False
        self.closed = False
        self.connect_task: asyncio.Task[None] | None = None
        self.server_name = ""
        self.peer = ""
        self.start = 0.0
        self.bytes_in = 0
        self.bytes_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unix"
        self.start = time.monotonic()
        self.listener.connections.add(self)
        if not self.runtime.connection_opened(self.listener.name):
            self.transport.abort()  # over limits.max_connections, with no idle HTTP one to shed
            return
        # under uvloop pause_reading() here does not stop data: data_received buffers instead
        self.connect_task = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
            return
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > CONNECT_BUFFER_HIGH and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        up = self.upstream
        if up is not None and up.transport is not None:
            if up.transport.can_write_eof():
                up.transport.write_eof()
            if self.server_eof:
                self._close()
        return True

    def upstream_eof(self) -> None:
        self.server_eof = True
        if self.transport is not None and not self.closed:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            if self.client_eof:
                self._close()

    def upstream_lost(self) -> None:
        self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self._close()

    def pause_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.listener.connections.discard(self)
        self.runtime.connection_closed(self.listener.name)
        if self.transport is not None:
            self.transport.close()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()
        result = "ok" if self.server_name else "no_upstream"
        self.runtime.metrics.tcp_connections.inc((self.listener.name, result))
        if self.runtime.config.access_log:
            self.runtime.access_log(
                {
                    "time": round(time.time(), 3),
                    "listener": self.listener.name,
                    "client": self.peer,
                    "upstream": self.server_name,
                    "bytes_in": self.bytes_in,
                    "bytes_out": self.bytes_out,
                    "duration_ms": round((time.monotonic() - self.start) * 1000, 3),
                }
            )

    async def _connect(self) -> None:
        """Try servers in order; the client sees no error while one of them accepts."""
        loop = asyncio.get_running_loop()
        group = self.listener.group
        metrics = self.runtime.metrics
        order = self.listener.order()
        for i, server in enumerate(order):
            try:
                if server.addr is None:
                    server.set_address(await group.resolver(server.host, server.port))
                assert server.addr is not None
                async with asyncio.timeout(group.config.connect_timeout):
                    _, side = await loop.create_connection(
                        lambda: _UpstreamSide(self), *server.addr
                    )
            except (OSError, TimeoutError) as e:
                reason = "timeout" if isinstance(e, TimeoutError) else "error"
                server.record_failure(reason)
                if i + 1 < len(order):
                    metrics.retries.inc((self.listener.name, "", reason))
                continue
            if self.closed:
                if side.transport is not None:
                    side.transport.close()
                return
            self.upstream = side
            self.server_name = server.name
            assert side.transport is not None and self.transport is not None
            if self.buffer:
                side.transport.write(b"".join(self.buffer))
                self.buffer.clear()
            if self.client_eof and side.transport.can_write_eof():
                side.transport.write_eof()
            self.transport.resume_reading()
            return
        self._close()
