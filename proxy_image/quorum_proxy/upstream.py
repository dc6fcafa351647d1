"""Upstream groups (Envoy clusters): servers, DNS re-resolution, health, connection pools."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from .config import HealthCheck, Upstream
from .http_probe import http_request
from .metrics import Metrics
from .tessera_check import run_tessera_check

if TYPE_CHECKING:
    from .jsonrpc_relay import ResponseScan

log = logging.getLogger("quorum_proxy")

Resolver = Callable[[str, int], Awaitable[tuple[str, int]]]
# getaddrinfo's answers for a name that does not exist (NXDOMAIN, or no address record), as
# opposed to EAI_AGAIN and the like when DNS itself fails: see getaddrinfo(3).
NO_SUCH_NAME = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)
MAX_IDLE_PER_SERVER = 512
# bytes of small writes held for the end of a loop iteration (see WriteBatch)
BATCH_BYTES = 65536


async def system_resolver(host: str, port: int) -> tuple[str, int]:
    """The first address of host, IPv4 preferred, through the loop's getaddrinfo."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {host}")
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


def _literal_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class WriteBatch:
    """Writes made while the loop handles one batch of events, sent together at its end.

    A peer process that sleeps is woken by the first write and finds the rest ready: one
    wake-up per burst instead of one per request, which is most of what a write costs here.
    Whoever closes a transport flushes first, so that nothing written before is lost. Past
    BATCH_BYTES it writes at once: a transport's flow control (pause_writing) must see a
    streamed body as it comes, or a burst of reads would pile up unbounded.
    """

    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items: list[tuple[asyncio.Transport, bytes]] = []
        self.size = 0

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        items = self.items
        size = self.size + len(data)
        if size > BATCH_BYTES:
            self.flush()
            transport.write(data)
            return
        if not items:
            asyncio.get_running_loop().call_soon(self.flush)
        items.append((transport, data))
        self.size = size

    def write_now(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write at once (the JSON-RPC relay: one write per call, nothing to gather), unless
        earlier writes wait here (they go first) or the transport closes (dropped, as flush
        drops them)."""
        if self.items or transport.is_closing():
            self.write(transport, data)
        else:
            transport.write(data)

    def flush(self) -> None:
        items = self.items
        if items:
            self.items = []
            self.size = 0
            for transport, data in items:
                if not transport.is_closing():
                    transport.write(data)


# one per loop (tests run several loops in threads); a batch holds no reference to its loop
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = (
    weakref.WeakKeyDictionary()
)


def write_batch(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's WriteBatch."""
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch()
    return batch


class ResponseHandler(Protocol):
    """What an upstream connection reports a response to."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...

    def on_response_body(self, data: bytes) -> None: ...

    def on_response_complete(self, keep_alive: bool) -> None: ...

    def on_upstream_lost(self, exc: BaseException | None) -> None: ...

    def on_upstream_pause(self, paused: bool) -> None: ...

    def on_data_end(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a server; pooled between requests."""

    __slots__ = (
        "addr",
        "batch",
        "closed",
        "got_data",
        "handler",
        "headers",
        "interim",
        "last_read",
        "loop",
        "parser",
        "raw",
        "reason",
        "scan",
        "server",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        # the server's address when connecting: set_address replaces the tuple on a change
        self.addr = server.addr
        self.loop = asyncio.get_running_loop()
        self.batch = write_batch(self.loop)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.handler: ResponseHandler | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.closed = False
        self.got_data = False
        self.interim = False
        self.last_read = 0.0
        # set by the JSON-RPC relay (jsonrpc_relay.py) for one response: the bytes go to it as
        # they come, unparsed here; its own parser of this connection's answers
        self.raw: Callable[[bytes], None] | None = None
        self.scan: ResponseScan | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        idle = self.server.idle
        if self in idle:
            idle.remove(self)
        handler = self.handler
        if handler is not None:
            self.handler = None
            handler.on_upstream_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.handler is None:
            # a server talking on an idle connection is out of step: drop it
            self.abort()
            return
        self.got_data = True
        self.last_read = self.loop.time()
        raw = self.raw
        if raw is not None:
            raw(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as e:
            handler = self.handler
            self.handler = None
            self.abort()
            if handler is not None:
                handler.on_upstream_lost(e)
            return
        handler = self.handler
        if handler is not None:
            handler.on_data_end()

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_pause(True)

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.on_upstream_pause(False)

    # httptools callbacks (no on_message_begin: on_headers_complete resets, one call less)
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers, reason = self.headers, self.reason
        self.headers = []
        self.reason = b""
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.interim = True
            return
        if self.handler is not None:
            self.handler.on_response_head(status, reason, headers, parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.handler is not None:
            self.handler.on_response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        handler = self.handler
        if handler is not None:
            handler.on_response_complete(self.parser.should_keep_alive())

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.batch.write(self.transport, data)

    def release(self) -> None:
        """Back to the pool after a complete exchange; not if the name moved meanwhile."""
        self.handler = None
        self.raw = None
        self.got_data = False
        if self.transport is not None:
            self.transport.resume_reading()
        server = self.server
        if self.closed or self.addr is not server.addr or len(server.idle) >= MAX_IDLE_PER_SERVER:
            self.abort()
        else:
            self.server.idle.append(self)

    def abort(self) -> None:
        self.handler = None
        self.raw = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
        if self in self.server.idle:
            self.server.idle.remove(self)


class Server:
    """One configured server: its address, health and idle connections."""

    def __init__(self, group: UpstreamGroup, host: str, port: int) -> None:
        self.group = group
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.addr: tuple[str, int] | None = (host, port) if _literal_ip(host) else None
        self.idle: list[UpstreamConnection] = []
        self.fails = 0
        self.first_fail = 0.0
        self.down_until = 0.0
        self.active_ok = True
        self.rise_count = 0
        self.fall_count = 0
        self.last_block: int | None = None
        self.last_block_change = 0.0
        # DNS said the name does not exist: the machine is not created yet, or was removed.
        self.absent = False

    def available(self, now: float) -> bool:
        return self.active_ok and now >= self.down_until

    async def resolve(self) -> tuple[str, int]:
        """The server's address now; notes whether DNS says the name does not exist."""
        try:
            addr = await self.group.resolver(self.host, self.port)
        except socket.gaierror as e:
            self.absent = e.errno in NO_SUCH_NAME
            raise
        self.absent = False
        return addr

    def record_failure(self, reason: str) -> None:
        """Passive health: max_fails failures within fail_timeout take it out for fail_timeout."""
        cfg = self.group.config
        self.group.metrics.upstream_failures.inc((cfg.name, self.name, reason))
        if cfg.max_fails == 0:
            return
        now = time.monotonic()
        if now - self.first_fail > cfg.fail_timeout:
            self.fails = 0
            self.first_fail = now
        self.fails += 1
        if self.fails >= cfg.max_fails:
            self.down_until = now + cfg.fail_timeout
            self.fails = 0
            log.warning(
                "upstream %s server %s down for %ss", cfg.name, self.name, cfg.fail_timeout
            )

    def set_address(self, addr: tuple[str, int]) -> None:
        if addr != self.addr:
            if self.addr is not None:
                log.warning(
                    "upstream %s server %s now at %s", self.group.config.name, self.name, addr
                )
            self.addr = addr
            for conn in list(self.idle):
                conn.abort()

    async def connect(self) -> UpstreamConnection:
        """A fresh connection within connect_timeout; raises OSError or TimeoutError."""
        if self.addr is None:
            self.set_address(await self.resolve())
        addr = self.addr
        assert addr is not None
        loop = asyncio.get_running_loop()
        server = self
        # asyncio.timeout, unlike 3.11's wait_for, never swallows a cancellation
        async with asyncio.timeout(self.group.config.connect_timeout):
            _, proto = await loop.create_connection(lambda: UpstreamConnection(server), *addr)
        proto.addr = addr  # the name may have moved while connecting: release() will see it
        return proto

    def pooled(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None


class UpstreamGroup:
    """An upstream of the config: round-robin, primary/backup order, fail-open picking."""

    def __init__(self, config: Upstream, metrics: Metrics, resolver: Resolver) -> None:
        self.config = config
        self.metrics = metrics
        self.resolver = resolver
        self.servers = [Server(self, host, port) for host, port in config.servers]
        self.rr = 0
        self.tasks: list[asyncio.Task[None]] = []

    def any_available(self) -> bool:
        now = time.monotonic()
        return any(s.available(now) for s in self.servers)

    def can_serve(self) -> bool:
        """Some server takes traffic, or none exists yet (every name is unknown to DNS)."""
        now = time.monotonic()
        existing = [s for s in self.servers if not s.absent]
        return not existing or any(s.available(now) for s in existing)

    def readiness(self) -> dict[str, int]:
        now = time.monotonic()
        return {
            "servers": len(self.servers),
            "available": sum(1 for s in self.servers if not s.absent and s.available(now)),
            "absent": sum(1 for s in self.servers if s.absent),
        }

    def pick(self, tried: list[Server]) -> Server | None:
        """Round-robin over servers not yet tried that take traffic.

        When no server takes traffic the untried ones are tried anyway (fail open); when some
        do but all of those were tried, there is nothing left (nginx's "no live upstreams").
        """
        servers = self.servers
        n = len(servers)
        now = time.monotonic()
        start = self.rr
        any_up = False
        fallback = -1
        for step in range(1, n + 1):
            i = (start + step) % n
            s = servers[i]
            if s.active_ok and now >= s.down_until:
                any_up = True
                if s not in tried:
                    self.rr = i
                    return s
            elif fallback < 0 and s not in tried:
                fallback = i
        if any_up or fallback < 0:
            return None
        self.rr = fallback
        return servers[fallback]

    def has_untried(self, tried: list[Server]) -> bool:
        """Whether pick(tried) would find a server (without moving the round-robin)."""
        now = time.monotonic()
        any_up = False
        untried_down = False
        for s in self.servers:
            if s.active_ok and now >= s.down_until:
                if s not in tried:
                    return True
                any_up = True
            elif s not in tried:
                untried_down = True
        return untried_down and not any_up

    def start(self) -> None:
        if any(s.addr is None for s in self.servers):
            self.tasks.append(asyncio.ensure_future(self._resolve_loop()))
        if self.config.health_check is not None:
            for server in self.servers:
                self.tasks.append(
                    asyncio.ensure_future(self._health_loop(server, self.config.health_check))
                )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for server in self.servers:
            for conn in list(server.idle):
                conn.abort()

    async def resolve_once(self) -> None:
        for server in self.servers:
            if not _literal_ip(server.host):
                await self.lookup(server)

    async def lookup(self, server: Server) -> None:
        """Resolve server's name now; a failure keeps the last address, logged and counted."""
        try:
            server.set_address(await server.resolve())
        except (OSError, UnicodeError) as e:
            # keep the last good address: a DNS hiccup must not take a server out
            reason = "no_such_name" if server.absent else "error"
            self.metrics.dns_lookup_failures.inc((self.config.name, server.name, reason))
            log.warning("resolve %s failed: %s", server.name, e)

    async def _resolve_loop(self) -> None:
        while True:
            await self.resolve_once()
            await asyncio.sleep(self.config.resolve_interval)

    async def _health_loop(self, server: Server, check: HealthCheck) -> None:
        while True:
            if server.addr is None:
                await self.lookup(server)  # none yet: the check needs one to run at all
            # a tessera check bounds each of its concurrent probes by timeout itself, so that
            # one held probe spares the others' results (the check itself resolves nothing)
            timeout = check.timeout * (2 if check.type == "tessera" else 1)
            try:
                async with asyncio.timeout(timeout):
                    ok = await run_check(server, check)
            except (
                OSError,
                TimeoutError,
                ValueError,
                KeyError,
                TypeError,
                httptools.HttpParserError,
            ):
                ok = False
            self._record_check(server, check, ok)
            await asyncio.sleep(check.interval)

    def _record_check(self, server: Server, check: HealthCheck, ok: bool) -> None:
        if ok:
            server.fall_count = 0
            server.rise_count += 1
            if not server.active_ok and server.rise_count >= check.rise:
                server.active_ok = True
                server.down_until = 0.0
                log.warning("upstream %s server %s healthy", self.config.name, server.name)
        else:
            server.rise_count = 0
            server.fall_count += 1
            if server.active_ok and server.fall_count >= check.fall:
                server.active_ok = False
                log.warning("upstream %s server %s unhealthy", self.config.name, server.name)


async def run_check(server: Server, check: HealthCheck) -> bool:
    """One active check of one server: tcp connect, http status, jsonrpc block advance, tessera."""
    # the last known address: a lookup failure is the resolve loop's to count, not a failed
    # check (a DNS outage would take every server out at once); none known yet fails it
    addr = server.addr
    if addr is None:
        raise OSError(f"no address for {server.name} yet")
    if check.type == "tessera":
        return await run_tessera_check(server, check, addr)
    if check.type == "tcp":
        _, writer = await asyncio.open_connection(*addr)
        writer.close()
        return True
    if check.type == "http":
        # any server's answer counts, close-delimited ones too (whole=False)
        status, _ = await http_request(addr, "GET", check.path, host=server.name, whole=False)
        return status == check.expect_status
    payload = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    ).encode()
    status, body = await http_request(
        addr,
        "POST",
        check.path,
        payload,
        (("Content-Type", "application/json"),),
        host=server.name,
        whole=False,
    )
    if status != check.expect_status:
        return False
    answer: Any = json.loads(body)
    block = int(answer["result"], 16) if isinstance(answer, dict) else None
    if block is None:
        return False
    now = time.monotonic()
    if block != server.last_block:
        server.last_block = block
        server.last_block_change = now
        return True
    return check.stall_after is None or now - server.last_block_change <= check.stall_after
