"""HTTP routing: a listener's routes, longest prefix first, and each route's upstream state.

What a request is matched to and what the route decides before any upstream is asked (whether
its body is kept for a retry or a mirror, its Host line, its metric keys). Another way to pick
a route (a JSON-RPC mode matching on the method) belongs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import Limits, Listener, Route
from .http_client import HttpClientProtocol
from .mirror import MirrorCopy
from .upstream import Server, UpstreamGroup

if TYPE_CHECKING:
    from .server import ProxyRuntime


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
        "pick",
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
        # picks the server for a request's next attempt, given those tried: the group's
        # round-robin, or another rule (the JSON-RPC listener's primary first, jsonrpc_proxy.py)
        self.pick: Callable[[list[Server]], Server | None] = group.pick
        # whether a request's body is kept for a retry or a mirror copy (per method)
        may_retry = len(group.servers) > 1 and bool(config.retry_on)
        self.buffer_all = mirror_group is not None or (may_retry and config.retry_non_idempotent)
        self.buffer_idempotent = may_retry
        # as nginx's default $proxy_host: the upstream's name
        self.host_line = b"Host: %s\r\n" % group.config.name.encode()


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
