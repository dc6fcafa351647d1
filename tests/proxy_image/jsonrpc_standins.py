"""Quorum stand-ins for the JSON-RPC listener's tests: they answer JSON-RPC, or fail a request
in one of the ways a dying node does (reset mid-request, hang, 502/503), after acting on it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy_support import Client, Proxy, Reply, Response, Seen, UpstreamServer
from quorum_proxy.jsonrpc_keccak import keccak256

# EIP-155's example signed transaction and its hash (eips.ethereum.org/EIPS/eip-155)
SIGNED_TX = (
    "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080"
    "25a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb7"
    "03304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
)
SIGNED_TX_HASH = "0x33469b22e9f636356c4160a87eb19df52b7412e8eac32a4a55ffe88ea8350788"
# go-ethereum / GoQuorum 24.4 core/tx_pool.go ErrAlreadyKnown
ALREADY_KNOWN = "already known"
# later geth: "nonce too low: address %v, tx: %d state: %d" (core/state_transition.go)
NONCE_TOO_LOW = (
    "nonce too low: address 0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f, tx: 9 state: 10"
)
FAILURES = ("reset", "hang", "502", "503")


@dataclass
class Chain:
    """What the nodes share: the transactions they have seen (gossip between them)."""

    pool: set[str] = field(default_factory=set)
    # transactions in a block; with `mine`, a new one is mined at once (Raft blocks come fast)
    mined: set[str] = field(default_factory=set)
    mine: bool = False
    sent_by_account: int = 0


class QuorumStandin:
    """A node: answers JSON-RPC calls; with `fail` set, acts on a request, then fails it."""

    def __init__(self, server: UpstreamServer, chain: Chain, block: int = 16) -> None:
        self.server = server
        self.chain = chain
        self.block = block
        self.fail: str | None = None
        # fail only requests that hold this method (None: every request)
        self.fail_method: str | None = None
        self.methods: list[str] = []
        # answer every raw transaction "nonce too low" (its nonce used by another transaction)
        self.nonce_used = False
        server.handler = self.handle

    @property
    def address(self) -> str:
        return self.server.address

    def call(self, item: Any) -> dict[str, Any] | None:
        method = item.get("method")
        self.methods.append(method)
        result: Any = f"{self.server.name}:{method}"
        error = None
        if method == "eth_blockNumber":
            result = hex(self.block)
        elif method == "eth_sendRawTransaction":
            raw = bytes.fromhex(item["params"][0][2:])
            tx_hash = "0x" + keccak256(raw).hex()
            chain = self.chain
            if tx_hash in chain.pool:
                error = {"code": -32000, "message": ALREADY_KNOWN}
            elif tx_hash in chain.mined or self.nonce_used:
                # geth: a mined transaction is out of the pool; its nonce is below the state's
                error = {"code": -32000, "message": NONCE_TOO_LOW}
            else:
                (chain.mined if chain.mine else chain.pool).add(tx_hash)
            result = tx_hash
        elif method == "eth_getLogs" and item.get("params") and "size" in item["params"][0]:
            result = "0x" + "ab" * int(item["params"][0]["size"])  # an answer of any size
        elif method == "eth_getTransactionByHash":
            tx_hash = item["params"][0]
            known = tx_hash in self.chain.mined or tx_hash in self.chain.pool
            result = {"hash": tx_hash, "nonce": "0x9"} if known else None
        elif method == "eth_sendTransaction":
            self.chain.sent_by_account += 1
            result = "0x" + keccak256(b"%d" % self.chain.sent_by_account).hex()
        if "id" not in item:
            return None
        answer = {"jsonrpc": "2.0", "id": item["id"]}
        if error is not None:
            answer["error"] = error
        else:
            answer["result"] = result
        return answer

    def handle(self, seen: Seen) -> Reply:
        try:
            doc = json.loads(seen.body)
        except ValueError:
            doc = None
        items = doc if isinstance(doc, list) else [doc]
        if not items or not all(isinstance(i, dict) and "method" in i for i in items):
            # geth answers what is not JSON-RPC with one error (parse error -32700 and the like)
            self.methods.append("(not json-rpc)")
            items = []
            body: Any = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}}
        else:
            answers = [self.call(item) for item in items]
            kept = [a for a in answers if a is not None]
            body = kept if isinstance(doc, list) else (kept[0] if kept else None)
        fail = self.fail
        if fail is not None and (
            self.fail_method is None or any(i.get("method") == self.fail_method for i in items)
        ):
            if fail == "reset":
                return Reply(close=True)
            if fail == "hang":
                return Reply(delay=60.0, body=b"{}")
            return Reply(status=int(fail), body=b"<html>bad gateway</html>")
        return Reply(body=json.dumps(body).encode() if body is not None else b" ")


def rpc(method: str, call_id: Any = 1, params: list[Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}


# the listener under test and its config, and what tests ask it
LISTENER = "rpc"


def jsonrpc_config(
    servers: list[str], limits: dict[str, Any] | None = None, **upstream: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "upstreams": {
            "quorum": {
                "servers": servers,
                # a hung node is given up on quickly (the machine is loaded: not too quickly)
                "read_timeout": 1.5,
                "connect_timeout": 2,
                "max_fails": 1,
                "fail_timeout": 30,
                **upstream,
            }
        },
        "listeners": [
            {
                "name": LISTENER,
                "listen": "127.0.0.1:0",
                "protocol": "jsonrpc",
                "upstream": "quorum",
            }
        ],
    }
    if limits:
        data["limits"] = limits
    return data


def post(client: Client, body: Any) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.request("POST", "/", raw, headers={"Content-Type": "application/json"})


def counter(proxy: Proxy, family: str, *labels: str) -> float:
    return proxy.loop.call(lambda: getattr(proxy.runtime.metrics, family).get(labels))
