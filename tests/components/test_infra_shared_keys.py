"""SharedKeys: key derivation, stable across runs, stored where Tessera and Quorum read them."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable

import pytest
from eth_keyfile import create_keyfile_json, decode_keyfile_json
from eth_keys import keys as eth_keys
from nacl.public import Box, PrivateKey

from components.shared_keys import (
    account_keystore,
    keystore_address,
    node_public_key,
    tessera_key_pair,
)
from tests.inspection import public_texts
from tools.offline import OfflineRun, run_offline
from tools.offline import load_stack_config as dev_config


def secret_values(run: OfflineRun) -> dict[str, str]:
    """Secret name -> the value stored in it."""
    names = {s.id: s.inputs["name"] for s in run.of_type("aws:secretsmanager/secret:Secret")}
    return {
        names[v.inputs["secretId"]]: v.inputs["secretString"]
        for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }


def test_tessera_pair_is_a_working_nacl_box_pair() -> None:
    public, private = tessera_key_pair(os.urandom(32))
    mine = PrivateKey(base64.b64decode(private))
    assert bytes(mine.public_key) == base64.b64decode(public)
    other = PrivateKey.generate()
    sealed = Box(other, mine.public_key).encrypt(b"payload")
    assert Box(mine, other.public_key).decrypt(sealed) == b"payload"


def test_keystore_opens_with_its_password_and_is_the_same_every_time() -> None:
    seed = os.urandom(32)
    first = account_keystore(seed, "a password")
    account_keystore.cache_clear()
    assert account_keystore(seed, "a password") == first  # no churn on the next `pulumi up`
    assert decode_keyfile_json(json.loads(first), b"a password") == seed
    assert keystore_address(first) == eth_keys.PrivateKey(seed).public_key.to_checksum_address()
    assert account_keystore(seed, "another password") != first


def test_node_public_key_is_the_enode_id() -> None:
    seed = os.urandom(32)
    expected = eth_keys.PrivateKey(seed).public_key.to_bytes().hex()
    assert node_public_key(seed.hex()) == expected and len(expected) == 128


def test_tessera_secrets_are_named_as_tesseras_vault_reads_them(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    values = secret_values(run)
    public = values["quorum-ha/dev/tesseraPub"]
    private = values["quorum-ha/dev/tesseraKey"]
    assert public == run.outputs["tesseraPublicKey"]
    assert tessera_key_pair(base64.b64decode(private))[0] == public
    account = json.loads(values["quorum-ha/dev/quorum-account"])
    address = decode_keyfile_json(account["keystore"], account["password"].encode())
    assert (
        eth_keys.PrivateKey(address).public_key.to_checksum_address()
        == (run.outputs["quorumAccountAddress"])
    )
    db = json.loads(values["quorum-ha/dev/tessera-db"])
    assert db["username"] == "tessera"
    (primary,) = [
        d for d in run.of_type("aws:rds/instance:Instance") if "replicateSourceDb" not in d.inputs
    ]
    assert primary.inputs["password"] == db["password"] and "password" in primary.secret_paths
    for i, enode in enumerate(run.outputs["haEnodes"]):
        node_key = values[f"quorum-ha/dev/quorum-node-{i}"]
        assert enode.startswith(f"enode://{node_public_key(node_key)}@")


def test_private_material_is_secret_in_state(offline: Callable[..., OfflineRun]) -> None:
    run = offline("pair")
    for version in run.of_type("aws:secretsmanager/secretVersion:SecretVersion"):
        assert "secretString" in version.secret_paths, version.name
    for seed in run.of_type("random:index/randomBytes:RandomBytes"):
        assert seed.inputs["length"] == 32


def test_keys_are_stable_across_runs() -> None:
    """Seeds live in state: a second `pulumi up` derives the very same keys and secrets."""
    config = dev_config("dev")
    first, second = run_offline(config), run_offline(config)
    assert secret_values(first) == secret_values(second)
    assert first.outputs["tesseraPublicKey"] == second.outputs["tesseraPublicKey"]


def test_supplied_keys_are_used_instead_of_generated_ones() -> None:
    tessera = PrivateKey.generate()
    account = bytes(range(1, 33))
    keystore = json.dumps(create_keyfile_json(account, b"kept", iterations=2))
    secrets = {
        "quorum-ha:tesseraPrivateKey": base64.b64encode(bytes(tessera)).decode(),
        "quorum-ha:tesseraPublicKey": base64.b64encode(bytes(tessera.public_key)).decode(),
        "quorum-ha:quorumAccountKeystore": keystore,
        "quorum-ha:quorumAccountPassword": "kept",
    }
    run = run_offline(dev_config("dev"), secrets=secrets)
    values = secret_values(run)
    assert values["quorum-ha/dev/tesseraKey"] == secrets["quorum-ha:tesseraPrivateKey"]
    assert run.outputs["tesseraPublicKey"] == secrets["quorum-ha:tesseraPublicKey"]
    stored = json.loads(values["quorum-ha/dev/quorum-account"])
    assert stored == {"keystore": json.loads(keystore), "password": "kept"}
    seeds = {s.name for s in run.of_type("random:index/randomBytes:RandomBytes")}
    assert not any("tessera" in s or "account" in s for s in seeds)
    assert len(seeds) == 2  # the two node keys are always generated


@pytest.mark.parametrize("setup", ["pair", "tessera"])
def test_one_node_key_per_quorum_node(offline: Callable[..., OfflineRun], setup: str) -> None:
    run = offline(setup)
    names = [n for n in secret_values(run) if "/quorum-node-" in n]
    assert len(names) == len(run.outputs["haEnodes"]) == (2 if setup == "pair" else 1)


def test_logs_may_use_the_key_only_for_this_stacks_log_groups(
    offline: Callable[..., OfflineRun],
) -> None:
    run = offline("full")
    (key,) = run.of_type("aws:kms/key:Key")
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    logs = statements["LogsEncryptThisStacksLogGroups"]
    assert logs["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    scope = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert scope == "arn:aws:logs:us-east-1:123456789012:log-group:/quorum-ha/dev/*"
    for group in run.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group.state["arn"].startswith(scope.rstrip("*")), group.name
    assert statements["AccountAdministers"]["Principal"] == {
        "AWS": "arn:aws:iam::123456789012:root"
    }


@pytest.mark.parametrize(
    ("stack", "deletion_protection", "days"),
    [
        ("dev", None, 0),
        ("dev-alice", None, 0),
        ("e2e-1a2b3c4d", False, 0),  # the ephemeral test: the dev stack's config, renamed
        ("prod", None, 30),
        ("prod", False, 30),
    ],
)
def test_secrets_of_non_production_stacks_are_deleted_without_recovery(
    offline: Callable[..., OfflineRun],
    stack: str,
    deletion_protection: bool | None,
    days: int,
) -> None:
    """A re-created dev or e2e stack reuses its secrets' names at once; production keeps the
    30-day window whatever its deletion protection."""
    run = offline("pair", stack=stack, deletionProtection=deletion_protection)
    secrets = run.of_type("aws:secretsmanager/secret:Secret")
    assert secrets
    protected = days > 0 if deletion_protection is None else deletion_protection
    for secret in secrets:
        assert secret.inputs["recoveryWindowInDays"] == days, secret.name
        assert secret.inputs["name"].startswith(f"quorum-ha/{stack}/")
        assert secret.protect is protected


@pytest.mark.parametrize("replica_region", [None, "us-west-2"])
def test_the_key_is_multi_region_with_or_without_a_dr_replica(
    offline: Callable[..., OfflineRun], replica_region: str | None
) -> None:
    # KMS CreateKey: MultiRegion cannot change after creation, so adding DR later must not
    # ask for a different key (and with it a new database, volumes and repository).
    (key,) = offline("pair", replicaRegion=replica_region).of_type("aws:kms/key:Key")
    assert key.inputs["multiRegion"] is True


@pytest.mark.parametrize("setup", ["pair", "full"])
def test_supplied_keys_never_appear_in_clear(setup: str) -> None:
    """Secret config is wrapped everywhere it goes: no clear input, user data or output."""
    tessera = PrivateKey.generate()
    keystore = create_keyfile_json(bytes(range(1, 33)), b"supplied-password", iterations=2)
    secrets = {
        "quorum-ha:tesseraPrivateKey": base64.b64encode(bytes(tessera)).decode(),
        "quorum-ha:tesseraPublicKey": base64.b64encode(bytes(tessera.public_key)).decode(),
        "quorum-ha:quorumAccountKeystore": json.dumps(keystore),
        "quorum-ha:quorumAccountPassword": "supplied-password",
    }
    config = {**dev_config("dev"), "quorum-ha:setup": setup}
    run = run_offline(config, secrets=secrets)
    hidden = [
        secrets["quorum-ha:tesseraPrivateKey"],
        "supplied-password",
        keystore["crypto"]["ciphertext"],
    ]
    leaks = [(where, h[:6]) for where, text in public_texts(run) for h in hidden if h in text]
    assert leaks == []
    # Not vacuous: the supplied values did reach the program's resources, as secrets.
    values = secret_values(run)
    assert values["quorum-ha/dev/tesseraKey"] == secrets["quorum-ha:tesseraPrivateKey"]
    assert "supplied-password" in values["quorum-ha/dev/quorum-account"]
