"""Issue 8, items 2 and 3: readiness per listener, for the NLB target group of each port.

`/readyz/<listener>` says whether that listener can serve: not draining, and one of its
upstream servers takes traffic. A server whose DNS name does not exist (the machine is not
created yet, or was removed) is not waited for: on a first deploy the proxy comes 20-60 min
before the machines, and its targets must become healthy for the deployment to complete.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxy_support import PROXY_DIR, LoopThread, Proxy, UpstreamServer, request, wait_for
from quorum_proxy.server import LoopWatchdog

LISTENERS = ("quorum-rpc", "third-party", "p2p")
CHECK = {"type": "tcp", "interval": "50ms", "timeout": "500ms", "rise": 1, "fall": 1}


def node_config(quorum: list[str], tessera: list[str]) -> dict[str, Any]:
    """The standalone proxy's shape: RPC over TCP to Quorum, third-party and P2P to Tessera."""

    def upstream(servers: list[str]) -> dict[str, Any]:
        return {"servers": servers, "resolve_interval": "50ms", "health_check": dict(CHECK)}

    return {
        "upstreams": {
            "quorum": upstream(quorum),
            "third_party": upstream(tessera),
            "p2p": upstream(tessera),
        },
        "listeners": [
            {
                "name": "quorum-rpc",
                "listen": "127.0.0.1:0",
                "protocol": "tcp",
                "upstream": "quorum",
            },
            {
                "name": "third-party",
                "listen": "127.0.0.1:0",
                "protocol": "http",
                "routes": [{"prefix": "/", "upstream": "third_party"}],
            },
            {
                "name": "p2p",
                "listen": "127.0.0.1:0",
                "protocol": "http",
                "routes": [
                    {"prefix": "/partyinfo", "upstream": "p2p", "mirror": {"upstream": "p2p"}},
                    {"prefix": "/", "upstream": "p2p"},
                ],
            },
        ],
    }


def ready(proxy: Proxy, listener: str) -> int:
    return request(proxy.addr("admin"), "GET", f"/readyz/{listener}").status


def statuses(proxy: Proxy) -> dict[str, int]:
    return {listener: ready(proxy, listener) for listener in LISTENERS}


def wait_statuses(proxy: Proxy, expected: dict[str, int], what: str) -> None:
    wait_for(lambda: statuses(proxy) == expected, what=f"{what}: {expected}")


def test_with_every_tessera_down_only_the_rpc_listener_is_ready(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    proxy = start_proxy(node_config([quorum.address], [tessera.address]))
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 200, "p2p": 200}, "all up")
    tessera.kill()
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 503, "p2p": 503}, "tessera down")
    # Liveness is another question: the process still serves.
    assert request(proxy.addr("admin"), "GET", "/healthz").status == 200
    tessera.start()
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 200, "p2p": 200}, "tessera back")


def test_with_every_quorum_down_only_the_tessera_listeners_are_ready(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    proxy = start_proxy(node_config([quorum.address], [tessera.address]))
    quorum.kill()
    wait_statuses(proxy, {"quorum-rpc": 503, "third-party": 200, "p2p": 200}, "quorum down")


def test_one_server_of_a_listener_up_is_enough(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, t0, t1 = upstreams("quorum"), upstreams("t0"), upstreams("t1")
    proxy = start_proxy(node_config([quorum.address], [t0.address, t1.address]))
    t0.kill()
    wait_for(
        lambda: not proxy.loop.call(lambda: proxy.runtime.groups["p2p"].servers[0].active_ok),
        what="t0 seen down",
    )
    assert statuses(proxy) == {"quorum-rpc": 200, "third-party": 200, "p2p": 200}


class Dns:
    """A resolver answering like getaddrinfo: names that do not exist raise EAI_NONAME."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, int]] = {}
        self.failing = False

    async def __call__(self, host: str, port: int) -> tuple[str, int]:
        if self.failing:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host not in self.records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.records[host][0], port


QUORUM = "quorum-0.dev.quorum-ha.internal"
TESSERA = "tessera-0.dev.quorum-ha.internal"


def test_a_first_deploy_is_ready_before_the_machines_exist_then_follows_them(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    quorum.kill()
    tessera.kill()
    dns = Dns()
    proxy = start_proxy(
        node_config([f"{QUORUM}:{quorum.port}"], [f"{TESSERA}:{tessera.port}"]), resolver=dns
    )
    # No machine exists: nothing any target could serve better, the deployment can complete.
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 200, "p2p": 200}, "no machines")
    # The machines are created (their names resolve) but do not answer yet.
    dns.records[QUORUM] = ("127.0.0.1", quorum.port)
    dns.records[TESSERA] = ("127.0.0.1", tessera.port)
    wait_statuses(proxy, {"quorum-rpc": 503, "third-party": 503, "p2p": 503}, "booting")
    quorum.start()
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 503, "p2p": 503}, "quorum up")
    tessera.start()
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 200, "p2p": 200}, "all up")


def test_a_dns_outage_is_not_taken_for_machines_that_do_not_exist(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    tessera.kill()
    dns = Dns()
    dns.records[QUORUM] = ("127.0.0.1", quorum.port)
    dns.records[TESSERA] = ("127.0.0.1", tessera.port)
    proxy = start_proxy(
        node_config([f"{QUORUM}:{quorum.port}"], [f"{TESSERA}:{tessera.port}"]), resolver=dns
    )
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 503, "p2p": 503}, "tessera down")
    dns.failing = True  # SERVFAIL / timeout: the machines still exist
    # Tessera stays unready (down, not "absent"); Quorum stays ready: its checks go on at its
    # last known address (issue 13: a failed lookup is never a health failure)
    failed = {"upstream": "quorum", "server": f"{QUORUM}:{quorum.port}", "reason": "error"}
    wait_for(
        lambda: proxy.metric("quorum_proxy_dns_lookup_failures_total", **failed) >= 2,
        what="failed lookups counted",
    )
    assert statuses(proxy) == {"quorum-rpc": 200, "third-party": 503, "p2p": 503}


def test_every_listener_is_unready_while_draining(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    proxy = start_proxy(node_config([quorum.address], [tessera.address]))
    wait_statuses(proxy, {"quorum-rpc": 200, "third-party": 200, "p2p": 200}, "all up")
    proxy.loop.call(lambda: setattr(proxy.runtime, "draining", True))
    assert statuses(proxy) == {"quorum-rpc": 503, "third-party": 503, "p2p": 503}


def test_readiness_body_names_the_listener_and_its_upstreams(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    quorum, tessera = upstreams("quorum"), upstreams("tessera")
    proxy = start_proxy(node_config([quorum.address], [tessera.address]))
    tessera.kill()
    wait_for(lambda: ready(proxy, "p2p") == 503, what="p2p unready")
    body = request(proxy.addr("admin"), "GET", "/readyz/p2p").json()
    assert body["listener"] == "p2p"
    assert body["ready"] is False
    assert body["draining"] is False
    assert body["upstreams"] == {"p2p": {"servers": 1, "available": 0, "absent": 0}}


@pytest.mark.parametrize("path", ["/readyz/nope", "/readyz/", "/readyz/p2p/x"])
def test_readiness_of_an_unknown_listener_is_404(
    path: str, upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy(node_config([upstreams().address], [upstreams().address]))
    assert request(proxy.addr("admin"), "GET", path).status == 404


# Liveness: ECS ignores health checks for the task's life (the grace period), so a process that
# cannot serve at all must end itself; ECS replaces a task whose essential container exited.
def test_a_stalled_event_loop_ends_the_process_and_a_turning_one_does_not() -> None:
    lt = LoopThread("watched")
    stalled = threading.Event()
    watchdog = LoopWatchdog(lt.loop, timeout=0.5, tick=0.05, on_stall=lambda s: stalled.set())
    try:
        lt.call(watchdog.start)
        assert not stalled.wait(1.5), "a turning loop was taken for a stalled one"
        lt.loop.call_soon_threadsafe(time.sleep, 1.5)  # a blocking call on the loop
        assert stalled.wait(5), "the stall went unnoticed"
    finally:
        watchdog.stop()
        lt.stop()


STALLING_PROCESS = """
import asyncio, time
from quorum_proxy.server import LoopWatchdog

async def main():
    LoopWatchdog(asyncio.get_running_loop(), timeout=0.3, tick=0.05).start()
    await asyncio.sleep(0.2)
    time.sleep(10)  # the loop stops turning
    print("still alive")

asyncio.run(main())
"""


def test_a_stalled_process_exits_with_one_line_and_status_3() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STALLING_PROCESS],
        cwd=PROXY_DIR,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 3
    assert "still alive" not in done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("event loop stalled for ")
