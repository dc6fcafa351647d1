"""The metric catalog: one definition per metric, and what the agents are told from it."""

from __future__ import annotations

import re

import yaml

from domain.metrics import (
    BY_KEY,
    CATALOG,
    CLOUDWATCH_AGENT_IMAGE,
    PROXY_NAMESPACE,
    QUORUM_NAMESPACE,
    ScrapeJob,
    metric_declarations,
    prometheus_scrape_config,
    series_labels,
)


def test_each_metric_is_defined_once_with_names_cloudwatch_accepts() -> None:
    assert len(BY_KEY) == len(CATALOG)
    for metric in CATALOG:
        # PutMetricData: metric names 1-255 characters, at most 30 dimensions.
        assert 1 <= len(metric.name) <= 255
        assert metric.dimension_sets and all(1 <= len(s) <= 30 for s in metric.dimension_sets)
        if metric.source == "aws":
            assert metric.namespace.startswith(("AWS/", "ECS/")) and metric.kind == "aws"
        else:
            assert metric.namespace in (PROXY_NAMESPACE, QUORUM_NAMESPACE)
            assert metric.kind in ("gauge", "counter")


def test_declarations_select_each_scraped_metric_by_exact_name_and_job() -> None:
    (declaration, *_) = metric_declarations("geth", "quorum")
    assert declaration["source_labels"] == ["job"]
    assert re.fullmatch(declaration["label_matcher"], "quorum")
    assert not re.fullmatch(declaration["label_matcher"], "quorum-2")
    names = [
        selector
        for d in metric_declarations("geth", "quorum")
        for selector in d["metric_selectors"]
    ]
    assert "^chain_head_block$" in names and "^p2p_peers$" in names
    assert not any(re.fullmatch(s, "chain_head_block_extra") for s in names)


def test_scrape_config_is_prometheus_yaml_for_one_local_target() -> None:
    parsed = yaml.safe_load(
        prometheus_scrape_config([ScrapeJob("proxy", "127.0.0.1:9900", "/metrics")], {"node": "a"})
    )
    (job,) = parsed["scrape_configs"]
    assert job["job_name"] == "proxy" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9900"], "labels": {"node": "a"}}]


def test_series_labels_read_quoted_commas_and_escapes() -> None:
    text = 'x_total{listener="a,b",route="/\\"q\\"",status="200"} 1\nx_total_other{k="v"} 2\n'
    assert list(series_labels(text, "x_total")) == [frozenset({"listener", "route", "status"})]


def test_the_sidecar_agent_image_is_pinned() -> None:
    assert re.fullmatch(
        r"public\.ecr\.aws/cloudwatch-agent/cloudwatch-agent:\d[\w.]+", CLOUDWATCH_AGENT_IMAGE
    )
