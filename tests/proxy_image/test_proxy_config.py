"""Item 9: one documented YAML/JSON format, from a file or an env var, validated with one line."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxy_support import PROXY_COMMAND, PROXY_DIR
from quorum_proxy.config import ENV_VAR, ConfigError, load_config, parse_config

# The agreed contract (proxy_image/README.md#config-reference) with the q2t upstream it names.
CONTRACT = """
workers: 1
admin:
  listen: "0.0.0.0:9900"
access_log: true
drain_timeout: 20s
limits:
  max_header_bytes: 16384
  max_uri_bytes: 8192
  header_timeout: 10s
  max_retry_body_bytes: 1048576
upstreams:
  quorum:
    servers: ["quorum-0.node.quorum-ha.internal:22000", "quorum-1.node.quorum-ha.internal:22000"]
    resolve_interval: 30s
    connect_timeout: 2s
    read_timeout: 30s
    max_fails: 1
    fail_timeout: 10s
    health_check:
      type: jsonrpc
      interval: 5s
      timeout: 2s
      rise: 2
      fall: 3
      stall_after: 60s
  p2p:
    servers: ["tessera-0.node.quorum-ha.internal:9001", "tessera-1.node.quorum-ha.internal:9001"]
    health_check: {type: http, path: /upcheck, expect_status: 200, interval: 5s}
  q2t:
    servers: ["tessera-0.node.quorum-ha.internal:9101", "tessera-1.node.quorum-ha.internal:9101"]
listeners:
  - name: quorum-rpc
    listen: "0.0.0.0:22000"
    protocol: tcp
    upstream: quorum
  - name: p2p
    listen: "0.0.0.0:9001"
    protocol: http
    routes:
      - prefix: /partyinfo
        upstream: p2p
        retry_on: [error, timeout, http_404]
        retry_non_idempotent: true
        mirror:
          upstream: p2p
          max_in_flight: 64
          timeout: 2s
      - prefix: /
        upstream: p2p
        retry_on: [error, timeout]
  - name: q2t
    listen: "unix:/run/quorum-ha/tm.ipc"
    socket_mode: "0660"
    protocol: http
    routes:
      - prefix: /
        upstream: q2t
        retry_on: [error, timeout, http_404]
        retry_non_idempotent: true
"""


def contract() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONTRACT)
    return data


def test_contract_example_parses_into_listener_route_upstream_settings() -> None:
    config = parse_config(contract())
    assert config.drain_timeout == 20.0
    assert config.upstreams["quorum"].health_check is not None
    assert config.upstreams["quorum"].health_check.stall_after == 60.0
    assert config.upstreams["p2p"].servers[1] == ("tessera-1.node.quorum-ha.internal", 9001)
    p2p = config.listeners[1]
    assert [r.prefix for r in p2p.routes] == ["/partyinfo", "/"]
    assert p2p.routes[0].mirror is not None and p2p.routes[0].mirror.timeout == 2.0
    assert p2p.routes[0].retry_on == ("error", "timeout", "http_404")
    q2t = config.listeners[2]
    assert q2t.unix_path == "/run/quorum-ha/tm.ipc" and q2t.socket_mode == 0o660


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), (3, 3.0), (0.25, 0.25)]
)
def test_durations_accept_numbers_and_unit_strings(text: Any, seconds: float) -> None:
    data = contract()
    data["drain_timeout"] = text
    assert parse_config(data).drain_timeout == seconds


def test_defaults_apply_when_optional_keys_are_absent() -> None:
    config = parse_config(
        {
            "upstreams": {"t": {"servers": ["127.0.0.1:1"]}},
            "listeners": [
                {
                    "name": "a",
                    "listen": "127.0.0.1:2",
                    "routes": [{"prefix": "/", "upstream": "t"}],
                }
            ],
        }
    )
    assert config.workers == 1 and config.access_log is True
    assert config.admin_listen == "0.0.0.0:9900"
    assert config.limits.max_retry_body_bytes == 1048576
    assert config.listeners[0].protocol == "http"
    assert config.listeners[0].routes[0].retry_on == ("error", "timeout")
    assert config.upstreams["t"].max_fails == 1 and config.upstreams["t"].fail_timeout == 10.0


@dataclass(frozen=True)
class Bad:
    id: str
    path: list[Any]
    value: Any
    key: str
    allowed: str


BAD = [
    Bad("unknown top key", ["colour"], "red", "colour", "known keys"),
    Bad("workers zero", ["workers"], 0, "workers", "integer >= 1"),
    Bad("bad duration", ["drain_timeout"], "soon", "drain_timeout", "duration"),
    Bad(
        "server without port",
        ["upstreams", "p2p", "servers", 0],
        "tessera-0",
        "upstreams.p2p.servers[0]",
        "host:port",
    ),
    Bad(
        "port out of range",
        ["upstreams", "p2p", "servers", 0],
        "t:70000",
        "upstreams.p2p.servers[0]",
        "host:port",
    ),
    Bad(
        "health type",
        ["upstreams", "p2p", "health_check", "type"],
        "grpc",
        "upstreams.p2p.health_check.type",
        "http | jsonrpc | tcp",
    ),
    Bad(
        "stall on http check",
        ["upstreams", "p2p", "health_check", "stall_after"],
        "5s",
        "upstreams.p2p.health_check.stall_after",
        "jsonrpc",
    ),
    Bad("protocol", ["listeners", 1, "protocol"], "udp", "listeners[1].protocol", "tcp | http"),
    Bad(
        "retry reason",
        ["listeners", 1, "routes", 1, "retry_on"],
        ["error", "http_500"],
        "listeners[1].routes[1].retry_on",
        "http_404",
    ),
    Bad(
        "unknown upstream",
        ["listeners", 1, "routes", 0, "upstream"],
        "nope",
        "listeners[1].routes[0].upstream",
        "p2p, q2t, quorum",
    ),
    Bad(
        "mirror upstream",
        ["listeners", 1, "routes", 0, "mirror", "upstream"],
        "nope",
        "listeners[1].routes[0].mirror.upstream",
        "p2p",
    ),
    Bad(
        "prefix",
        ["listeners", 1, "routes", 0, "prefix"],
        "partyinfo",
        "listeners[1].routes[0].prefix",
        'starting with "/"',
    ),
    Bad(
        "socket mode on tcp",
        ["listeners", 1, "socket_mode"],
        "0660",
        "listeners[1].socket_mode",
        "unix listeners only",
    ),
    Bad(
        "socket mode digits",
        ["listeners", 2, "socket_mode"],
        "rw-rw----",
        "listeners[2].socket_mode",
        "octal",
    ),
    Bad(
        "relative unix path",
        ["listeners", 2, "listen"],
        "unix:tm.ipc",
        "listeners[2].listen",
        "unix:/absolute/path",
    ),
    Bad("listener name", ["listeners", 0, "name"], "p2p", "listeners[1].name", "unique"),
    Bad("access_log type", ["access_log"], "yes", "access_log", "true or false"),
    Bad(
        "max header bytes", ["limits", "max_header_bytes"], 10, "limits.max_header_bytes", ">= 256"
    ),
    Bad(
        "mirror bound",
        ["listeners", 1, "routes", 0, "mirror", "max_in_flight"],
        0,
        "listeners[1].routes[0].mirror.max_in_flight",
        ">= 1",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_value_error_names_key_value_and_allowed(case: Bad) -> None:
    data = contract()
    target = data
    for step in case.path[:-1]:
        target = target[step]
    target[case.path[-1]] = case.value
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{case.key}: ")
    assert repr(case.value)[:40] in message
    assert case.allowed in message.split("allowed:", 1)[1]


def test_missing_required_key_is_named() -> None:
    data = contract()
    del data["listeners"][0]["upstream"]
    with pytest.raises(ConfigError, match=r"^listeners\[0\]\.upstream: None .*required"):
        parse_config(data)


def test_env_var_json_is_used_when_no_file_is_given() -> None:
    config = load_config(None, {ENV_VAR: json.dumps(contract())})
    assert [lc.name for lc in config.listeners] == ["quorum-rpc", "p2p", "q2t"]


def test_file_wins_over_env_var(tmp_path: Path) -> None:
    data = contract()
    data["workers"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(str(path), {ENV_VAR: json.dumps(contract())}).workers == 3


@pytest.mark.parametrize(
    ("env", "needle"),
    [({}, "QUORUM_PROXY_CONFIG"), ({ENV_VAR: "listeners: [unclosed"}, "valid YAML or JSON")],
)
def test_missing_or_unparsable_config_is_a_config_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(None, env)


def run_proxy(args: list[str], env_config: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(PROXY_DIR), "PATH": "/usr/bin:/bin"}
    if env_config is not None:
        env[ENV_VAR] = env_config
    return subprocess.run(
        [*PROXY_COMMAND, *args],
        cwd=PROXY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    data = contract()
    data["listeners"][1]["routes"][1]["retry_on"] = ["error", "sometimes"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_proxy(["--config", str(path)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: listeners[1].routes[1].retry_on: ")
    assert "allowed: a list of error, timeout, http_404" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_env_config_exits_2_naming_the_key() -> None:
    data = contract()
    data["workers"] = -1
    result = run_proxy([], env_config=json.dumps(data))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: workers: -1 is not valid; allowed: an integer >= 1 and <= 256"
    )


def test_check_flag_validates_without_serving() -> None:
    assert run_proxy(["--check"], env_config=json.dumps(contract())).returncode == 0
