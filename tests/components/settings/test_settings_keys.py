"""The existing keys section (components/settings/keys.py), from secret config."""

from __future__ import annotations

import base64
import json

import pytest
from eth_keyfile import create_keyfile_json
from nacl.public import PrivateKey
from settings_support import settings

from components.settings import ConfigError


# --- keys of an existing node, from secret config -------------------------------------------
def tessera_pair() -> tuple[str, str]:
    private = PrivateKey.generate()
    return (
        base64.b64encode(bytes(private)).decode(),
        base64.b64encode(bytes(private.public_key)).decode(),
    )


def test_existing_tessera_pair_is_accepted_and_kept_out_of_repr() -> None:
    private, public = tessera_pair()
    s = settings(tesseraPrivateKey=private, tesseraPublicKey=public)
    assert s.keys.tessera_public_key == public
    assert s.keys.tessera_private_key == private
    assert private not in repr(s)


def test_mismatched_tessera_pair_is_refused() -> None:
    private, _ = tessera_pair()
    _, other_public = tessera_pair()
    with pytest.raises(ConfigError, match=r"tesseraPublicKey.*do not match") as refused:
        settings(tesseraPrivateKey=private, tesseraPublicKey=other_public)
    assert private not in str(refused.value)


def test_half_a_tessera_pair_is_refused() -> None:
    private, _ = tessera_pair()
    with pytest.raises(ConfigError, match=r"quorum-ha:tesseraPublicKey.*set together"):
        settings(tesseraPrivateKey=private)


def test_tessera_private_key_of_wrong_size_is_refused_without_echo() -> None:
    _, public = tessera_pair()
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(ConfigError) as refused:
        settings(tesseraPrivateKey=short, tesseraPublicKey=public)
    assert "[secret]" in str(refused.value) and short not in str(refused.value)


def test_existing_keystore_must_open_with_its_password() -> None:
    keystore = json.dumps(create_keyfile_json(b"\x01" * 32, b"right", iterations=2))
    s = settings(quorumAccountKeystore=keystore, quorumAccountPassword="right")
    assert s.keys.quorum_account_keystore == keystore
    with pytest.raises(ConfigError, match=r"quorumAccountKeystore.*unlocks") as refused:
        settings(quorumAccountKeystore=keystore, quorumAccountPassword="wrong")
    assert "wrong" not in str(refused.value).split("allowed")[0]
    assert keystore not in str(refused.value)


@pytest.mark.parametrize("address", [None, "0x" + "ab" * 20, "ab" * 20])
def test_a_keystore_whose_address_geth_cannot_unlock_by_is_refused(address: str | None) -> None:
    keystore = create_keyfile_json(bytes(range(1, 33)), b"kept", iterations=2)
    keystore.pop("address")
    if address is not None:
        keystore["address"] = address
    with pytest.raises(ConfigError) as error:
        settings(quorumAccountKeystore=json.dumps(keystore), quorumAccountPassword="kept")
    message = str(error.value)
    assert message.startswith("quorum-ha:quorumAccountKeystore: [secret] is not valid")
    assert "address" in message
