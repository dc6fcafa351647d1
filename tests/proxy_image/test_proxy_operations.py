"""Item 10: admin port, metrics, access log, SIGTERM drain, workers (subprocesses)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonrpc_standins import jsonrpc_config
from proxy_support import (
    PROXY_DIR,
    Client,
    LogSink,
    Proxy,
    ProxyProcess,
    Reply,
    Response,
    UpstreamServer,
    free_port,
    http_config,
    request,
    wait_for,
)


def test_healthz_answers_200_for_the_nlb_and_container_health(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address]))
    r = request(proxy.addr("admin"), "GET", "/healthz")
    assert r.status == 200 and r.json()["status"] == "ok"


def test_metrics_expose_requests_latency_retries_mirror_health_and_connections(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    a.handler = lambda seen: Reply(status=404)
    route = {
        "retry_on": ["http_404"],
        "retry_non_idempotent": True,
        "mirror": {"upstream": "tessera"},
    }
    proxy = start_proxy(http_config([a.address, b.address], route=route))
    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):
            assert client.request("POST", "/partyinfo", b"x").status == 200
        text = request(proxy.addr("admin"), "GET", "/metrics").body.decode()
    assert 'quorum_proxy_http_requests_total{listener="p2p",route="/",status="200"} 2' in text
    labels = 'listener="p2p",route="/",status="200"'
    assert f'quorum_proxy_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} 2\n' in text
    assert f'quorum_proxy_http_request_duration_seconds_bucket{{{labels},le="30"}} 2\n' in text
    assert (
        'quorum_proxy_http_request_duration_seconds_count{listener="p2p",route="/",status="200"} 2'
        in text
    )
    assert 'quorum_proxy_retries_total{listener="p2p",route="/",reason="http_404"}' in text
    assert 'quorum_proxy_mirror_requests_total{listener="p2p",route="/",result=' in text
    assert f'quorum_proxy_upstream_healthy{{upstream="tessera",server="{a.address}"}} 1' in text
    assert 'quorum_proxy_open_connections{listener="p2p"} 1' in text
    for family in re.findall(r"# TYPE (\S+) (\S+)", text):
        assert family[1] in ("counter", "gauge", "histogram")


def test_access_log_writes_one_json_line_per_request(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy], log_sink: LogSink
) -> None:
    a = upstreams("a")
    proxy = start_proxy(http_config([a.address]))
    with Client(proxy.addr("p2p")) as client:
        client.request("POST", "/send?x=1", b"{}")
        client.request("GET", "/upcheck")
    wait_for(lambda: len(log_sink.lines) == 2, what="two log lines")
    first, second = log_sink.entries()
    assert first["listener"] == "p2p" and first["route"] == "/"
    assert first["method"] == "POST" and first["path"] == "/send?x=1"
    assert first["status"] == 200 and first["upstream"] == a.address
    assert first["client"] == "127.0.0.1" and first["retries"] == 0
    assert isinstance(first["duration_ms"], float)
    assert second["path"] == "/upcheck"


def test_access_log_can_be_turned_off(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy], log_sink: LogSink
) -> None:
    proxy = start_proxy(http_config([upstreams().address], access_log=False))
    assert request(proxy.addr("p2p"), "GET", "/upcheck").status == 200
    proxy.loop.call(proxy.runtime._flush_log)
    assert log_sink.lines == []


def subprocess_config(servers: list[str], **extra: Any) -> tuple[dict[str, Any], int, int]:
    port, admin = free_port(), free_port()
    data = http_config(
        servers,
        listen=f"127.0.0.1:{port}",
        upstream={"read_timeout": "30s"},
        admin={"listen": f"127.0.0.1:{admin}"},
        **extra,
    )
    return data, port, admin


def test_sigterm_stops_accepting_drains_the_in_flight_request_and_exits_0(
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    slow = upstreams("slow")
    release = threading.Event()
    slow.handler = lambda seen: Reply(delay=0.0 if release.is_set() else 1.0)
    data, port, admin = subprocess_config([slow.address], drain_timeout="20s")
    proc = proxy_process(data)
    proc.wait_ready(admin)
    result: list[Response] = []
    client = threading.Thread(
        target=lambda: result.append(request(("127.0.0.1", port), "POST", "/send", b"{}"))
    )
    client.start()
    wait_for(lambda: len(slow.seen) == 1, what="request in flight")
    proc.proc.send_signal(15)

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_for(refused, what="listener closed while draining")
    client.join(10)
    assert result and result[0].status == 200
    assert proc.proc.wait(20) == 0


def test_sigterm_gives_up_on_requests_that_outlast_drain_timeout_and_exits_0(
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    stuck = upstreams("stuck")
    stuck.handler = lambda seen: Reply(delay=60.0)
    data, port, admin = subprocess_config([stuck.address], drain_timeout="300ms")
    proc = proxy_process(data)
    proc.wait_ready(admin)
    with Client(("127.0.0.1", port), timeout=10) as client:
        client.send(b"GET /transaction/x HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: len(stuck.seen) == 1, what="request in flight")
        proc.proc.send_signal(15)
        assert client.sock.recv(100) == b""
    assert proc.proc.wait(20) == 0


def test_access_log_lines_reach_stdout_of_the_process(
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    data, port, admin = subprocess_config([upstreams().address])
    proc = proxy_process(data)
    proc.wait_ready(admin)
    assert request(("127.0.0.1", port), "GET", "/upcheck").status == 200
    assert proc.terminate() == 0
    assert proc.proc.stdout is not None
    lines = proc.proc.stdout.read().decode().splitlines()
    assert len(lines) == 1 and '"path":"/upcheck"' in lines[0]


def test_workers_share_the_listeners_and_all_stop_on_sigterm(
    tmp_path: Path,
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    a = upstreams("a")
    data, port, admin = subprocess_config([a.address], workers=2, access_log=False)
    ipc = tmp_path / "tm.ipc"
    data["listeners"].append(
        {
            "name": "q2t",
            "listen": f"unix:{ipc}",
            "routes": [{"prefix": "/", "upstream": "tessera"}],
        }
    )
    proc = proxy_process(data)
    proc.wait_ready(admin)
    pids: set[int] = set()
    wait_for(
        lambda: (
            pids.add(request(("127.0.0.1", admin), "GET", "/healthz").json()["pid"])
            or len(pids) == 2
        ),
        what="both workers answering",
    )
    assert proc.proc.pid not in pids
    assert request(("127.0.0.1", port), "GET", "/upcheck").status == 200
    assert request(str(ipc), "GET", "/upcheck").status == 200
    assert proc.terminate() == 0
    for pid in pids:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), what=f"worker {pid} gone")
    assert not ipc.exists()


def test_unix_socket_file_is_removed_when_the_process_exits(
    tmp_path: Path,
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    ipc = tmp_path / "tm.ipc"
    data, _, admin = subprocess_config([upstreams().address])
    data["listeners"][0]["listen"] = f"unix:{ipc}"
    proc = proxy_process(data)
    proc.wait_ready(admin)
    assert ipc.exists()
    assert proc.terminate() == 0
    assert not ipc.exists()


def test_port_in_use_exits_1_with_one_line(
    upstreams: Callable[..., UpstreamServer],
    proxy_process: Callable[[dict[str, Any]], ProxyProcess],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        data, _, _ = subprocess_config([upstreams().address])
        data["listeners"][0]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = proxy_process(data)
        assert proc.proc.wait(20) == 1
    assert proc.proc.stderr is not None
    err = proc.proc.stderr.read().decode().strip().splitlines()
    assert err[-1].startswith("startup error: listener p2p: 127.0.0.1:")
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("path", ["/nope", "/healthz/x"])
def test_unknown_admin_paths_get_404(
    path: str, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address]))
    assert request(proxy.addr("admin"), "GET", path).status == 404


def test_readyz_is_503_while_draining(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(http_config([upstreams().address]))
    assert request(proxy.addr("admin"), "GET", "/readyz").status == 200
    proxy.loop.call(lambda: setattr(proxy.runtime, "draining", True))
    assert request(proxy.addr("admin"), "GET", "/readyz").status == 503


@pytest.mark.parametrize("built", [True, False], ids=["compiled", "not-built"])
def test_a_json_rpc_listener_says_at_start_whether_its_relay_scans_are_compiled(
    tmp_path: Path, built: bool
) -> None:
    """An operator sees from the log whether the relay runs at its speed (the image refuses to
    build without the scans; a proxy run from source may lack them)."""
    admin = free_port()
    config = jsonrpc_config([f"127.0.0.1:{free_port()}"])
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # a module set to None in sys.modules fails to import, as a module never built does
    hide = "" if built else "sys.modules['quorum_proxy._relay_scan'] = None; "
    code = f"import sys; {hide}from quorum_proxy.main import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(path)],
        cwd=PROXY_DIR,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(PROXY_DIR)},
    )

    def up() -> bool:
        try:
            return request(("127.0.0.1", admin), "GET", "/healthz").status == 200
        except OSError:
            return proc.poll() is not None  # exited: its log says why

    try:
        wait_for(up, 10, "the proxy's admin port")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    log = err.decode()
    if built:
        assert "JSON-RPC relay: compiled scans" in log and "not built" not in log
    else:
        assert "JSON-RPC relay: compiled scans not built (proxy_image/build_relay_scan.py)" in log
