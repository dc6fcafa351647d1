"""Prometheus text exposition, hand-written to keep the image's dependency list short."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Counter:
    """A counter family keyed by label values."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self.values.get(key, 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def render(self, kind: str = "counter") -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {kind}"]
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labels, key)} {value:g}")
        return lines


class Gauge(Counter):
    """A gauge family; values set directly, or read at scrape time through a callback."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        collect: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self.collect = collect

    def set(self, key: tuple[str, ...], value: float) -> None:
        self.values[key] = value

    def render(self, kind: str = "gauge") -> list[str]:
        if self.collect is not None:
            self.values = self.collect()
        return super().render(kind)


class Histogram:
    """A histogram family; per key: bucket counts, sum and count."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self.buckets = buckets
        self.series: dict[tuple[str, ...], list[float]] = {}

    def series_for(self, key: tuple[str, ...]) -> list[float]:
        """Bucket counts (not cumulative), then sum, then count; kept for the key's lifetime."""
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0.0] * (len(self.buckets) + 3)
        return s

    def observe(self, key: tuple[str, ...], value: float) -> None:
        s = self.series_for(key)
        s[bisect_left(self.buckets, value)] += 1
        s[-2] += value
        s[-1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, s in sorted(self.series.items()):
            cumulative = 0.0
            for i, bound in enumerate((*self.buckets, float("inf"))):
                cumulative += s[i]
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                labels = _labels((*self.labels, "le"), (*key, le))
                lines.append(f"{self.name}_bucket{labels} {cumulative:g}")
            lines.append(f"{self.name}_sum{_labels(self.labels, key)} {s[-2]:.6f}")
            lines.append(f"{self.name}_count{_labels(self.labels, key)} {s[-1]:g}")
        return lines


class Metrics:
    """Every metric the proxy exports (one set per worker process)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "quorum_proxy_http_requests_total",
            "HTTP requests answered, by listener, route and status.",
            ("listener", "route", "status"),
        )
        self.latency = Histogram(
            "quorum_proxy_http_request_duration_seconds",
            "Time from request headers to the end of the response.",
            ("listener", "route", "status"),
        )
        self.retries = Counter(
            "quorum_proxy_retries_total",
            "Requests or connections sent again to another server, by reason.",
            ("listener", "route", "reason"),
        )
        self.upstream_failures = Counter(
            "quorum_proxy_upstream_failures_total",
            "Failed attempts on a server (connect error, timeout, bad response).",
            ("upstream", "server", "reason"),
        )
        self.mirror = Counter(
            "quorum_proxy_mirror_requests_total",
            "Mirrored request copies by result: ok, http_error, error, timeout, dropped.",
            ("listener", "route", "result"),
        )
        self.tcp_connections = Counter(
            "quorum_proxy_tcp_connections_total",
            "TCP stream connections, by listener and result.",
            ("listener", "result"),
        )
        self.dns_lookup_failures = Counter(
            "quorum_proxy_dns_lookup_failures_total",
            "Failed lookups of a server's name (no_such_name, error); its last address is kept.",
            ("upstream", "server", "reason"),
        )
        self.bad_requests = Counter(
            "quorum_proxy_rejected_requests_total",
            "Requests refused before routing (malformed, limits, timeouts).",
            ("listener", "status"),
        )
        self.shed_connections = Counter(
            "quorum_proxy_shed_connections_total",
            "Client connections closed over limits.max_connections: idle (the oldest idle one,"
            " to make room) or refused (none idle).",
            ("listener", "reason"),
        )
        self.client_timeouts = Counter(
            "quorum_proxy_client_timeouts_total",
            "Client connections closed by a timeout: header, body or send (limits.*_timeout).",
            ("listener", "kind"),
        )
        self.open_connections = Gauge(
            "quorum_proxy_open_connections",
            "Client connections currently open, by listener.",
            ("listener",),
        )
        self.upstream_healthy = Gauge(
            "quorum_proxy_upstream_healthy",
            "1 when a server takes new traffic (active and passive health), else 0.",
            ("upstream", "server"),
        )
        # the JSON-RPC listener (jsonrpc_proxy.py; proxy_image/README.md, "JSON-RPC mode")
        self.jsonrpc_calls = Counter(
            "quorum_proxy_jsonrpc_calls_total",
            "JSON-RPC calls received, by class: safe or unsafe to repeat on another node; "
            "invalid for a body or batch element that is not a JSON-RPC call.",
            ("listener", "class"),
        )
        self.jsonrpc_repeats = Counter(
            "quorum_proxy_jsonrpc_repeats_total",
            "Request bodies of safe calls sent again to another node after a node failed them.",
            ("listener",),
        )
        self.jsonrpc_unknown_outcomes = Counter(
            "quorum_proxy_jsonrpc_unknown_outcomes_total",
            "Unsafe calls a node failed after receiving them, answered 'outcome unknown'.",
            ("listener",),
        )
        self.jsonrpc_already_known = Counter(
            "quorum_proxy_jsonrpc_already_known_total",
            "Repeated eth_sendRawTransaction answered 'already known' (or 'nonce too low' for "
            "one the node has), made a success.",
            ("listener",),
        )
        self.primary_changes = Counter(
            "quorum_proxy_primary_changes_total",
            "Times a JSON-RPC listener's primary (the node new requests go to) changed.",
            ("listener",),
        )
        # Names agreed with the alarms and the dashboard (components/): change them together.
        self.tessera_deep_check_up = Gauge(
            "quorum_proxy_tessera_deep_check_up",
            "1 while a Tessera passes the deep check (key listed, database answering), else 0.",
            ("upstream", "server"),
        )
        self.tessera_party_count = Gauge(
            "quorum_proxy_tessera_party_count",
            "Parties (public keys) a Tessera knows, from its GET /partyinfo/keys.",
            ("upstream", "server"),
        )
        self.tessera_party_count_spread = Gauge(
            "quorum_proxy_tessera_party_count_spread",
            "Most minus fewest parties known among an upstream's Tessera servers.",
            ("upstream",),
        )

    def render(self) -> str:
        lines: list[str] = []
        for family in (
            self.requests,
            self.retries,
            self.upstream_failures,
            self.mirror,
            self.tcp_connections,
            self.dns_lookup_failures,
            self.bad_requests,
            self.shed_connections,
            self.client_timeouts,
            self.jsonrpc_calls,
            self.jsonrpc_repeats,
            self.jsonrpc_unknown_outcomes,
            self.jsonrpc_already_known,
            self.primary_changes,
            self.open_connections,
            self.upstream_healthy,
            self.tessera_deep_check_up,
            self.tessera_party_count,
            self.tessera_party_count_spread,
        ):
            lines.extend(family.render())
        lines.extend(self.latency.render())
        return "\n".join(lines) + "\n"
