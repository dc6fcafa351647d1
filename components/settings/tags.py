"""`quorum-ha:tags`: the user's tags, on every resource through the provider's default_tags."""

from __future__ import annotations

import unicodedata

from components.settings.raw import Raw
from domain.errors import ConfigError

KEYS = ("tags",)
# Tags reach every resource through the provider's default_tags: they follow the strictest
# service's rule, RDS's (API Tag: `^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$`, no aws:/rds: prefix on keys or
# values; the ECS, ECR, EC2... rules are looser). 50 tags per resource everywhere (RDS, ECS,
# EC2 tagging guides); the program adds 3 default tags and up to 2 of a resource's own (Name,
# quorum-ha/tier).
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_RESERVED_TAG_PREFIXES = ("aws:", "rds:")
_TAG_TEXT = (
    "characters: Unicode letters, digits, spaces and _ . : / = + - @, not starting with aws: "
    "or rds:"
)
TAGS_PER_RESOURCE = 50
MAX_USER_TAGS = TAGS_PER_RESOURCE - 5


def parse(raw: Raw) -> dict[str, str]:
    key = raw.key("tags")
    value = raw.parsed("tags")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "an object of string tag values")
    if len(value) > MAX_USER_TAGS:
        raise ConfigError(
            key,
            f"{len(value)} tags",
            f"at most {MAX_USER_TAGS} tags (AWS allows 50 per resource; the program adds "
            f"{TAGS_PER_RESOURCE - MAX_USER_TAGS} of its own)",
        )
    for tag, tag_value in value.items():
        if not 1 <= len(tag) <= 128 or not _tag_text(tag):
            raise ConfigError(f"{key}.{tag}", tag, f"a tag key of 1-128 {_TAG_TEXT}")
        if not isinstance(tag_value, str) or len(tag_value) > 256 or not _tag_text(tag_value):
            raise ConfigError(f"{key}.{tag}", tag_value, f"a tag value of 0-256 {_TAG_TEXT}")
    return dict(value)


def _tag_text(text: str) -> bool:
    """RDS's rule, the strictest of the tagged services (RDS API Tag; ECS and ECR allow the
    same characters): Unicode letters, digits and spaces, `_.:/=+-@`, no aws:/rds: prefix."""
    if text.lower().startswith(_RESERVED_TAG_PREFIXES):
        return False
    return all(unicodedata.category(c)[0] in "LZN" or c in _TAG_PUNCTUATION for c in text)
