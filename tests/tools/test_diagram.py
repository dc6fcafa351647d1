"""The diagram is drawn from what was declared: a box per resource, arrows per reference."""

from __future__ import annotations

import re
from collections.abc import Callable

from tools.diagram import render_mermaid
from tools.offline import run_offline

Program = Callable[[], None]


def edges(text: str) -> set[tuple[str, str, str]]:
    found = set()
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(\w+) (?:-->|-\.->)(?:\|([^|]*)\|)? (\w+)", line)
        if match:
            found.add((match.group(1), match.group(3), match.group(2) or ""))
    return found


def test_boxes_are_grouped_by_the_component_that_declared_them(
    synthetic: Callable[..., Program],
) -> None:
    text = render_mermaid(run_offline({}, program=synthetic()), "pair")
    assert text.splitlines()[2] == "flowchart LR"
    # Clients are who the NLB's security group admits.
    assert text.splitlines()[3] == '  clients(["clients<br/>10.0.0.0/16, 10.9.0.0/16"])'
    nodes_block = text.split('subgraph nodes["Nodes: nodes"]')[1].split("end")[0]
    assert "tessera_1[" in nodes_block and "tessera_2[" in nodes_block
    nlb_block = text.split('subgraph proxy_nlb["NLB proxy-nlb (internal)"]')[1].split("end")[0]
    for port in (22000, 9081, 9001):
        assert f'proxy_listener_{port}([":{port} tcp"])' in nlb_block
    assert 'db_replica[("RDS postgres read replica' in text
    assert '{{"KMS key keys-kms<br/>rotation on"}}' in text
    assert 'keys_secrets{{"Secrets Manager (1)<br/>tessera"}}' in text


def test_arrows_follow_the_wiring(synthetic: Callable[..., Program]) -> None:
    found = edges(render_mermaid(run_offline({}, program=synthetic()), "pair"))
    expected = {
        ("clients", "proxy_listener_22000", ""),
        ("proxy_listener_9001", "proxy_service", "tg-9001"),
        ("proxy_service", "tessera_1", ""),
        ("proxy_service", "tessera_2", ""),
        ("tessera_1", "db_primary", ""),
        ("db_primary", "db_replica", "replicates"),
        ("keys_secrets", "keys_kms", "encrypted by"),
        ("tessera_1", "keys_secrets", "reads"),
        ("proxy_repo", "proxy_service", "image"),
    }
    assert expected <= found, expected - found


def test_a_node_the_proxy_does_not_name_gets_no_arrow(synthetic: Callable[..., Program]) -> None:
    found = edges(render_mermaid(run_offline({}, program=synthetic(3, proxied=2)), "pair"))
    assert ("proxy_service", "tessera_2", "") in found
    assert not any(src == "proxy_service" and dst == "tessera_3" for src, dst, _ in found)
    assert ("tessera_3", "db_primary", "") in found


def test_the_same_declarations_draw_the_same_text(synthetic: Callable[..., Program]) -> None:
    first = render_mermaid(run_offline({}, program=synthetic()), "full")
    second = render_mermaid(run_offline({}, program=synthetic()), "full")
    assert first == second
    assert first.startswith("%% Setup 2: full HA")
