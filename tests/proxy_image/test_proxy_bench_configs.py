"""The benchmark compares like with like: nginx's config is valid and routes as the proxy's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from quorum_proxy.config import parse_config

from bench.run_bench import STREAM_MODULE, Ports, nginx_conf, parse_wrk, proxy_conf

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


def test_nginx_side_of_the_benchmark_is_accepted_by_nginx(tmp_path: Path) -> None:
    assert shutil.which("nginx"), "nginx-light is in apt-packages.txt"
    assert Path(STREAM_MODULE).exists(), "libnginx-mod-stream is in apt-packages.txt"
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, UP, OWN))
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
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
