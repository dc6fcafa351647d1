"""Issue 13, bounded under abuse: request bodies, on real sockets.

Bodies kept for a retry have a bound per request (413) and one over all of them (the largest
unfinished body is refused with 503 when a new byte would pass it); a body that stops arriving is
cut off at `limits.body_timeout` (nginx `client_body_timeout`); memory held by bodies goes back to
the OS once they are gone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from proxy_support import (
    Client,
    Proxy,
    ProxyProcess,
    UpstreamServer,
    free_port,
    http_config,
    wait_for,
)
from quorum_proxy.bodies import BodyBudget

SLACK = 8.0
RETRY_ALL = {"retry_on": ["error", "timeout"], "retry_non_idempotent": True}


def timeouts(proxy: Proxy, kind: str, listener: str = "p2p") -> float:
    return proxy.loop.call(lambda: proxy.runtime.metrics.client_timeouts.get((listener, kind)))


def _head(length: int) -> bytes:
    return b"POST /push HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % length


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """What the proxy sent on sock until it closed or went quiet for timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_buffered_bodies_have_a_global_bound_and_the_largest_unfinished_is_refused(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = upstreams("a"), upstreams("b")
    limits = {"max_retry_body_bytes": 65536, "max_buffered_body_bytes": 262144}
    proxy = start_proxy(http_config([a.address, b.address], route=RETRY_ALL, limits=limits))
    slow = []
    try:
        # eight bodies of 60 kB announced, 50 kB sent, then nothing: 400 kB over a 256 kB bound
        for _ in range(8):
            sock = socket.create_connection(proxy.addr("p2p"))
            sock.sendall(_head(60000) + b"s" * 50000)
            slow.append(sock)
            time.sleep(0.2)  # each read by the proxy before the next: a fixed order
        answers = [_answer(sock, 1.0) for sock in slow]
        refused = [ans for ans in answers if ans.startswith(b"HTTP/1.1 503 ")]
        # before this change none was refused: 400 kB held
        assert len(refused) == 3, answers
        assert all(ans == b"" for ans in answers if ans not in refused)
        assert b"limits.max_buffered_body_bytes" in refused[0]
        # a legitimate request still fits beside the five kept
        with Client(proxy.addr("p2p")) as client:
            assert client.request("POST", "/push", b"{}").status == 200
    finally:
        for sock in slow:
            sock.close()
    # no cut body went upstream: only the legitimate one
    assert [seen.body for seen in a.seen + b.seen] == [b"{}"]


@pytest.mark.parametrize(
    "servers, route",
    [
        pytest.param(2, RETRY_ALL, id="buffered for a retry"),
        pytest.param(1, {}, id="streamed to the upstream"),
    ],
)
def test_a_body_that_stops_arriving_is_cut_off_at_the_body_timeout(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    servers: int,
    route: dict[str, object],
) -> None:
    ups = [upstreams() for _ in range(servers)]
    config = http_config([u.address for u in ups], route=route, limits={"body_timeout": "500ms"})
    proxy = start_proxy(config)
    with socket.create_connection(proxy.addr("p2p")) as sock:
        sock.sendall(_head(1000) + b"{")
        start = time.monotonic()
        # before this change nothing came back: the body waited for ever
        data = _answer(sock, SLACK)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert elapsed < SLACK
    assert timeouts(proxy, "body") == 1
    # a streamed body had opened an upstream connection: it is closed too
    wait_for(lambda: all(not u.conns for u in ups), SLACK, "upstream connections closed")
    assert all(not u.seen for u in ups)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def proxy_process(
    tmp_path: Path, upstreams: Callable[..., UpstreamServer]
) -> Iterator[tuple[ProxyProcess, int]]:
    a, b = upstreams("a"), upstreams("b")
    port, admin = free_port(), free_port()
    config = http_config(
        [a.address, b.address],
        route=RETRY_ALL,
        limits={"max_retry_body_bytes": 2 << 20},
        listen=f"127.0.0.1:{port}",
        admin={"listen": f"127.0.0.1:{admin}"},
        access_log=False,
    )
    proc = ProxyProcess(config, tmp_path)
    try:
        proc.wait_ready(admin)
        yield proc, port
    finally:
        proc.stop()


def _wave(port: int, count: int, size: int) -> list[socket.socket]:
    """count connections each sending size bytes of a body one byte longer: held unfinished."""
    socks = []
    chunk = b"m" * 16384
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(_head(size + 1))
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        socks.append(sock)
    return socks


def test_memory_held_by_bodies_goes_back_to_the_os_once_they_are_gone(
    proxy_process: tuple[ProxyProcess, int],
) -> None:
    proc, port = proxy_process
    pid = proc.proc.pid
    with Client(("127.0.0.1", port)) as client:
        client.request("POST", "/push", b"{}")
    base = _rss_mb(pid)
    peaks = []
    for _ in range(2):
        socks = _wave(port, 40, 1 << 20)
        wait_for(lambda: _rss_mb(pid) > base + 30, SLACK, "40 MB of bodies held")
        peaks.append(_rss_mb(pid))
        for sock in socks:
            sock.close()

        # before this change the freed bodies stayed in the process (as 508 MB did, issue 13)
        def returned() -> bool:
            return _rss_mb(pid) < base + 12

        wait_for(returned, SLACK, f"RSS back near {base:.0f} MB (now {_rss_mb(pid):.0f} MB)")
    # a second wave reuses what the first gave back rather than adding to it
    assert peaks[1] < peaks[0] + 20, peaks


class _Holder:
    def __init__(self, budget: BodyBudget, size: int) -> None:
        self.budget = budget
        self.size = size
        self.refused = False
        budget.add(self, size)

    def held_body_bytes(self) -> int:
        return self.size

    def refuse_body(self) -> None:
        self.refused = True
        self.budget.release(self, self.size)
        self.size = 0


def test_the_trim_runs_after_large_releases_at_most_once_a_second() -> None:
    trims: list[float] = []
    budget = BodyBudget(64 << 20, trim=lambda: trims.append(0))
    holders = [_Holder(budget, 1 << 20) for _ in range(8)]
    for holder in holders[:2]:
        budget.release(holder, holder.size)
    budget.maybe_trim(10.0)
    assert trims == []  # 2 MiB released: not worth a trim
    for holder in holders[2:]:
        budget.release(holder, holder.size)
    budget.maybe_trim(10.0)
    budget.maybe_trim(10.5)
    assert len(trims) == 1
    assert budget.total == 0


def test_a_complete_body_is_never_the_one_refused() -> None:
    budget = BodyBudget(3 << 20, trim=lambda: None)
    served = _Holder(budget, 2 << 20)
    budget.done_reading(served)  # whole, being served
    small = _Holder(budget, 512 << 10)
    growing = _Holder(budget, 1 << 20)
    assert (served.refused, small.refused, growing.refused) == (False, False, True)
    assert budget.total == (2 << 20) + (512 << 10)
