"""Item 13: two Tessera stand-ins, one killed and restarted twice under a stream of POSTs."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable

from proxy_support import Client, Proxy, Reply, Seen, UpstreamServer, http_config, wait_for

CLIENTS = 4
PER_CLIENT = 250


def test_killing_a_tessera_twice_loses_no_request_and_doubles_only_retried_ones(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    stored: Counter[str] = Counter()
    lock = threading.Lock()

    def store(seen: Seen) -> Reply:
        key = json.loads(seen.body)["id"]
        with lock:
            stored[key] += 1
        # answer a moment after storing, so that a kill can land between the two
        return Reply(status=201, body=json.dumps({"key": key}).encode(), delay=0.002)

    steady, victim = upstreams("tessera-0"), upstreams("tessera-1")
    steady.handler = victim.handler = store
    route = {"retry_on": ["error", "timeout"], "retry_non_idempotent": True}
    upstream = {"max_fails": 1, "fail_timeout": "100ms", "read_timeout": "2s"}
    proxy = start_proxy(
        http_config(
            [steady.address, victim.address], route=route, upstream=upstream, access_log=False
        )
    )

    sent: list[str] = []
    statuses: Counter[int] = Counter()
    done = [0]
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with Client(proxy.addr("p2p")) as c:
                for _ in range(PER_CLIENT):
                    key = uuid.uuid4().hex
                    r = c.request(
                        "POST", "/storeraw", json.dumps({"id": key, "payload": "x" * 64}).encode()
                    )
                    with lock:
                        sent.append(key)
                        statuses[r.status] += 1
                        done[0] += 1
        except BaseException as e:  # surfaced by the main thread's assertions
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    total = CLIENTS * PER_CLIENT
    for kill_at, restart_at in (
        (total * 2 // 10, total * 3 // 10),
        (total * 5 // 10, total * 6 // 10),
    ):
        wait_for(lambda n=kill_at: done[0] >= n or bool(errors), timeout=20, what="progress")
        victim.kill()
        wait_for(lambda n=restart_at: done[0] >= n or bool(errors), timeout=20, what="progress")
        victim.start()
        # once fail_timeout has passed the restarted stand-in takes its share again
        served = len(victim.seen)
        wait_for(
            lambda n=served: len(victim.seen) > n or bool(errors), timeout=20, what="victim back"
        )
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(sent) == total
    assert set(statuses) <= {201}, statuses
    missing = [key for key in sent if stored[key] == 0]
    assert missing == []
    duplicates = sum(n - 1 for n in stored.values() if n > 1)
    retries = proxy.metric_sum("quorum_proxy_retries_total", listener="p2p")
    assert duplicates <= retries
    assert not any(t.is_alive() for t in threads)
