"""Proxy configuration: YAML (or JSON) -> frozen, validated settings.

The format is the contract in proxy_image/README.md: listener -> route -> upstream. Every error
names the key path, the value and what is allowed, in one line.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

ENV_VAR = "QUORUM_PROXY_CONFIG"
RETRY_REASONS = ("error", "timeout", "http_404")
HEALTH_TYPES = ("http", "jsonrpc", "tcp", "tessera")
# keys of a tessera check that name the ports its probes use (see _tessera_probes)
TESSERA_PORT_KEYS = ("third_party_port", "p2p_port", "q2t_port")
# a probe port given as "server": the port the server is listed with, stored as 0
SERVER_PORT = 0
PROTOCOLS = ("tcp", "http", "jsonrpc")
# listeners that send everything to one upstream, its first healthy server (primary) first
SINGLE_UPSTREAM_PROTOCOLS = ("tcp", "jsonrpc")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """A config value is invalid; the message is one line: key path, value, what is allowed."""

    # The same shape as the program's domain/errors.py ConfigError, kept here on purpose: this
    # package ships alone in its container image and imports nothing from the program.

    def __init__(self, path: str, value: Any, allowed: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{path}: {shown} is not valid; allowed: {allowed}")
        self.path = path
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    type: str
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    path: str = "/"
    expect_status: int = 200
    stall_after: float | None = None
    # tessera checks only (see proxy_image/README.md, "Tessera deep check")
    public_key: str | None = None
    third_party_port: int | None = None
    p2p_port: int | None = None
    q2t_port: int | None = None


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str
    servers: tuple[tuple[str, int], ...]
    resolve_interval: float = 30.0
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    max_fails: int = 1
    fail_timeout: float = 10.0
    health_check: HealthCheck | None = None


@dataclass(frozen=True, kw_only=True)
class Mirror:
    upstream: str
    max_in_flight: int = 64
    timeout: float = 2.0


@dataclass(frozen=True, kw_only=True)
class Route:
    prefix: str
    upstream: str
    retry_on: tuple[str, ...] = ("error", "timeout")
    retry_non_idempotent: bool = False
    mirror: Mirror | None = None


@dataclass(frozen=True, kw_only=True)
class Listener:
    name: str
    listen: str
    protocol: str
    upstream: str | None = None
    routes: tuple[Route, ...] = ()
    socket_mode: int | None = None

    @property
    def unix_path(self) -> str | None:
        return self.listen[len("unix:") :] if self.listen.startswith("unix:") else None


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_header_bytes: int = 16384
    max_uri_bytes: int = 8192
    header_timeout: float = 10.0
    max_retry_body_bytes: int = 1048576
    # requests served on one client connection, then `Connection: close` (nginx keepalive_requests)
    keepalive_requests: int = 1000
    # client connections per process, all listeners; 0: derived from the open-files limit
    max_connections: int = 0
    # abuse bounds (proxy_image/README.md, "Bounded under abuse"); nginx's defaults for the
    # timeouts (client_body_timeout, send_timeout: 60s)
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    max_buffered_body_bytes: int = 64 << 20


@dataclass(frozen=True, kw_only=True)
class Config:
    workers: int = 1
    admin_listen: str = "0.0.0.0:9900"
    access_log: bool = True
    drain_timeout: float = 20.0
    limits: Limits = field(default_factory=Limits)
    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    listeners: tuple[Listener, ...] = ()


def parse_duration(path: str, value: Any) -> float:
    """Seconds from a number or a string such as "500ms", "2s", "1m"."""
    if isinstance(value, bool):
        raise ConfigError(path, value, 'a duration: seconds or "500ms", "2s", "1m"')
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(path, value, 'a duration: seconds or "500ms", "2s", "1m"')


def parse_host_port(path: str, value: Any, allow_zero: bool = False) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; port 0 (any free port) for listeners."""
    low = 0 if allow_zero else 1
    allowed = f'"host:port" with a port {low}-65535'
    if not isinstance(value, str):
        raise ConfigError(path, value, allowed)
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not low <= int(port_text) < 65536:
        raise ConfigError(path, value, allowed)
    return host, int(port_text)


def parse_listen(path: str, value: Any) -> str:
    if isinstance(value, str) and value.startswith("unix:"):
        if len(value) > len("unix:/") and value[5] == "/":
            return value
        raise ConfigError(path, value, '"unix:/absolute/path"')
    parse_host_port(path, value, allow_zero=True)
    return str(value)


class _Reader:
    """Reads one mapping, tracking its key path and refusing unknown keys."""

    def __init__(self, path: str, data: Any, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "config", data, "a mapping")
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                raise ConfigError(where, data[key], f"known keys {', '.join(known)}")
        self.path = path
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def required(self, name: str) -> Any:
        if name not in self.data:
            raise ConfigError(self.key(name), None, "a value (this key is required)")
        return self.data[name]

    def int(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.data.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise ConfigError(self.key(name), value, f"an integer >= {minimum}{upper}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "true or false")
        return value

    def duration(self, name: str, default: float) -> float:
        if name not in self.data:
            return default
        return parse_duration(self.key(name), self.data[name])

    def name(self, name: str) -> str:
        value = self.required(name)
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ConfigError(self.key(name), value, "a name of letters, digits, _ . -")
        return value


def _tessera_public_key(path: str, value: Any) -> str:
    allowed = "a Tessera public key: standard base64 of 32 bytes"
    if not isinstance(value, str):
        raise ConfigError(path, value, allowed)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(path, value, allowed) from None
    if len(raw) != 32:
        raise ConfigError(path, value, allowed)
    return value


def _tessera_probes(r: _Reader, kind: str) -> dict[str, Any]:
    """The tessera check's keys: its public key and the ports of its probes."""
    if kind != "tessera":
        for name in ("public_key", *TESSERA_PORT_KEYS):
            if r.has(name):
                raise ConfigError(r.key(name), r.raw(name), "tessera checks only")
        return {}
    ports: dict[str, int | None] = {}
    for name in TESSERA_PORT_KEYS:
        value = r.raw(name)
        if value == "server":
            ports[name] = SERVER_PORT
        elif value is None or (isinstance(value, int) and not isinstance(value, bool)):
            ports[name] = None if value is None else r.int(name, 0, 1, 65535)
        else:
            raise ConfigError(r.key(name), value, 'a port 1-65535, or "server" (its own port)')
    if all(port is None for port in ports.values()):
        raise ConfigError(
            r.key("third_party_port"), None, f"at least one of {', '.join(TESSERA_PORT_KEYS)}"
        )
    public_key = None
    if r.has("public_key"):
        public_key = _tessera_public_key(r.key("public_key"), r.raw("public_key"))
    elif ports["third_party_port"] is not None or ports["p2p_port"] is not None:
        # GET /keys must list it; POST /resend names it
        raise ConfigError(
            r.key("public_key"),
            None,
            "a Tessera public key when third_party_port or p2p_port is set",
        )
    return {"public_key": public_key, **ports}


def _health_check(path: str, data: Any) -> HealthCheck:
    r = _Reader(
        path,
        data,
        (
            "type",
            "interval",
            "timeout",
            "rise",
            "fall",
            "path",
            "expect_status",
            "stall_after",
            "public_key",
            *TESSERA_PORT_KEYS,
        ),
    )
    kind = r.required("type")
    if kind not in HEALTH_TYPES:
        raise ConfigError(r.key("type"), kind, " | ".join(HEALTH_TYPES))
    tessera = _tessera_probes(r, kind)
    check_path = r.raw("path", "/")
    if not isinstance(check_path, str) or not check_path.startswith("/"):
        raise ConfigError(r.key("path"), check_path, 'a path starting with "/"')
    stall_after = None
    if r.has("stall_after"):
        if kind != "jsonrpc":
            raise ConfigError(r.key("stall_after"), r.raw("stall_after"), "jsonrpc checks only")
        stall_after = r.duration("stall_after", 0.0)
    interval = r.duration("interval", 5.0)
    if interval <= 0:
        raise ConfigError(r.key("interval"), r.raw("interval"), "a duration > 0")
    return HealthCheck(
        type=kind,
        interval=interval,
        timeout=r.duration("timeout", 2.0),
        rise=r.int("rise", 2, 1),
        fall=r.int("fall", 3, 1),
        path=check_path,
        expect_status=r.int("expect_status", 200, 100, 599),
        stall_after=stall_after,
        **tessera,
    )


def _upstream(path: str, name: str, data: Any) -> Upstream:
    r = _Reader(
        path,
        data,
        (
            "servers",
            "resolve_interval",
            "connect_timeout",
            "read_timeout",
            "max_fails",
            "fail_timeout",
            "health_check",
        ),
    )
    servers = r.required("servers")
    if not isinstance(servers, list) or not servers:
        raise ConfigError(r.key("servers"), servers, 'a non-empty list of "host:port"')
    parsed = tuple(parse_host_port(f"{r.key('servers')}[{i}]", s) for i, s in enumerate(servers))
    if len(set(parsed)) != len(parsed):
        raise ConfigError(r.key("servers"), servers, "each server listed once")
    resolve_interval = r.duration("resolve_interval", 30.0)
    if resolve_interval <= 0:
        raise ConfigError(r.key("resolve_interval"), r.raw("resolve_interval"), "a duration > 0")
    health = r.raw("health_check")
    return Upstream(
        name=name,
        servers=parsed,
        resolve_interval=resolve_interval,
        connect_timeout=r.duration("connect_timeout", 2.0),
        read_timeout=r.duration("read_timeout", 30.0),
        max_fails=r.int("max_fails", 1, 0),
        fail_timeout=r.duration("fail_timeout", 10.0),
        health_check=None if health is None else _health_check(r.key("health_check"), health),
    )


def _upstream_ref(path: str, value: Any, upstreams: Mapping[str, Upstream]) -> str:
    if value not in upstreams:
        names = ", ".join(sorted(upstreams)) or "(none defined)"
        raise ConfigError(path, value, f"a name under upstreams: {names}")
    return str(value)


def _route(path: str, data: Any, upstreams: Mapping[str, Upstream]) -> Route:
    r = _Reader(path, data, ("prefix", "upstream", "retry_on", "retry_non_idempotent", "mirror"))
    prefix = r.required("prefix")
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ConfigError(r.key("prefix"), prefix, 'a path prefix starting with "/"')
    retry_on = r.raw("retry_on", ["error", "timeout"])
    if not isinstance(retry_on, list) or any(x not in RETRY_REASONS for x in retry_on):
        raise ConfigError(r.key("retry_on"), retry_on, f"a list of {', '.join(RETRY_REASONS)}")
    mirror = None
    if r.has("mirror"):
        m = _Reader(r.key("mirror"), r.raw("mirror"), ("upstream", "max_in_flight", "timeout"))
        mirror = Mirror(
            upstream=_upstream_ref(m.key("upstream"), m.required("upstream"), upstreams),
            max_in_flight=m.int("max_in_flight", 64, 1),
            timeout=m.duration("timeout", 2.0),
        )
    return Route(
        prefix=prefix,
        upstream=_upstream_ref(r.key("upstream"), r.required("upstream"), upstreams),
        retry_on=tuple(dict.fromkeys(retry_on)),
        retry_non_idempotent=r.bool("retry_non_idempotent", False),
        mirror=mirror,
    )


def _socket_mode(path: str, value: Any) -> int:
    allowed = 'an octal mode string such as "0660"'
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3}", value):
        return int(value, 8)
    raise ConfigError(path, value, allowed)


def _listener(path: str, data: Any, upstreams: Mapping[str, Upstream]) -> Listener:
    r = _Reader(path, data, ("name", "listen", "protocol", "upstream", "routes", "socket_mode"))
    name = r.name("name")
    listen = parse_listen(r.key("listen"), r.required("listen"))
    protocol = r.raw("protocol", "http")
    if protocol not in PROTOCOLS:
        raise ConfigError(r.key("protocol"), protocol, " | ".join(PROTOCOLS))
    socket_mode = None
    if r.has("socket_mode"):
        if not listen.startswith("unix:"):
            raise ConfigError(r.key("socket_mode"), r.raw("socket_mode"), "unix listeners only")
        socket_mode = _socket_mode(r.key("socket_mode"), r.raw("socket_mode"))
    if protocol in SINGLE_UPSTREAM_PROTOCOLS:
        if r.has("routes"):
            raise ConfigError(r.key("routes"), r.raw("routes"), "routes on http listeners only")
        return Listener(
            name=name,
            listen=listen,
            protocol=protocol,
            upstream=_upstream_ref(r.key("upstream"), r.required("upstream"), upstreams),
            socket_mode=socket_mode,
        )
    if r.has("upstream"):
        raise ConfigError(
            r.key("upstream"),
            r.raw("upstream"),
            "upstream on tcp and jsonrpc listeners; http uses routes",
        )
    routes_data = r.required("routes")
    if not isinstance(routes_data, list) or not routes_data:
        raise ConfigError(r.key("routes"), routes_data, "a non-empty list of routes")
    routes = tuple(
        _route(f"{r.key('routes')}[{i}]", d, upstreams) for i, d in enumerate(routes_data)
    )
    seen: set[str] = set()
    for i, route in enumerate(routes):
        if route.prefix in seen:
            raise ConfigError(f"{r.key('routes')}[{i}].prefix", route.prefix, "a unique prefix")
        seen.add(route.prefix)
    return Listener(
        name=name, listen=listen, protocol=protocol, routes=routes, socket_mode=socket_mode
    )


def _limits(data: Any) -> Limits:
    d = Limits()
    lr = _Reader(
        "limits",
        data,
        (
            "max_header_bytes",
            "max_uri_bytes",
            "header_timeout",
            "max_retry_body_bytes",
            "body_timeout",
            "send_timeout",
            "max_buffered_body_bytes",
            "keepalive_requests",
            "max_connections",
        ),
    )
    timeouts = {}
    for name in ("header_timeout", "body_timeout", "send_timeout"):
        timeouts[name] = lr.duration(name, getattr(d, name))
        if timeouts[name] <= 0:
            raise ConfigError(lr.key(name), lr.raw(name), "a duration > 0")
    per_request = lr.int("max_retry_body_bytes", d.max_retry_body_bytes, 0)
    total = lr.int("max_buffered_body_bytes", max(d.max_buffered_body_bytes, per_request), 0)
    if total < per_request:
        # under the per-request bound, a body 413 promises to take would get 503
        raise ConfigError(
            lr.key("max_buffered_body_bytes"),
            total,
            f"an integer >= limits.max_retry_body_bytes ({per_request})",
        )
    return Limits(
        max_header_bytes=lr.int("max_header_bytes", d.max_header_bytes, 256),
        max_uri_bytes=lr.int("max_uri_bytes", d.max_uri_bytes, 16),
        max_retry_body_bytes=per_request,
        max_buffered_body_bytes=total,
        keepalive_requests=lr.int("keepalive_requests", d.keepalive_requests, 1),
        max_connections=lr.int("max_connections", d.max_connections, 0),
        **timeouts,
    )


def parse_config(data: Any) -> Config:
    """Validate a decoded YAML/JSON document into a Config; raises ConfigError."""
    r = _Reader(
        "",
        data,
        ("workers", "admin", "access_log", "drain_timeout", "limits", "upstreams", "listeners"),
    )
    admin_listen = "0.0.0.0:9900"
    if r.has("admin"):
        a = _Reader("admin", r.raw("admin"), ("listen",))
        admin_listen = parse_listen("admin.listen", a.raw("listen", admin_listen))
    limits = Limits()
    if r.has("limits"):
        limits = _limits(r.raw("limits"))
    ups_data = r.required("upstreams")
    if not isinstance(ups_data, dict) or not ups_data:
        raise ConfigError("upstreams", ups_data, "a non-empty mapping of name -> upstream")
    upstreams: dict[str, Upstream] = {}
    for name, body in ups_data.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"upstreams.{name}", name, "a name of letters, digits, _ . -")
        upstreams[name] = _upstream(f"upstreams.{name}", name, body)
    lst_data = r.required("listeners")
    if not isinstance(lst_data, list) or not lst_data:
        raise ConfigError("listeners", lst_data, "a non-empty list of listeners")
    listeners = tuple(_listener(f"listeners[{i}]", d, upstreams) for i, d in enumerate(lst_data))
    names: set[str] = set()
    addresses: set[str] = {admin_listen}
    for i, listener in enumerate(listeners):
        if listener.name in names:
            raise ConfigError(f"listeners[{i}].name", listener.name, "a unique listener name")
        if listener.listen in addresses and not listener.listen.endswith(":0"):
            raise ConfigError(
                f"listeners[{i}].listen", listener.listen, "an address no other listener uses"
            )
        names.add(listener.name)
        addresses.add(listener.listen)
    return Config(
        workers=r.int("workers", 1, 1, 256),
        admin_listen=admin_listen,
        access_log=r.bool("access_log", True),
        drain_timeout=r.duration("drain_timeout", 20.0),
        limits=limits,
        upstreams=upstreams,
        listeners=listeners,
    )


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Read the file at path, else the QUORUM_PROXY_CONFIG variable; raises ConfigError."""
    env = os.environ if env is None else env
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError("--config", path, f"a readable file ({e.strerror})") from None
        source = path
    elif env.get(ENV_VAR):
        text = env[ENV_VAR]
        source = ENV_VAR
    else:
        raise ConfigError("--config", None, f"a config file path, or YAML/JSON in ${ENV_VAR}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f"line {where.line + 1}" if where is not None else "unknown line"
        raise ConfigError(source, line, "valid YAML or JSON") from None
    return parse_config(data)
