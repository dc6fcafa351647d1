"""The rules stack config and the machines' boot context share (domain/validation.py)."""

from __future__ import annotations

import pytest

from domain.validation import (
    genesis_is_quorum,
    http_url_host,
    is_enode_url,
    is_shell_safe,
    is_supported_region,
    partition,
)

NODE_ID = "ab" * 64


@pytest.mark.parametrize(
    "url",
    [
        f"enode://{NODE_ID}@10.0.0.1:30303",
        f"enode://{NODE_ID}@quorum-0.dev.quorum-ha.internal:30303?discport=0",
        # GoQuorum decodes the id with hex.DecodeString, which takes either case.
        f"enode://{NODE_ID.upper()}@10.0.0.1:30303",
        # Raft networks: URLv4 writes discport and raftport (ConsenSys/quorum urlv4.go).
        f"enode://{NODE_ID}@10.0.0.1:21000?discport=0&raftport=50400",
        f"enode://{NODE_ID}@[fd00::1]:30303",
        f"enode://{NODE_ID}@10.0.0.1:65535?discport=65535",
    ],
)
def test_enode_urls_goquorum_parses_are_accepted(url: str) -> None:
    assert is_enode_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"enode://{NODE_ID[:-2]}@10.0.0.1:30303",  # 63 bytes
        f"enode://{NODE_ID}@10.0.0.1",  # no port
        f"enode://{NODE_ID}@10.0.0.1:65536",  # ParseUint(port, 10, 16) refuses it
        f"enode://{NODE_ID}@10.0.0.1:30303?discport=x",  # "invalid discport in query"
        f"enode://{NODE_ID}@10.0.0.1:21000?raftport=70000",  # "invalid raftport in query"
        f"enode://{NODE_ID}@[not-v6]:30303",
        f"enode://{NODE_ID}@host$(reboot):30303",  # lands in boot files
        f"enode://{NODE_ID}@a b:30303",
        f"http://{NODE_ID}@10.0.0.1:30303",
        None,
    ],
)
def test_enode_urls_goquorum_or_the_boot_files_refuse_are_refused(url: str | None) -> None:
    assert not is_enode_url(url)


@pytest.mark.parametrize(
    ("region", "supported"),
    [
        ("us-east-1", True),
        ("eu-west-1", True),
        ("ap-southeast-7", True),
        ("us-gov-west-1", True),
        # Endpoints outside amazonaws.com: the machines could not reach Secrets Manager.
        ("cn-north-1", False),
        ("us-iso-east-1", False),
        ("us-isob-east-1", False),
        ("eu-isoe-west-1", False),
        ("us-isof-south-1", False),
        ("useast1", False),
        ("", False),
        (None, False),
    ],
)
def test_only_regions_of_the_amazonaws_com_partitions_are_supported(
    region: str | None, supported: bool
) -> None:
    assert is_supported_region(region) is supported


def test_the_partition_of_a_gov_cloud_region_is_aws_us_gov() -> None:
    assert (partition("us-gov-east-1"), partition("eu-west-1")) == ("aws-us-gov", "aws")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://t2:9001", "t2"),
        ("https://tessera.partner.example:443/", "tessera.partner.example"),
        ("http://t2", None),  # no port
        ("ftp://t2:21", None),
        ("http://t2:9001/$(reboot)", None),
        ("http://t2:99999", None),
    ],
)
def test_http_url_host_needs_scheme_host_port_and_shell_safe_text(
    url: str, host: str | None
) -> None:
    assert http_url_host(url) == host


@pytest.mark.parametrize("text", ['a"b', "a'b", "a$b", "a`b", "a\\b", "a b", "a\nb", "a\tb"])
def test_quotes_dollar_backtick_backslash_and_whitespace_are_shell_unsafe(text: str) -> None:
    assert not is_shell_safe(text)


@pytest.mark.parametrize(
    ("genesis", "is_quorum"),
    [
        ({"config": {"isQuorum": True}}, True),
        ({"config": {"isQuorum": "true"}}, False),
        ({"config": {"isQuorum": False}}, False),
        ({"config": {}}, False),
        ({"config": None}, False),
        ([], False),
    ],
)
def test_a_goquorum_genesis_says_is_quorum_true(genesis: object, is_quorum: bool) -> None:
    assert genesis_is_quorum(genesis) is is_quorum
