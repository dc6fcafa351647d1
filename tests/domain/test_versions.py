"""The pinned releases: well-formed where the machines and the settings read them."""

from __future__ import annotations

import re

from domain.versions import (
    DEFAULT_QUORUM_VERSION,
    DEFAULT_TESSERA_VERSION,
    POSTGRES_JDBC_SHA256,
    POSTGRES_JDBC_VERSION,
)


def test_the_jdbc_driver_pin_is_a_release_and_a_sha256() -> None:
    # start-tessera.sh compares the downloaded jar's sha256sum with it.
    assert re.fullmatch(r"\d+(\.\d+){1,3}", POSTGRES_JDBC_VERSION)
    assert re.fullmatch(r"[0-9a-f]{64}", POSTGRES_JDBC_SHA256)


def test_the_default_releases_have_the_shapes_the_settings_accept() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", DEFAULT_QUORUM_VERSION)
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", DEFAULT_TESSERA_VERSION)
