"""Shared fixtures: the program run offline under Pulumi mocks, once per shape per session."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tools.offline import OfflineRun, load_stack_config, run_offline

# (setup, quorumNodes, tesseraNodes): the smallest HA shape of each setup and a larger one.
SHAPES = (
    ("pair", 2, 2),
    ("pair", 3, 3),
    ("full", 2, 2),
    ("full", 3, 4),
    ("tessera", 1, 2),
    ("tessera", 1, 3),
)
LARGEST = ("full", 3, 4)


def stack_config(
    setup: str = "pair", quorum: int | None = None, tessera: int | None = None, **extra: Any
) -> dict[str, Any]:
    """The dev stack's config with the setup, counts and any `quorum-ha:` keys replaced."""
    config = dict(load_stack_config("dev"))
    config["quorum-ha:setup"] = setup
    if setup == "tessera" and quorum is None:
        quorum = 1  # the dev stack's count is for pairs; setup 3 has one Quorum machine
    if quorum is not None:
        config["quorum-ha:quorumNodes"] = quorum
    if tessera is not None:
        config["quorum-ha:tesseraNodes"] = tessera
    for key, value in extra.items():
        if value is None:
            config.pop(f"quorum-ha:{key}", None)
        else:
            config[f"quorum-ha:{key}"] = value
    return config


RunProgram = Callable[..., OfflineRun]


@pytest.fixture(scope="session")
def offline() -> RunProgram:
    """Run the program offline; identical requests share one run per session."""
    cache: dict[str, OfflineRun] = {}

    def run(
        setup: str = "pair",
        quorum: int | None = None,
        tessera: int | None = None,
        *,
        stack: str = "dev",
        secrets: Mapping[str, Any] | None = None,
        stack_outputs: Mapping[str, Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> OfflineRun:
        config = stack_config(setup, quorum, tessera, **extra)
        key = json.dumps([config, stack, secrets, stack_outputs], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = run_offline(
                config, stack=stack, secrets=secrets, stack_outputs=stack_outputs
            )
        return cache[key]

    return run


@pytest.fixture(scope="session", params=SHAPES, ids=lambda s: f"{s[0]}-q{s[1]}-t{s[2]}")
def shape(request: pytest.FixtureRequest) -> tuple[str, int, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def shaped_run(offline: RunProgram, shape: tuple[str, int, int]) -> OfflineRun:
    """The program's run for each shape in SHAPES."""
    return offline(*shape)
