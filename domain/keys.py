"""The client node's key material, derived from seeds (no Pulumi inside): Tessera's NaCl pair,
each Quorum node's devp2p identity and the Quorum account's v3 keystore.

Derived with well-kept libraries (PyNaCl, coincurve, pycryptodome's AES, eth-utils' keccak),
deterministically, so `pulumi up` never rolls the keys unless the seeds are replaced on purpose.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import uuid

from coincurve import PrivateKey as Secp256k1Key
from Crypto.Cipher import AES
from Crypto.Util import Counter
from eth_utils import keccak, to_checksum_address
from nacl.public import PrivateKey as BoxKey

# geth's default pbkdf2 work factor for keystores (eth-keyfile uses the same).
KEYSTORE_PBKDF2_ROUNDS = 262144


def _expand(seed: bytes, label: str, size: int) -> bytes:
    """HKDF-Expand (RFC 5869) with `seed` as the pseudo-random key: one seed, many values."""
    out, block, counter = b"", b"", 1
    while len(out) < size:
        block = hmac.new(seed, block + label.encode() + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:size]


def tessera_key_pair(seed: bytes) -> tuple[str, str]:
    """(public, private) NaCl box keys, base64 as Tessera stores them."""
    private = BoxKey(seed)
    return (
        base64.b64encode(bytes(private.public_key)).decode(),
        base64.b64encode(bytes(private)).decode(),
    )


def node_public_key(node_key_hex: str) -> str:
    """The enode id: the uncompressed secp256k1 public key without its 0x04 prefix (hex)."""
    return Secp256k1Key(bytes.fromhex(node_key_hex)).public_key.format(compressed=False)[1:].hex()


def account_address(private_key: bytes) -> str:
    public = Secp256k1Key(private_key).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak(public)[-20:])


@functools.lru_cache(maxsize=32)
def account_keystore(seed: bytes, password: str) -> str:
    """A v3 keystore (pbkdf2, aes-128-ctr) of the account key `seed`, salt and IV derived from
    the seed so that the same seed and password always give the same file."""
    salt = _expand(seed, "quorum-ha keystore salt", 32)
    iv = _expand(seed, "quorum-ha keystore iv", 16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, KEYSTORE_PBKDF2_ROUNDS, 32)
    cipher = AES.new(
        derived[:16], AES.MODE_CTR, counter=Counter.new(128, initial_value=int.from_bytes(iv))
    )
    ciphertext = cipher.encrypt(seed)
    keystore = {
        "address": account_address(seed)[2:].lower(),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "pbkdf2",
            "kdfparams": {
                "c": KEYSTORE_PBKDF2_ROUNDS,
                "dklen": 32,
                "prf": "hmac-sha256",
                "salt": salt.hex(),
            },
            "mac": keccak(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid.UUID(bytes=_expand(seed, "quorum-ha keystore id", 16), version=4)),
        "version": 3,
    }
    return json.dumps(keystore, sort_keys=True)


def keystore_address(keystore: str) -> str:
    return to_checksum_address("0x" + json.loads(keystore)["address"])
