"""The tags section (components/settings/tags.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from settings_support import settings

from components.settings import ConfigError


@dataclass(frozen=True)
class BadTag:
    label: str
    tags: dict[str, Any]
    shown: str  # the value the refusal must echo


BAD_TAGS = (
    BadTag("ampersand in value", {"team": "a&b"}, "'a&b'"),
    BadTag("comma in value", {"a": "b,c"}, "'b,c'"),
    BadTag("rds: key prefix", {"rds:owner": "x"}, "'rds:owner'"),
    BadTag("aws: key prefix", {"aws:owner": "x"}, "'aws:owner'"),
    BadTag("AWS: key prefix any case", {"AWS:owner": "x"}, "'AWS:owner'"),
    BadTag("aws: value prefix", {"owner": "aws:x"}, "'aws:x'"),
    BadTag("rds: value prefix", {"owner": "rds:x"}, "'rds:x'"),
    BadTag("ampersand in key", {"a&b": "x"}, "'a&b'"),
    BadTag("hash in key", {"cost#centre": "x"}, "'cost#centre'"),
    BadTag("empty key", {"": "x"}, "''"),
    BadTag("key too long", {"k" * 129: "x"}, "'kkk"),
    BadTag("value too long", {"k": "v" * 257}, "'vvv"),
    BadTag("value not a string", {"k": 3}, "3"),
    BadTag("newline in value", {"k": "a\nb"}, "'a\\nb'"),
)


@pytest.mark.parametrize("bad", BAD_TAGS, ids=lambda b: b.label)
def test_tags_rds_or_ecs_would_refuse_are_refused_as_config(bad: BadTag) -> None:
    # The tags reach every resource through default_tags: RDS (API Tag) and ECS (TagResource)
    # refuse these, so `up` would fail midway.
    with pytest.raises(ConfigError) as refused:
        settings(tags=bad.tags)
    message = str(refused.value)
    assert message.startswith("quorum-ha:tags."), message
    assert bad.shown in message and "\n" not in message
    assert "allowed: " in message


def test_too_many_tags_are_refused() -> None:
    # 50 tags per resource (RDS, ECS, EC2...); the program adds its own to the user's.
    with pytest.raises(ConfigError, match=r"^quorum-ha:tags: .* at most \d+ tags"):
        settings(tags={f"k{i}": "v" for i in range(50)})


@pytest.mark.parametrize(
    "tags",
    [
        {"team": "payments", "cost-centre": "CC 1234"},
        {"owner": "alice@example.com", "path": "a/b=c+d:e_f.g"},
        {"équipe": "Zürich", "empty": ""},
        {"k" * 128: "v" * 256},
        {"my-aws:thing": "not-a-prefix-aws:"},
    ],
)
def test_tags_every_service_accepts_are_kept(tags: dict[str, str]) -> None:
    assert dict(settings(tags=tags).tags) == tags
