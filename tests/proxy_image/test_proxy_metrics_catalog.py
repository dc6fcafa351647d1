"""Issue 12 item 2: every proxy metric the alarms and dashboard name (domain/metrics.py) is what
a running proxy really exposes on /metrics, with the labels the catalog's dimensions need."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable

import pytest
from proxy_support import (
    Client,
    Proxy,
    Reply,
    Seen,
    UpstreamServer,
    request,
    wait_for,
)

from domain.metrics import (
    MIRROR_FAILURE_RESULTS,
    NODE_LABEL,
    PROXY_JOB,
    Metric,
    metric_declarations,
    prometheus_families,
    scraped,
    series_labels,
)

# The standalone proxy's metrics and the IPC proxy's (the same program, scraped on the
# Quorum machines).
PROXY_METRICS = scraped("proxy") + scraped("ipc_proxy")


def _param(metric: Metric) -> object:
    return pytest.param(metric, id=metric.name)


NODE_KEY = base64.b64encode(b"k" * 32).decode()


def _checked_tessera(seen: Seen) -> Reply:
    """A Tessera whose deep check passes: /keys lists the key, /resend of an unknown hash is a
    404 from the database, /partyinfo/keys lists two parties."""
    if seen.path == "/keys":
        return Reply(body=json.dumps({"keys": [{"key": NODE_KEY}]}).encode())
    if seen.path == "/partyinfo/keys":
        parties = [NODE_KEY, base64.b64encode(b"p" * 32).decode()]
        return Reply(body=json.dumps({"keys": [{"key": k} for k in parties]}).encode())
    if seen.path == "/resend":
        return Reply(status=404, body=b"Message with hash was not found")
    return Reply(body=b"I'm up!")


@pytest.fixture
def scrape(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    refused_address: Callable[[], str],
) -> str:
    """/metrics of a proxy that served, retried, mirrored and failed over: every series set."""
    flaky, good = upstreams("flaky"), upstreams("good")
    flaky.handler = lambda seen: Reply(status=404)
    checked = upstreams("checked")
    checked.handler = _checked_tessera
    dead = refused_address()
    proxy = start_proxy(
        {
            # one idle connection too many is shed (quorum_proxy_shed_connections_total); room
            # for a closed client connection the proxy has not yet seen close
            "limits": {"max_connections": 3},
            "upstreams": {
                "tessera": {"servers": [flaky.address, good.address]},
                "quorum": {"servers": [dead, good.address], "max_fails": 1},
                # The stack's Tessera deep check (node_bootstrap.proxy.standalone_deep_check)
                # on one stand-in, all its probes on the one port.
                "third_party": {
                    "servers": [checked.address],
                    "health_check": {
                        "type": "tessera",
                        "interval": 0.2,
                        "timeout": 1,
                        "public_key": NODE_KEY,
                        "third_party_port": "server",
                        "p2p_port": "server",
                    },
                },
            },
            "listeners": [
                {
                    "name": "p2p",
                    "listen": "127.0.0.1:0",
                    "protocol": "http",
                    "routes": [
                        {
                            "prefix": "/",
                            "upstream": "tessera",
                            "retry_on": ["http_404"],
                            "retry_non_idempotent": True,
                            "mirror": {"upstream": "tessera"},
                        }
                    ],
                },
                {
                    "name": "quorum-rpc",
                    "listen": "127.0.0.1:0",
                    "protocol": "tcp",
                    "upstream": "quorum",
                },
                # the stack's mode for 22000 (issue 13): its series exist from the start
                {
                    "name": "quorum-jsonrpc",
                    "listen": "127.0.0.1:0",
                    "protocol": "jsonrpc",
                    "upstream": "quorum",
                },
            ],
        }
    )

    def metrics_text() -> str:
        return request(proxy.addr("admin"), "GET", "/metrics").body.decode()

    with Client(proxy.addr("p2p")) as client:
        for _ in range(2):
            assert client.request("POST", "/partyinfo", b"x").status == 200
    with Client(proxy.addr("quorum-rpc")) as client:
        client.request("GET", "/")
    wait_for(
        lambda: proxy.metric_sum("quorum_proxy_upstream_failures_total") > 0,
        what="a failed attempt on the dead server",
    )
    wait_for(
        lambda: "quorum_proxy_tessera_party_count{" in metrics_text(),
        what="the deep-checked Tessera's party count",
    )
    idle = [socket.create_connection(tuple(proxy.addr("p2p")), timeout=5) for _ in range(4)]
    try:
        wait_for(
            lambda: "quorum_proxy_shed_connections_total{" in metrics_text(),
            what="an idle connection shed over max_connections",
        )
        return metrics_text()
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("metric", [_param(m) for m in PROXY_METRICS])
def test_catalog_metric_is_exposed_with_its_dimension_labels(scrape: str, metric: Metric) -> None:
    assert metric.name in prometheus_families(scrape), f"/metrics has no {metric.name}"
    labels = list(series_labels(scrape, metric.name))
    assert labels, f"{metric.name} has no series"
    for dimensions in metric.dimension_sets:
        # `node` is the machine's, added by the scrape config (domain.metrics.NODE_LABEL).
        needed = (
            set(dimensions) - {NODE_LABEL} if metric.source == "ipc_proxy" else set(dimensions)
        )
        assert all(needed <= names for names in labels), (metric.name, dimensions)


@pytest.mark.parametrize("metric", [_param(m) for m in PROXY_METRICS])
def test_catalog_metric_type_is_what_the_agent_is_told(scrape: str, metric: Metric) -> None:
    # The agent sends counters as deltas and gauges as they are; histograms it drops.
    declared = {
        line.split()[2]: line.split()[3]
        for line in scrape.splitlines()
        if line.startswith("# TYPE ")
    }
    assert declared[metric.name] == metric.kind


def test_every_proxy_metric_is_declared_to_the_agent_once() -> None:
    selectors = [
        selector.strip("^$")
        for declaration in metric_declarations("proxy", PROXY_JOB)
        for selector in declaration["metric_selectors"]
    ]
    assert sorted(selectors) == sorted(m.name for m in scraped("proxy"))


def test_mirror_failure_results_are_the_proxys_own(scrape: str) -> None:
    # metrics.py documents the results; a renamed one would silence the mirror alarm.
    from quorum_proxy.metrics import Metrics

    help_text = Metrics().mirror.help
    for result in ("ok", *MIRROR_FAILURE_RESULTS):
        assert result in help_text
