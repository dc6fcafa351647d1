"""The machines: how many of each role, on which instance type, running which releases
(components/nodes.py `Nodes`, and each machine's boot context)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.setups import Setup
from domain.versions import DEFAULT_QUORUM_VERSION, DEFAULT_TESSERA_VERSION

KEYS = (
    "quorumNodes",
    "tesseraNodes",
    "quorumInstanceType",
    "tesseraInstanceType",
    "quorumVersion",
    "tesseraVersion",
)
DEFAULT_INSTANCE_TYPE = "m6i.large"
MAX_NODES = 16  # one /20 subnet per AZ and one private zone hold far more; this bounds mistakes

# Graviton (arm64) families: a1, and any family whose generation digit is followed by "g"
# (m7g, t4g, c6gn, x2gd, im4gn, is4gen, g5g...). Tessera publishes no arm64 image since 23.4.
_GRAVITON = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)$")
_INSTANCE_TYPE = re.compile(r"^([a-z][a-z0-9-]*)\.([a-z0-9]+)$")
_QUORUM_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_TESSERA_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    """Quorum and Tessera machine counts (pairs count as both), types and releases."""

    quorum_count: int
    tessera_count: int
    quorum_instance_type: str = DEFAULT_INSTANCE_TYPE
    tessera_instance_type: str = DEFAULT_INSTANCE_TYPE
    quorum_version: str = DEFAULT_QUORUM_VERSION
    tessera_version: str = DEFAULT_TESSERA_VERSION


def parse(raw: Raw, setup: Setup) -> NodeSettings:
    quorum, tessera = _counts(raw, setup)
    quorum_version = raw.str_("quorumVersion", DEFAULT_QUORUM_VERSION)
    if not quorum_version or not _QUORUM_VERSION.match(quorum_version):
        raise ConfigError(raw.key("quorumVersion"), quorum_version, "a version like 24.4.1")
    tessera_version = raw.str_("tesseraVersion", DEFAULT_TESSERA_VERSION)
    if not tessera_version or not _TESSERA_VERSION.match(tessera_version):
        raise ConfigError(raw.key("tesseraVersion"), tessera_version, "a version like 24.4")
    return NodeSettings(
        quorum_count=quorum,
        tessera_count=tessera,
        quorum_instance_type=_instance_type(
            raw.key("quorumInstanceType"), raw.str_("quorumInstanceType", DEFAULT_INSTANCE_TYPE)
        ),
        tessera_instance_type=_instance_type(
            raw.key("tesseraInstanceType"), raw.str_("tesseraInstanceType", DEFAULT_INSTANCE_TYPE)
        ),
        quorum_version=quorum_version,
        tessera_version=tessera_version,
    )


def _instance_type(key: str, value: str | None) -> str:
    assert value is not None
    match = _INSTANCE_TYPE.match(value)
    if not match:
        raise ConfigError(key, value, "an EC2 instance type such as m6i.large")
    family = match.group(1)
    if _GRAVITON.match(family):
        raise ConfigError(
            key,
            value,
            "an x86_64 instance type (e.g. m6i, m7i, c6i, r6i families): "
            "Tessera publishes no arm64 image since 23.4, so Graviton types cannot run it",
        )
    if family.startswith("mac"):
        raise ConfigError(key, value, "an x86_64 instance type that needs no dedicated host")
    return value


def _counts(raw: Raw, setup: Setup) -> tuple[int, int]:
    if setup == "pair":
        quorum = raw.int_("quorumNodes", 2)
        if quorum < 2:
            raise ConfigError(raw.key("quorumNodes"), quorum, "pair setup: 2 or more pairs")
        tessera = raw.int_("tesseraNodes", quorum)
        if tessera != quorum:
            raise ConfigError(
                raw.key("tesseraNodes"),
                tessera,
                f"pair setup: equal to quorumNodes ({quorum}); each machine runs one of each",
            )
    elif setup == "full":
        quorum = raw.int_("quorumNodes", 2)
        if quorum < 2:
            raise ConfigError(raw.key("quorumNodes"), quorum, "full setup: 2 or more")
        tessera = raw.int_("tesseraNodes", 2)
        if tessera < 2:
            raise ConfigError(raw.key("tesseraNodes"), tessera, "full setup: 2 or more")
    else:
        quorum = raw.int_("quorumNodes", 1)
        if quorum != 1:
            raise ConfigError(
                raw.key("quorumNodes"), quorum, "tessera setup: exactly 1 (use full for more)"
            )
        tessera = raw.int_("tesseraNodes", 2)
        if tessera < 2:
            raise ConfigError(raw.key("tesseraNodes"), tessera, "tessera setup: 2 or more")
    for name, count in (("quorumNodes", quorum), ("tesseraNodes", tessera)):
        if count > MAX_NODES:
            raise ConfigError(raw.key(name), count, f"at most {MAX_NODES}")
    return quorum, tessera
