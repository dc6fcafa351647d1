"""Issue 13: the abuse limits' keys, defaults and errors (key, value, what is allowed)."""

from __future__ import annotations

from typing import Any

import pytest
from proxy_support import http_config
from quorum_proxy.config import ConfigError, Limits, parse_config


def test_the_abuse_limits_default_to_nginx_timeouts_and_a_64_mib_body_bound() -> None:
    limits = parse_config(http_config(["127.0.0.1:1"])).limits
    assert (limits.body_timeout, limits.send_timeout) == (60.0, 60.0)  # nginx's defaults
    assert limits.max_buffered_body_bytes == 64 << 20


def test_the_abuse_limits_are_read() -> None:
    given = {
        "header_timeout": "2s",
        "body_timeout": "500ms",
        "send_timeout": 3,
        "max_retry_body_bytes": 1000,
        "max_buffered_body_bytes": 5000,
    }
    limits = parse_config(http_config(["127.0.0.1:1"], limits=given)).limits
    assert limits == Limits(
        header_timeout=2.0,
        body_timeout=0.5,
        send_timeout=3.0,
        max_retry_body_bytes=1000,
        max_buffered_body_bytes=5000,
    )


def test_a_per_request_bound_over_the_default_global_one_raises_the_global_one() -> None:
    limits = parse_config(
        http_config(["127.0.0.1:1"], limits={"max_retry_body_bytes": 128 << 20})
    ).limits
    assert limits.max_buffered_body_bytes == 128 << 20


@pytest.mark.parametrize(
    "given, key, allowed",
    [
        ({"body_timeout": "0s"}, "limits.body_timeout", "a duration > 0"),
        ({"send_timeout": "soon"}, "limits.send_timeout", "a duration"),
        ({"header_timeout": 0}, "limits.header_timeout", "a duration > 0"),
        (
            {"max_retry_body_bytes": 4096, "max_buffered_body_bytes": 1024},
            "limits.max_buffered_body_bytes",
            "an integer >= limits.max_retry_body_bytes (4096)",
        ),
        ({"max_buffered_body_bytes": "1m"}, "limits.max_buffered_body_bytes", "an integer"),
    ],
)
def test_a_bad_abuse_limit_names_key_value_and_allowed(
    given: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(http_config(["127.0.0.1:1"], limits=given))
    message = str(err.value)
    assert message.startswith(f"{key}: ")
    assert allowed in message.split("allowed:", 1)[1]
