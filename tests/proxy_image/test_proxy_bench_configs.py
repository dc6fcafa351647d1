"""The benchmark compares like with like: nginx's config is valid and routes as the proxy's."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from quorum_proxy.config import parse_config

from bench.abuse import SCENARIOS, TIMEOUTS, Scenario, front_nginx_conf
from bench.abuse import proxy_conf as abuse_proxy_conf
from bench.fast_upstream import jsonrpc_answer
from bench.rpc_load import MIX, rpc_errors
from bench.run_bench import (
    STREAM_MODULE,
    Ports,
    nginx_conf,
    nginx_rpc_conf,
    parse_wrk,
    proxy_conf,
    proxy_rpc_conf,
    rpc_wrk_script,
)
from bench.support import Children, free_port, stop_process, wait_port
from node_bootstrap.proxy import standalone_proxy_config

UP = Ports(up_a=41001, up_b=41002, tcp=0, third_party=0, p2p=0)
OWN = Ports(up_a=0, up_b=0, tcp=42000, third_party=42081, p2p=42001)


def test_proxy_side_of_the_benchmark_is_a_valid_config_with_the_seed_routes() -> None:
    config = parse_config(proxy_conf(UP, OWN, admin=42900))
    by_name = {lc.name: lc for lc in config.listeners}
    assert by_name["quorum-rpc"].protocol == "tcp"
    (third_party,) = by_name["third-party"].routes
    assert third_party.retry_on == ("error", "timeout", "http_404")
    assert third_party.retry_non_idempotent
    p2p = {r.prefix: r for r in by_name["p2p"].routes}
    assert set(p2p) == {"/resend", "/push", "/partyinfo", "/partyinfo/validate", "/upcheck", "/"}
    assert p2p["/partyinfo"].mirror is not None


def nginx_accepts(tmp_path: Path, text: str) -> None:
    assert shutil.which("nginx"), "nginx-light is in apt-packages.txt"
    assert Path(STREAM_MODULE).exists(), "libnginx-mod-stream is in apt-packages.txt"
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_side_of_the_benchmark_is_accepted_by_nginx(tmp_path: Path) -> None:
    text = nginx_conf(tmp_path, UP, OWN)
    nginx_accepts(tmp_path, text)
    assert "proxy_next_upstream error timeout http_404 non_idempotent;" in text
    assert re.search(r"server 127\.0\.0\.1:41002 backup;", text)
    assert "mirror /partyinfo-mirror;" in text


def test_wrk_output_is_read_with_errors_counted() -> None:
    out = """Running 10s test @ http://127.0.0.1:1/
  Latency Distribution
     50%  412.00us
     99%    1.25ms
  300000 requests in 10.00s, 40.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  30000.00
"""
    result = parse_wrk(out)
    assert (result.rps, result.p99_ms, result.errors, result.requests) == (
        30000.0,
        1.25,
        7,
        300000,
    )


def test_rpc_nginx_side_is_the_seeds_stream_block_accepted_by_nginx(tmp_path: Path) -> None:
    text = nginx_rpc_conf(tmp_path, primary=41001, backup=41002, port=42000)
    nginx_accepts(tmp_path, text)
    assert "server 127.0.0.1:41001; server 127.0.0.1:41002 backup;" in text
    assert "listen 127.0.0.1:42000; proxy_pass quorum;" in text


def test_rpc_l4_side_is_a_valid_proxy_config_checked_as_the_stack_checks_quorum() -> None:
    data = proxy_rpc_conf("l4", primary=41001, backup=41002, port=42000, admin=42900)
    config = parse_config(data)
    (listener,) = config.listeners
    assert (listener.protocol, listener.upstream) == ("tcp", "quorum")
    stack = standalone_proxy_config(quorum_dns_names=["q"], tessera_dns_names=["t"])
    assert (
        data["upstreams"]["quorum"]["health_check"]
        == (stack["upstreams"]["quorum"]["health_check"])
    )
    assert config.upstreams["quorum"].servers == (("127.0.0.1", 41001), ("127.0.0.1", 41002))


def test_rpc_jsonrpc_side_is_a_valid_proxy_config() -> None:
    config = parse_config(proxy_rpc_conf("jsonrpc", 41001, 41002, 42000, 42900))
    assert config.listeners[0].protocol == "jsonrpc"


def test_rpc_wrk_script_posts_the_mix_as_json_rpc_calls_in_order() -> None:
    script = rpc_wrk_script()
    table = re.search(r"local bodies = \{ (.*) \}\n", script)
    assert table is not None
    bodies = json.loads(f"[{table.group(1)}]")
    calls = [json.loads(body) for body in bodies]
    assert [c["method"] for c in calls] == list(MIX)
    assert all(c["jsonrpc"] == "2.0" and isinstance(c["params"], list) for c in calls)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (b'{"jsonrpc":"2.0","id":1,"result":"0x1"}', []),
        (
            b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"already known"}}',
            ["already known"],
        ),
        (
            b'[{"jsonrpc":"2.0","id":1,"result":"0x"},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}]',
            ["x"],
        ),
        (b"<html>bad gateway</html>", ["answer is not JSON"]),
        (b'{"status":"ok"}', ["answer is not JSON-RPC"]),
    ],
)
def test_the_load_client_reads_json_rpc_errors_in_calls_and_batches(
    body: bytes, errors: list[str]
) -> None:
    assert rpc_errors(body) == errors


def test_the_json_rpc_stand_in_echoes_ids_and_answers_batches_as_batches() -> None:
    request = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": None, "method": "eth_sendRawTransaction", "params": ["0x"]},
    ]
    head, body = jsonrpc_answer(json.dumps(request).encode()).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: %d" % len(body) in head
    assert [(a["id"], "result" in a) for a in json.loads(body)] == [("a", True), (None, True)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda sc: sc.name)
def test_each_abuse_scenario_runs_both_servers_on_valid_configs_with_the_same_limits(
    tmp_path: Path, scenario: Scenario
) -> None:
    text = front_nginx_conf(tmp_path, 42080, [41001, 41002], scenario)
    nginx_accepts(tmp_path, text)
    config = parse_config(
        abuse_proxy_conf(42080, 42900, [41001, 41002], True, scenario.read_timeout)
    )
    (upstream,) = config.upstreams.values()
    assert upstream.read_timeout == scenario.read_timeout
    assert f"proxy_read_timeout {scenario.read_timeout}s;" in text
    for directive, key, seconds in TIMEOUTS:
        assert f"{directive} {seconds}s;" in text
        assert getattr(config.limits, key) == seconds
    if scenario.nofile:
        # under the limit nginx must not lift it, and a proxied request takes two descriptors
        assert "worker_rlimit_nofile" not in text
        connections = int(re.findall(r"worker_connections (\d+);", text)[0])
        assert 2 * connections < scenario.nofile


def test_the_abuse_upstream_answers_32k_and_counts_the_requests(tmp_path: Path) -> None:
    port = free_port()
    script = Path(__file__).resolve().parents[2] / "bench" / "abuse.py"
    proc = subprocess.Popen([sys.executable, str(script), "--serve-upstream", str(port)])
    try:
        wait_port(port, proc=proc)

        def get(path: str) -> bytes:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            body = conn.getresponse().read()
            conn.close()
            return body

        assert get("/32k") == b"x" * 32768
        assert len(get("/big")) == 4 << 20
        assert json.loads(get("/_stats")) == {"open": 0, "requests": 2}
    finally:
        stop_process(proc)


def test_a_bench_child_that_does_not_start_is_reported_with_what_it_said() -> None:
    """(A full run once stopped with only 'nothing listens on 127.0.0.1:51003 after 10.0s'.)"""
    children = Children()
    proc = children.start(
        [sys.executable, "-c", "import sys; sys.exit('startup error: port 1 in use')"]
    )
    try:
        with pytest.raises(SystemExit, match="exited \\(1\\) before listening: startup error"):
            wait_port(free_port(), timeout=10, proc=proc)
    finally:
        children.stop_all()
