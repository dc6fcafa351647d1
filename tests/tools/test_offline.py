"""The offline engine gives the URNs the real engine gives, and resolves aliases as it does."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_random as random

from tests.inspection import previous_urns
from tools.offline import OfflineRun, run_offline

STACK = "urn:pulumi:dev::quorum-ha::"


class _Box(pulumi.ComponentResource):
    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(type_, name, None, opts)


def _program(
    outer_type: str, outer_name: str = "app", aliases: list[pulumi.Alias] | None = None
) -> Callable[[], None]:
    def program() -> None:
        outer = _Box(outer_type, outer_name, pulumi.ResourceOptions(aliases=aliases))
        inner = _Box(
            "test:index:Inner", f"{outer_name}-inner", pulumi.ResourceOptions(parent=outer)
        )
        random.RandomBytes(
            f"{outer_name}-seed", length=32, opts=pulumi.ResourceOptions(parent=inner)
        )
        random.RandomBytes("plain", length=8, opts=pulumi.ResourceOptions(parent=outer))

    return program


def _run(program: Callable[[], None]) -> OfflineRun:
    return run_offline({}, program=program)


def test_real_urns_carry_the_whole_chain_of_parent_types() -> None:
    run = _run(_program("test:index:Outer"))
    assert run.named("app").real_urn == f"{STACK}test:index:Outer::app"
    assert run.named("app-seed").real_urn == (
        f"{STACK}test:index:Outer$test:index:Inner$random:index/randomBytes:RandomBytes::app-seed"
    )
    # The mock monitor's own URN keeps only the parent's last type.
    assert run.named("app-seed").urn == (
        f"{STACK}test:index:Inner$random:index/randomBytes:RandomBytes::app-seed"
    )


def test_aliases_are_recorded_as_the_sdk_sends_them() -> None:
    run = _run(_program("test:index:New", aliases=[pulumi.Alias(type_="test:index:Old")]))
    (alias,) = run.named("app").aliases
    assert alias["type"] == "test:index:Old" and not alias["noParent"]
    # Children carry no aliases of their own: the engine derives theirs from the parent's.
    assert run.named("app-seed").aliases == ()


def test_a_changed_parent_type_loses_every_child_without_an_alias() -> None:
    before = _run(_program("test:index:Old"))
    after = _run(_program("test:index:New"))
    assert set(previous_urns(before, after).values()) == {None}


def test_an_alias_on_the_parent_keeps_children_and_grandchildren() -> None:
    before = _run(_program("test:index:Old"))
    after = _run(_program("test:index:New", aliases=[pulumi.Alias(type_="test:index:Old")]))
    matches = previous_urns(before, after)
    assert matches[after.named("app-seed").real_urn] == before.named("app-seed").real_urn
    assert matches[after.named("plain").real_urn] == before.named("plain").real_urn


def test_a_renamed_parent_renames_only_the_children_named_after_it() -> None:
    """engine inheritedChildAlias: under `new` (alias `app`), `new-inner` is found as
    `app-inner`; `new-seed` under `new-inner` does not start with its own parent's name, so the
    engine looks for `new-seed` and creates it anew."""
    before = _run(_program("test:index:Outer"))
    after = _run(_program("test:index:Outer", "new", aliases=[pulumi.Alias(name="app")]))
    matches = previous_urns(before, after)
    assert matches[after.named("new-inner").real_urn] == before.named("app-inner").real_urn
    assert matches[after.named("plain").real_urn] == before.named("plain").real_urn
    assert matches[after.named("new-seed").real_urn] is None
