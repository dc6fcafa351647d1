"""Real geth --dev answers as the JSON-RPC rules of the proxy assume (issue 13).

The proxy's JSON-RPC mode treats "already known" for a repeated eth_sendRawTransaction as
success: these tests pin the exact answers of geth (go-ethereum v1.17.10, core/txpool/errors.go
ErrAlreadyKnown; core/txpool/validation.go ErrNonceTooLow) for the same raw transaction sent
twice, and check the signing helpers that the benchmark relies on against the real node.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import time

import pytest

from bench.geth import (
    DEV_CHAIN_ID,
    DEV_KEY,
    GETH,
    REPO,
    GethNode,
    RpcError,
    _rlp,
    address_of,
    key_for,
    rpc_post,
    sign_transfer,
)

SINK = "0x" + "00" * 19 + "42"


def next_nonce(geth: GethNode, address: str) -> int:
    return int(geth.call("eth_getTransactionCount", [address, "pending"]), 16)


@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        # Ethereum yellow paper appendix B / ethereum.org RLP examples
        (b"dog", "83646f67"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        (b"", "80"),
        ([], "c0"),
        (0, "80"),
        (15, "0f"),
        (1024, "820400"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (
            b"Lorem ipsum dolor sit amet, consectetur adipisicing elit",
            "b838" + b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".hex(),
        ),
    ],
)
def test_rlp_encodes_the_reference_examples(item: object, encoded: str) -> None:
    assert _rlp(item).hex() == encoded  # type: ignore[arg-type]


def test_the_dev_account_is_the_fixed_prefunded_key(geth: GethNode) -> None:
    assert geth.call("eth_accounts") == [address_of(DEV_KEY)]
    assert int(geth.call("eth_getBalance", [address_of(DEV_KEY), "latest"]), 16) > 10**18
    assert int(geth.call("eth_chainId"), 16) == DEV_CHAIN_ID


def test_a_transfer_signed_here_is_mined_with_its_hash_and_sender(geth: GethNode) -> None:
    dev = address_of(DEV_KEY)
    tx = sign_transfer(DEV_KEY, next_nonce(geth, dev), SINK, 7)
    assert geth.call("eth_sendRawTransaction", [tx.raw]) == tx.hash
    receipt = geth.wait_receipt(tx.hash)
    assert receipt["status"] == "0x1"
    assert receipt["from"] == dev


def test_fund_gives_fresh_senders_a_balance(geth: GethNode) -> None:
    senders = [address_of(key_for("test fund", n)) for n in range(3)]
    geth.fund(senders, 5 * 10**17)
    for sender in senders:
        assert int(geth.call("eth_getBalance", [sender, "latest"]), 16) == 5 * 10**17


def test_the_same_raw_transaction_sent_twice_is_answered_already_known(geth: GethNode) -> None:
    # A nonce ahead of the account's keeps the transaction queued (never mined), so the second
    # send meets it in the pool however fast the dev chain mines.
    key = key_for("test already known", 0)
    geth.fund([address_of(key)], 10**18)
    tx = sign_transfer(key, next_nonce(geth, address_of(key)) + 5, SINK, 1)
    assert geth.call("eth_sendRawTransaction", [tx.raw]) == tx.hash
    answer = rpc_post(
        geth.port,
        {"jsonrpc": "2.0", "id": "again", "method": "eth_sendRawTransaction", "params": [tx.raw]},
    )
    assert answer == {
        "jsonrpc": "2.0",
        "id": "again",
        "error": {"code": -32000, "message": "already known"},
    }


def test_a_raw_transaction_repeated_after_it_was_mined_is_answered_nonce_too_low(
    geth: GethNode,
) -> None:
    # What a repeat meets on a node where the first send was already mined: not "already known"
    key = key_for("test nonce too low", 0)
    geth.fund([address_of(key)], 10**18)
    tx = sign_transfer(key, 0, SINK, 1)
    assert geth.call("eth_sendRawTransaction", [tx.raw]) == tx.hash
    geth.wait_receipt(tx.hash)
    # The receipt comes with the block; the txpool drops the mined transaction when its reorg
    # loop handles the new head, a moment later (core/txpool/legacypool): until then a repeat
    # is still "already known". Seen once under a loaded full run.
    deadline = time.monotonic() + 10
    while True:
        with pytest.raises(RpcError) as error:
            geth.call("eth_sendRawTransaction", [tx.raw])
        if error.value.message != "already known" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (error.value.code, error.value.message) == (
        -32000,
        "nonce too low: next nonce 1, tx nonce 0",
    )


def test_websocket_json_rpc_is_served_on_the_http_port(geth: GethNode) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", geth.port), timeout=10) as s:
        s.sendall(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        payload = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "eth_chainId"}).encode()
        mask = os.urandom(4)  # RFC 6455 5.3: a client masks every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        frame = head.split(b"\r\n\r\n", 1)[1]
        while len(frame) < 2 or len(frame) < 2 + (frame[1] & 0x7F):
            frame += s.recv(4096)
        assert frame[0] == 0x81 and frame[1] < 126  # one unmasked text frame
        answer = json.loads(frame[2 : 2 + frame[1]])
    assert answer == {"jsonrpc": "2.0", "id": 9, "result": hex(DEV_CHAIN_ID)}


def test_the_geth_under_test_is_the_version_dev_pins() -> None:
    pinned = re.search(r"^GETH_VERSION=v(\S+)$", (REPO / "dev").read_text(), re.MULTILINE)
    assert pinned is not None
    out = subprocess.run(
        [str(GETH), "version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"Version: {pinned.group(1)}-stable" in out.splitlines()
