"""Keys of an existing node being made HA, from secret config (components/shared_keys.py)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

import pulumi
from nacl.public import PrivateKey

from components.settings.raw import Raw
from domain.errors import ConfigError
from domain.keys import account_address

KEYS = ("tesseraPrivateKey", "tesseraPublicKey", "quorumAccountKeystore", "quorumAccountPassword")


@dataclass(frozen=True, kw_only=True)
class ExistingKeys:
    """Keys of an existing node being made HA; never printed. The private key, keystore and
    password are secret config: `load_settings` keeps them as the SDK's secret Outputs."""

    # Plain text as parsed; Pulumi secrets once `load_settings` has read them as such.
    tessera_private_key: pulumi.Input[str] | None = field(default=None, repr=False)
    tessera_public_key: str | None = None
    quorum_account_keystore: pulumi.Input[str] | None = field(default=None, repr=False)
    quorum_account_password: pulumi.Input[str] | None = field(default=None, repr=False)


def parse(raw: Raw) -> ExistingKeys:
    private = raw.str_("tesseraPrivateKey")
    public = raw.str_("tesseraPublicKey")
    if (private is None) != (public is None):
        missing = "tesseraPublicKey" if public is None else "tesseraPrivateKey"
        raise ConfigError(
            raw.key(missing), None, "set together with its pair (both Tessera keys, or neither)"
        )
    if private is not None and public is not None:
        private_raw = _b64_key(raw.key("tesseraPrivateKey"), private, secret=True)
        _b64_key(raw.key("tesseraPublicKey"), public, secret=False)
        derived = base64.b64encode(bytes(PrivateKey(private_raw).public_key)).decode()
        if derived != public:
            raise ConfigError(
                raw.key("tesseraPublicKey"),
                public,
                "the public key of tesseraPrivateKey (they do not match)",
            )
    keystore = raw.str_("quorumAccountKeystore")
    password = raw.str_("quorumAccountPassword")
    if (keystore is None) != (password is None):
        missing = "quorumAccountPassword" if password is None else "quorumAccountKeystore"
        raise ConfigError(
            raw.key(missing),
            None,
            "set together with its pair (keystore and password, or neither)",
        )
    if keystore is not None and password is not None:
        _check_keystore(raw.key("quorumAccountKeystore"), keystore, password)
    return ExistingKeys(
        tessera_private_key=private,
        tessera_public_key=public,
        quorum_account_keystore=keystore,
        quorum_account_password=password,
    )


def _b64_key(key: str, value: str, *, secret: bool) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 32:
        raise ConfigError(key, value, "a base64 NaCl box key (32 bytes)", secret=secret)
    return decoded


def _check_keystore(key: str, keystore: str, password: str) -> None:
    # Imported here: eth_keyfile costs about a second to import (py_ecc), and only stacks that
    # supply a keystore need it.
    from eth_keyfile import decode_keyfile_json  # noqa: PLC0415 - see above

    try:
        parsed = json.loads(keystore)
        private = decode_keyfile_json(parsed, password.encode())
    except Exception:  # any failure means the pair cannot unlock the account
        raise ConfigError(
            key,
            keystore,
            "a v3 keystore JSON that quorumAccountPassword unlocks",
            secret=True,
        ) from None
    # geth unlocks the account by the file's "address", and the stack exports it.
    address = parsed.get("address")
    if not isinstance(address, str) or address.lower() != account_address(private)[2:].lower():
        raise ConfigError(
            key,
            keystore,
            "a v3 keystore whose address field (40 hex digits) is its key's account",
            secret=True,
        )
