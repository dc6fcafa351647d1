"""The proxy's JSON-RPC mode with real geth as the node that takes over (issue 13).

The primary takes a raw transaction and dies before answering; the proxy repeats the call on
geth, which already holds that transaction (gossip between the nodes, done here by sending it
to geth first) and answers "already known": the client gets success with the hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from proxy_support import Proxy, Reply, UpstreamServer, request

from bench.geth import GethNode, address_of, key_for, sign_transfer

SINK = "0x" + "00" * 19 + "42"


def test_a_raw_transaction_repeated_on_a_geth_that_knows_it_answers_its_hash(
    geth: GethNode,
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
) -> None:
    key = key_for("test jsonrpc already known", 0)
    geth.fund([address_of(key)], 10**18)
    # a nonce ahead of the account's: the transaction stays in geth's pool, never mined
    nonce = int(geth.call("eth_getTransactionCount", [address_of(key), "pending"]), 16) + 3
    tx = sign_transfer(key, nonce, SINK, 1)
    assert geth.call("eth_sendRawTransaction", [tx.raw]) == tx.hash
    dying = upstreams("dying")
    dying.handler = lambda seen: Reply(close=True)  # reads the call, then the connection dies
    proxy = start_proxy(
        {
            "upstreams": {"quorum": {"servers": [dying.address, f"127.0.0.1:{geth.port}"]}},
            "listeners": [
                {
                    "name": "quorum-rpc",
                    "listen": "127.0.0.1:0",
                    "protocol": "jsonrpc",
                    "upstream": "quorum",
                }
            ],
        }
    )
    call: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": "tx-1",
        "method": "eth_sendRawTransaction",
        "params": [tx.raw],
    }
    response = request(
        proxy.addr("quorum-rpc"),
        "POST",
        "/",
        json.dumps(call).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert len(dying.seen) == 1  # the primary did get the call before it died
    assert response.status == 200
    assert json.loads(response.body) == {"jsonrpc": "2.0", "id": "tx-1", "result": tx.hash}
