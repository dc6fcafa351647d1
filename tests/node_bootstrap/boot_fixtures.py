"""Contexts for every setup, role and node count, built the way the infrastructure builds them.

The fixture stack keeps secret values next to their ARNs (as Secrets Manager would); only the
ARNs may reach a context. SECRET_VALUES lists what must never appear in any rendered file.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from node_bootstrap import NodeBootContext

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ZONE = "node.quorum-ha.internal"
NLB = "quorum-ha-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com"
PROXY_IMAGE = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/quorum-ha-proxy:0.1.0"


def arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


def enode(i: int, host: str) -> str:
    return f"enode://{format(i + 1, 'x') * 128}@{host}:30303?discport=0"


# Values a real stack would keep in Secrets Manager. None of them may reach user data.
SECRETS = {
    arn("quorum-ha/db"): json.dumps(
        {"username": "tessera_owner", "password": "Fixture-DB-Pass-7c1e9d"}
    ),
    arn("quorum-ha/quorum-account"): json.dumps(
        {
            "keystore": {"address": "f0e1d2c3b4a5968778695a4b3c2d1e0f11223344", "crypto": {}},
            "password": "Fixture-Account-Pass-55aa01",
        }
    ),
    "quorum-ha/tesseraKey": "Fixture/TesseraPrivateKey+9f8e7d6c5b4a39281706f5e4d3c2b1a0=",
    "quorum-ha/tesseraPub": "FixtureTesseraPublicKey0123456789abcdefABCDEF=",
}
SECRETS |= {
    arn(f"quorum-ha/quorum-node-key-{i}"): f"{i:02d}fixture" + "c0ffee" * 9 + f"{i:02d}"
    for i in range(3)
}
SECRET_VALUES = (
    "Fixture-DB-Pass-7c1e9d",
    "Fixture-Account-Pass-55aa01",
    "Fixture/TesseraPrivateKey+9f8e7d6c5b4a39281706f5e4d3c2b1a0=",
    *(SECRETS[arn(f"quorum-ha/quorum-node-key-{i}")] for i in range(3)),
)

GENESIS = {
    "config": {
        "chainId": 1337,
        "isQuorum": True,
        "qbft": {"blockperiodseconds": 5, "epochlength": 30000, "requesttimeoutseconds": 10},
    },
    "alloc": {},
    "difficulty": "0x1",
    "gasLimit": "0xE0000000",
}


@dataclass(frozen=True)
class Case:
    """One machine of one stack: which setup, how many nodes, which role and index."""

    setup: str
    nodes: int
    role: str
    index: int

    @property
    def id(self) -> str:
        return f"{self.setup}{self.nodes}-{self.role}{self.index}"


def cases() -> list[Case]:
    out: list[Case] = []
    for nodes in (2, 3):
        out += [Case("pair", nodes, "pair", i) for i in range(nodes)]
        out += [Case("full", nodes, "quorum", i) for i in range(nodes)]
        out += [Case("full", nodes, "tessera", i) for i in range(nodes)]
        out += [Case("tessera", nodes, "quorum", 0)]
        out += [Case("tessera", nodes, "tessera", i) for i in range(nodes)]
    return out


CASES = cases()


def make_context(case: Case, **overrides: object) -> NodeBootContext:
    quorum_count = 1 if case.setup == "tessera" else case.nodes
    if case.setup == "pair":
        quorum_names = tuple(f"pair-{i}.{ZONE}" for i in range(case.nodes))
        tessera_names = quorum_names
    else:
        quorum_names = tuple(f"quorum-{i}.{ZONE}" for i in range(quorum_count))
        tessera_names = tuple(f"tessera-{i}.{ZONE}" for i in range(case.nodes))
    own = tessera_names if case.role == "tessera" else quorum_names
    fields: dict[str, object] = {
        "setup": case.setup,
        "role": case.role,
        "index": case.index,
        "region": REGION,
        "node_dns_name": own[case.index],
        "quorum_dns_names": quorum_names,
        "tessera_dns_names": tessera_names,
        "p2p_url": f"http://{NLB}:9001",
        "third_party_url": f"http://{NLB}:9081",
        "tessera_key_id": "quorum-ha/tessera",
        "quorum_account_secret_arn": arn("quorum-ha/quorum-account"),
        "quorum_node_key_secret_arn": arn(f"quorum-ha/quorum-node-key-{case.index}"),
        "db_secret_arn": arn("quorum-ha/db"),
        "jdbc_url": (
            "jdbc:postgresql://tessera-db.abc.eu-west-1.rds.amazonaws.com:5432,"
            "tessera-db-replica.abc.eu-west-1.rds.amazonaws.com:5432/tessera"
            "?targetServerType=primary&sslmode=require"
        ),
        "quorum_version": "24.4.1",
        "tessera_version": "24.4",
        "proxy_image_uri": None if case.setup == "pair" else PROXY_IMAGE,
        "genesis_json": json.dumps(GENESIS),
        "ha_enodes": tuple(enode(i, name) for i, name in enumerate(quorum_names)),
        "peer_enodes": (enode(7, "10.20.0.5"), enode(8, "validator-1.example.net")),
        "tessera_peer_urls": ("http://tessera.partner-a.example.net:9001",),
        "network_id": 1337,
        "log_group_name": "/quorum-ha/dev/nodes",
        "data_volume_id": f"vol-0abc{case.index:03d}def0123456",
    }
    fields |= overrides
    return NodeBootContext(**fields)  # type: ignore[arg-type]


def replace(ctx: NodeBootContext, **changes: object) -> NodeBootContext:
    return dataclasses.replace(ctx, **changes)  # type: ignore[arg-type]


def require_tool(name: str) -> str:
    """The tool's path; under CI a missing tool fails the test, locally it skips with a reason."""
    path = shutil.which(name)
    if path:
        return path
    reason = (
        f"{name} is not installed (Debian package listed in apt-packages.txt; ./dev installs it)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason + "; CI is not set, so skipping locally")


def cloud_config_doc(user_data: str) -> dict[str, Any]:
    """The parsed #cloud-config document."""
    assert user_data.startswith("#cloud-config\n")
    doc = yaml.safe_load(user_data)
    assert isinstance(doc, dict)
    return doc


def written_files(doc: dict[str, Any]) -> dict[str, str]:
    """Path -> content of write_files, gz+b64 entries decoded as cloud-init decodes them."""
    out: dict[str, str] = {}
    for entry in doc["write_files"]:
        content = entry["content"]
        if entry.get("encoding") == "gz+b64":
            content = gzip.decompress(base64.b64decode(content)).decode()
        else:
            assert "encoding" not in entry
        out[entry["path"]] = content
    return out


def parse_env(text: str) -> dict[str, str]:
    """KEY="value" lines of boot.env (the renderer never writes anything else)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, quoted = line.partition("=")
        assert quoted.startswith('"') and quoted.endswith('"'), line
        values[key] = quoted[1:-1]
    return values
