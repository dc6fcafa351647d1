"""One proxy process: listeners, upstream groups, the admin port, draining."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, cast

import httptools

from .bodies import BodyBudget
from .config import Config, Listener, parse_host_port
from .http_routes import HttpListener
from .jsonrpc_proxy import JsonRpcListener
from .metrics import Metrics
from .mirror import MirrorChannel
from .tcp_proxy import TcpListener
from .tessera_check import TesseraState, tessera_state
from .upstream import Resolver, Server, UpstreamGroup, system_resolver

log = logging.getLogger("quorum_proxy")

SWEEP_INTERVAL = 0.25
# Descriptors kept out of the client budget: listeners, the admin port and its scrapes, stdio,
# the event loop's own, DNS lookups; and per upstream server a health check, a mirror channel
# and a connect under way. Each client connection may hold one upstream connection too, so
# clients get half of the rest (nginx counts both in worker_connections).
FD_RESERVE = 32
FD_PER_SERVER = 4
MIN_CONNECTIONS = 8
# when the open-files limit is unlimited, what Linux allows a process by default (fs.nr_open)
NR_OPEN_DEFAULT = 1 << 20
# "worker_connections are not enough" is logged at most this often, with counts since the last
SHED_LOG_INTERVAL = 10.0
# Seconds without a turn of the event loop after which the process cannot serve and exits.
LOOP_STALL_TIMEOUT = 30.0
EXIT_STALLED = 3
# inode of each socket file this process bound, so only our own file is removed on exit
_bound_inodes: dict[str, int] = {}


def raise_fd_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft before, hard, soft now).

    setrlimit(2): an unprivileged process may raise its soft limit up to its hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NR_OPEN_DEFAULT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning(
                "open files limit: cannot raise the soft limit %d to %d (%s)", soft, target, e
            )
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft, hard, now


def connection_budget(config: Config, soft_limit: int) -> int:
    """Client connections one process may hold under soft_limit open files (see FD_RESERVE)."""
    if soft_limit == resource.RLIM_INFINITY:
        soft_limit = NR_OPEN_DEFAULT
    servers = sum(len(up.servers) for up in config.upstreams.values())
    return max(MIN_CONNECTIONS, (soft_limit - FD_RESERVE - FD_PER_SERVER * servers) // 2)


class StartupError(Exception):
    """The process cannot start (a socket in use, a path not a socket); one line, no traceback."""


def prepare_unix_socket(path: str, mode: int | None) -> socket.socket:
    """Bind a unix listening socket: a stale file is replaced, a live listener is refused."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise StartupError(f"{path}: exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # left by a crash: nobody accepts on it
        except OSError as e:
            raise StartupError(f"{path}: cannot probe existing socket ({e})") from None
        else:
            raise StartupError(f"{path}: another process is listening on it")
        finally:
            probe.close()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # the umask keeps the socket from ever being wider than its mode, even for an instant
    old_umask = os.umask(0o777 ^ mode if mode is not None else 0o077)
    try:
        sock.bind(path)
    except OSError as e:
        sock.close()
        raise StartupError(f"{path}: cannot bind ({e.strerror})") from None
    finally:
        os.umask(old_umask)
    if mode is not None:
        os.chmod(path, mode)
    _bound_inodes[path] = os.stat(path).st_ino
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def remove_unix_socket(path: str, sock: socket.socket) -> None:
    """Remove the socket file if it is still ours (a successor may have replaced it)."""
    try:
        if os.stat(path).st_ino == _bound_inodes.pop(path, None):
            os.unlink(path)
    except OSError:
        pass


def prepare_unix_sockets(config: Config) -> dict[str, socket.socket]:
    socks: dict[str, socket.socket] = {}
    try:
        for listener in config.listeners:
            path = listener.unix_path
            if path is not None:
                socks[listener.name] = prepare_unix_socket(path, listener.socket_mode)
        if config.admin_listen.startswith("unix:"):
            socks["admin"] = prepare_unix_socket(config.admin_listen[5:], 0o660)
    except StartupError:
        for name, sock in socks.items():
            remove_unix_socket(unix_path_of(config, name), sock)
            sock.close()
        raise
    return socks


def unix_path_of(config: Config, name: str) -> str:
    if name == "admin":
        return config.admin_listen[5:]
    for listener in config.listeners:
        if listener.name == name and listener.unix_path is not None:
            return listener.unix_path
    raise KeyError(name)


def _exit_stalled(seconds: float) -> None:
    # os._exit: the stalled loop would never run an orderly shutdown.
    sys.stderr.write(f"event loop stalled for {seconds:.1f}s: exiting\n")
    sys.stderr.flush()
    os._exit(EXIT_STALLED)


class LoopWatchdog:
    """Liveness by exit: a thread ends the process when the event loop stops turning.

    ECS ignores health checks for a proxy task's life (see components/proxy_service.py), so a
    process that cannot serve at all must end itself; ECS then replaces the task, and the
    supervisor of several workers restarts the one that exited.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float = LOOP_STALL_TIMEOUT,
        tick: float = 1.0,
        on_stall: Callable[[float], None] = _exit_stalled,
    ) -> None:
        self.loop = loop
        self.timeout = timeout
        self.tick = tick
        self.on_stall = on_stall
        self.last_turn = time.monotonic()
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Call on the loop's thread."""
        self._beat()
        threading.Thread(target=self._watch, name="loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        handle = self._handle
        if handle is not None:
            self.loop.call_soon_threadsafe(handle.cancel)

    def _beat(self) -> None:
        self.last_turn = time.monotonic()
        self._handle = self.loop.call_later(self.tick, self._beat)

    def _watch(self) -> None:
        while not self._stopped.wait(self.tick):
            stalled = time.monotonic() - self.last_turn
            if stalled > self.timeout:
                self.on_stall(stalled)
                return


class AdminProtocol(asyncio.Protocol):
    """/healthz, /readyz, /readyz/<listener> and /metrics; one request per connection."""

    def __init__(self, runtime: ProxyRuntime) -> None:
        self.runtime = runtime
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b'{"error": "bad request"}', "application/json")

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        runtime = self.runtime
        if path == b"/healthz":
            body = json.dumps({"status": "ok", "pid": os.getpid()}).encode()
            self._send(200, body, "application/json")
        elif path == b"/readyz":
            ready = runtime.ready()
            body = json.dumps({"ready": ready, "draining": runtime.draining}).encode()
            self._send(200 if ready else 503, body, "application/json")
        elif path.startswith(b"/readyz/") and path[8:].decode("latin-1") in runtime.listeners:
            # One NLB target group per listener asks this: can this listener serve?
            name = path[8:].decode("latin-1")
            ready = runtime.listener_ready(name)
            body = json.dumps(
                {
                    "listener": name,
                    "ready": ready,
                    "draining": runtime.draining,
                    "upstreams": {
                        group: runtime.groups[group].readiness()
                        for group in runtime.listener_upstreams(name)
                    },
                }
            ).encode()
            self._send(200 if ready else 503, body, "application/json")
        elif path == b"/metrics":
            self._send(200, runtime.metrics.render().encode(), "text/plain; version=0.0.4")
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
        head = (
            f"HTTP/1.1 {status} {reason.get(status, 'Status')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


class ProxyRuntime:
    """Everything one process serves; start(), then drain() on SIGTERM."""

    def __init__(
        self,
        config: Config,
        resolver: Resolver = system_resolver,
        log_stream: TextIO | None = None,
    ) -> None:
        self.config = config
        self.metrics = Metrics()
        # request bodies kept in memory, over every listener of this process
        self.bodies = BodyBudget(config.limits.max_buffered_body_bytes)
        self.groups = {
            name: UpstreamGroup(up, self.metrics, resolver)
            for name, up in config.upstreams.items()
        }
        self.listeners: dict[str, HttpListener | TcpListener] = {}
        for lc in config.listeners:
            kind = {"http": HttpListener, "jsonrpc": JsonRpcListener}.get(lc.protocol, TcpListener)
            self.listeners[lc.name] = kind(lc, self)
        self.servers: list[asyncio.AbstractServer] = []
        self.admin: asyncio.AbstractServer | None = None
        self.addresses: dict[str, Any] = {}
        self.draining = False
        self.open_connections: dict[str, int] = {lc.name: 0 for lc in config.listeners}
        self.client_connections = 0
        self.fd_budget = connection_budget(config, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        wanted = config.limits.max_connections
        self.max_connections = min(wanted, self.fd_budget) if wanted else self.fd_budget
        self.http_listeners = [
            lst for lst in self.listeners.values() if isinstance(lst, HttpListener)
        ]
        # shedding since the last log line: idle, refused; and when that line was written
        self._shed_counts = {"idle": 0, "refused": 0}
        self._shed_logged = -SHED_LOG_INTERVAL
        self.log_stream = log_stream if log_stream is not None else sys.stdout
        self._log_lines: list[str] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._owned_unix: dict[str, socket.socket] = {}
        self.mirror_channels: dict[Server, MirrorChannel] = {}
        self.metrics.open_connections.collect = self._collect_open
        self.metrics.upstream_healthy.collect = self._collect_health
        self.metrics.tessera_deep_check_up.collect = self._collect_tessera_up
        self.metrics.tessera_party_count.collect = self._collect_party_counts
        self.metrics.tessera_party_count_spread.collect = self._collect_party_spread

    def _collect_open(self) -> dict[tuple[str, ...], float]:
        return {(name,): float(n) for name, n in self.open_connections.items()}

    def _collect_health(self) -> dict[tuple[str, ...], float]:
        now = time.monotonic()
        return {
            (g.config.name, s.name): 1.0 if s.available(now) else 0.0
            for g in self.groups.values()
            for s in g.servers
        }

    def _tessera_servers(self) -> list[tuple[str, Server, TesseraState]]:
        """(upstream, server, state) of every server a tessera check has checked."""
        found = []
        for g in self.groups.values():
            check = g.config.health_check
            if check is None or check.type != "tessera":
                continue
            for s in g.servers:
                state = tessera_state(s)
                if state is not None and state.checked:
                    found.append((g.config.name, s, state))
        return found

    def _collect_tessera_up(self) -> dict[tuple[str, ...], float]:
        # the check's verdict after rise/fall, as it takes the server out
        return {(g, s.name): 1.0 if s.active_ok else 0.0 for g, s, _ in self._tessera_servers()}

    def _party_counts(self) -> dict[tuple[str, str], int]:
        return {
            (g, s.name): state.party_count
            for g, s, state in self._tessera_servers()
            if state.party_count is not None and not s.absent
        }

    def _collect_party_counts(self) -> dict[tuple[str, ...], float]:
        return {key: float(n) for key, n in self._party_counts().items()}

    def _collect_party_spread(self) -> dict[tuple[str, ...], float]:
        by_group: dict[str, list[int]] = {}
        for (group, _), n in self._party_counts().items():
            by_group.setdefault(group, []).append(n)
        return {(g,): float(max(ns) - min(ns)) for g, ns in by_group.items()}

    def mirror_channel(self, server: Server) -> MirrorChannel:
        channel = self.mirror_channels.get(server)
        if channel is None:
            channel = self.mirror_channels[server] = MirrorChannel(server, self.metrics)
        return channel

    def connection_opened(self, listener: str) -> bool:
        """Count a new client connection; False when it must be closed at once.

        Over max_connections the oldest idle keep-alive connection (between requests, or that
        never sent a byte) is closed to make room, as nginx reuses connections when
        "worker_connections are not enough"; with none idle the new one is refused. The budget
        keeps accept() from ever meeting EMFILE: uvloop closes a listener whose accept fails
        (UVStreamServer._fatal_error), and libuv resets every pending connection first.
        """
        self.open_connections[listener] += 1
        self.client_connections += 1
        if self.client_connections <= self.max_connections:
            return True
        oldest = None
        oldest_since = 0.0
        for lst in self.http_listeners:
            for conn in lst.connections:
                since = conn.idle_since()
                if since is not None and (oldest is None or since < oldest_since):
                    oldest, oldest_since = conn, since
        if oldest is None:
            self._shed(listener, "refused")
            return False
        oldest.shed()
        self._shed(oldest.listener.name, "idle")
        return True

    def connection_closed(self, listener: str) -> None:
        self.open_connections[listener] -= 1
        self.client_connections -= 1

    def _shed(self, listener: str, reason: str) -> None:
        self.metrics.shed_connections.inc((listener, reason))
        self._shed_counts[reason] += 1
        self._report_shed(time.monotonic())

    def _report_shed(self, now: float) -> None:
        counts = self._shed_counts
        if (counts["idle"] or counts["refused"]) and now - self._shed_logged >= SHED_LOG_INTERVAL:
            log.warning(
                "client connections at the limit (%d per process): shed %d idle, refused %d"
                " (since the last report)",
                self.max_connections,
                counts["idle"],
                counts["refused"],
            )
            self._shed_logged = now
            self._shed_counts = {"idle": 0, "refused": 0}

    def ready(self) -> bool:
        return not self.draining and any(g.any_available() for g in self.groups.values())

    def listener_upstreams(self, name: str) -> list[str]:
        """The upstream groups a listener forwards to (mirrors aside: they serve no answer)."""
        lc = self.listeners[name].config
        names = [lc.upstream] if lc.upstream is not None else []
        names += [route.upstream for route in lc.routes]
        return list(dict.fromkeys(names))

    def listener_ready(self, name: str) -> bool:
        """Whether this listener can serve: not draining, and every upstream it routes to can.

        A listener routing by path (p2p: /partyinfo, /resend, ...) needs each of its groups;
        in the standalone config they all name the same Tessera servers.
        """
        if self.draining:
            return False
        return all(self.groups[g].can_serve() for g in self.listener_upstreams(name))

    def access_log(self, entry: dict[str, Any]) -> None:
        # lines are gathered and written once per loop iteration: one write per burst
        if not self._log_lines:
            asyncio.get_running_loop().call_soon(self._flush_log)
        self._log_lines.append(json.dumps(entry, separators=(",", ":")))

    def _flush_log(self) -> None:
        lines, self._log_lines = self._log_lines, []
        if lines:
            self.log_stream.write("\n".join(lines) + "\n")
            self.log_stream.flush()

    async def start(self, unix_sockets: dict[str, socket.socket] | None = None) -> None:
        """Bind every listener and the admin port; raises StartupError."""
        loop = asyncio.get_running_loop()
        inherited = dict(unix_sockets or {})
        reuse_port = self.config.workers > 1
        try:
            for name, listener in self.listeners.items():
                factory: Callable[[], asyncio.BaseProtocol] = listener.protocol
                server = await self._bind(
                    loop, name, listener.config, factory, inherited, reuse_port
                )
                self.servers.append(server)
            admin_cfg = Listener(name="admin", listen=self.config.admin_listen, protocol="http")
            self.admin = await self._bind(
                loop, "admin", admin_cfg, lambda: AdminProtocol(self), inherited, reuse_port
            )
        except StartupError:
            await self.close()
            raise
        for group in self.groups.values():
            group.start()
        self._sweeper = loop.create_task(self._sweep())
        wanted = self.config.limits.max_connections
        if wanted > self.fd_budget:
            log.warning(
                "limits.max_connections %d is over what the open-files limit allows; using %d",
                wanted,
                self.fd_budget,
            )
        log.info("client connections capped at %d per process", self.max_connections)

    async def _bind(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        lc: Listener,
        factory: Callable[[], asyncio.BaseProtocol],
        inherited: dict[str, socket.socket],
        reuse_port: bool,
    ) -> asyncio.AbstractServer:
        path = lc.listen[5:] if lc.listen.startswith("unix:") else None
        try:
            if path is not None:
                sock = inherited.get(name)
                if sock is None:
                    mode = lc.socket_mode if name != "admin" else 0o660
                    sock = prepare_unix_socket(path, mode)
                    self._owned_unix[path] = sock
                server = await loop.create_unix_server(factory, sock=sock)
                self.addresses[name] = path
            else:
                host, port = parse_host_port(f"{name}.listen", lc.listen, allow_zero=True)
                server = await loop.create_server(
                    factory, host, port, reuse_port=reuse_port, backlog=1024
                )
                self.addresses[name] = server.sockets[0].getsockname()[:2]
        except OSError as e:
            raise StartupError(f"listener {name}: {lc.listen}: {e.strerror or e}") from None
        return server

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        http = [lst for lst in self.listeners.values() if isinstance(lst, HttpListener)]
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = loop.time()
            for listener in http:
                listener.check_timeouts(now)
            for channel in self.mirror_channels.values():
                channel.check_timeouts(now)
            self._report_shed(time.monotonic())
            self.bodies.maybe_trim(now)

    def in_flight(self) -> int:
        total = 0
        for listener in self.listeners.values():
            if isinstance(listener, HttpListener):
                total += sum(1 for c in listener.connections if c.busy())
            else:
                total += len(listener.connections)
        return total

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish up to drain_timeout, then close."""
        self.draining = True
        loop = asyncio.get_running_loop()
        for server in self.servers:
            server.close()
        deadline = loop.time() + self.config.drain_timeout
        while True:
            for listener in self.listeners.values():
                if isinstance(listener, HttpListener):
                    for conn in list(listener.connections):
                        conn.close_if_idle()
            if self.in_flight() == 0 or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for listener in self.listeners.values():
            transports = [c.transport for c in listener.connections]
            for transport in transports:
                if transport is not None:
                    transport.abort()
        await self.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        if self.admin is not None:
            self.admin.close()
        for channel in self.mirror_channels.values():
            channel.close()
        for group in self.groups.values():
            await group.stop()
        for path, sock in self._owned_unix.items():
            remove_unix_socket(path, sock)
            sock.close()
        self._owned_unix.clear()
        self._flush_log()
