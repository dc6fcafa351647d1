"""The one error type (domain/errors.py): key, value and what is allowed, on one line."""

from __future__ import annotations

import pytest

from domain.errors import ConfigError
from node_bootstrap.context import BootContextError
from node_bootstrap.tessera import TesseraConfigError


def test_the_message_names_the_key_the_value_and_what_is_allowed() -> None:
    error = ConfigError("quorum-ha:proxyCpu", 300, "one of [256, 512]")
    assert str(error) == "quorum-ha:proxyCpu: 300 is not valid; allowed: one of [256, 512]"
    assert error.key == "quorum-ha:proxyCpu"


def test_a_secret_value_is_never_shown() -> None:
    error = ConfigError("quorum-ha:tesseraPrivateKey", "c2VjcmV0", "a key", secret=True)
    assert "c2VjcmV0" not in str(error) and "[secret]" in str(error)


def test_a_long_value_is_cut_to_one_short_line() -> None:
    message = str(ConfigError("k", "x" * 500, "short"))
    assert "x" * 118 not in message and "..." in message and "\n" not in message


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (BootContextError("region", None, "a region"), "NodeBootContext.region: None is"),
        (TesseraConfigError("serverConfigs", [], "one P2P"), "tessera config serverConfigs: []"),
    ],
)
def test_where_the_key_lives_is_named_by_a_subclass(error: ConfigError, text: str) -> None:
    # Python values (boot context, Tessera config) in repr; config values as JSON.
    assert isinstance(error, ConfigError) and str(error).startswith(text)
