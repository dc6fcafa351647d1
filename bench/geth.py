"""Real geth in `--dev` mode on loopback, and raw transactions signed for it.

The binary is the one `./dev` installs (`go install` of go-ethereum's cmd/geth at the version
pinned there) into build/bin/. Shared by the benchmark and the proxy tests (one home).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coincurve import PrivateKey
from eth_utils import keccak

from bench.support import free_port, stop_process

REPO = Path(__file__).resolve().parents[1]
GETH = Path(os.environ.get("QUORUM_HA_GETH", REPO / "build" / "bin" / "geth"))
# go-ethereum v1.17.10 cmd/utils/flags.go: `--dev` prefunds this fixed key's account (and
# imports it, unlocked, into the keystore) when the datadir has no account yet.
DEV_KEY = bytes.fromhex("b71c71a67e1177ad4e901695e1b4b9ee17ae16c6668d313eac2f96dbcda3f291")
# the dev chain's id (flags.go: `cfg.NetworkId = 1337`; core.DeveloperGenesisBlock)
DEV_CHAIN_ID = 1337
GAS_TRANSFER = 21_000
# Legacy transactions pay gasPrice in full; 10 gwei is far above a dev chain's base fee.
GAS_PRICE = 10**10
STARTUP_TIMEOUT = 60.0


class RpcError(Exception):
    """A JSON-RPC error object answered by the node."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = str(error.get("message"))


def _rlp(item: bytes | int | list[Any]) -> bytes:
    """Recursive Length Prefix encoding (Ethereum yellow paper, appendix B)."""
    if isinstance(item, int):
        item = item.to_bytes((item.bit_length() + 7) // 8, "big") if item else b""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _rlp_length(len(item), 0x80) + item
    payload = b"".join(_rlp(x) for x in item)
    return _rlp_length(len(payload), 0xC0) + payload


def _rlp_length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def address_of(key: bytes) -> str:
    """The 0x address of a secp256k1 private key."""
    public = PrivateKey(key).public_key.format(compressed=False)[1:]
    return "0x" + keccak(public)[-20:].hex()


def key_for(label: str, n: int) -> bytes:
    """A deterministic private key (benchmark and test senders; never a real account)."""
    return keccak(f"quorum-ha bench {label} {n}".encode())


@dataclass(frozen=True)
class SignedTx:
    raw: str  # 0x hex, what eth_sendRawTransaction takes
    hash: str  # 0x hex, what geth answers for it
    sender: str


def sign_transfer(
    key: bytes,
    nonce: int,
    to: str,
    value: int,
    *,
    gas_price: int = GAS_PRICE,
    chain_id: int = DEV_CHAIN_ID,
) -> SignedTx:
    """A legacy EIP-155 value transfer signed with `key`."""
    fields: list[Any] = [nonce, gas_price, GAS_TRANSFER, bytes.fromhex(to[2:]), value, b""]
    digest = keccak(_rlp([*fields, chain_id, 0, 0]))
    signature = PrivateKey(key).sign_recoverable(digest, hasher=None)
    r, s, recovery = signature[:32], signature[32:64], signature[64]
    raw = _rlp([*fields, chain_id * 2 + 35 + recovery, r.lstrip(b"\0"), s.lstrip(b"\0")])
    return SignedTx("0x" + raw.hex(), "0x" + keccak(raw).hex(), address_of(key))


def rpc_call(
    port: int, method: str, params: list[Any] | None = None, timeout: float = 10.0
) -> Any:
    """One JSON-RPC call over HTTP; raises RpcError for an error object."""
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    answer = rpc_post(port, request, timeout)
    if "error" in answer:
        raise RpcError(answer["error"])
    return answer["result"]


def rpc_post(port: int, payload: Any, timeout: float = 10.0) -> Any:
    """POST a JSON-RPC request or batch and return the decoded answer (HTTP 200 expected)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(payload)
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise OSError(f"geth answered HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


@dataclass
class GethNode:
    """geth --dev serving HTTP and WebSocket JSON-RPC on one loopback port."""

    datadir: Path
    port: int = field(default_factory=free_port)
    core: int | None = None
    period: int = 0  # 0: a block as soon as a transaction is pending
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            str(GETH),
            "--dev",
            f"--dev.period={self.period}",
            f"--datadir={self.datadir}",
            "--http",
            "--http.addr=127.0.0.1",
            f"--http.port={self.port}",
            # as the stack's Quorum nodes (node_bootstrap/scripts.py): clients name the proxy
            "--http.vhosts=*",
            "--http.api=eth,net,web3,txpool",
            # WS on the HTTP port: geth serves both on one listener (node.wsServerForPort)
            "--ws",
            "--ws.addr=127.0.0.1",
            f"--ws.port={self.port}",
            "--ws.origins=*",
            "--ws.api=eth,net,web3",
            f"--authrpc.port={free_port()}",
            "--ipcdisable",
            "--nodiscover",
            "--maxpeers=0",
            "--port=0",
            "--cache=64",
            # Every block's state written at once: after a SIGKILL the default path scheme
            # restarts a dev chain blocks behind (funding lost, then "layer stale" answers).
            "--state.scheme=hash",
            "--gcmode=archive",
            # room for every benchmark transaction, whichever node receives it
            "--txpool.globalslots=65536",
            "--txpool.accountqueue=65536",
            "--txpool.globalqueue=65536",
            # a block holds every transfer the benchmark sends in a second
            "--dev.gaslimit=200000000",
            "--miner.gaslimit=200000000",
            "--verbosity=2",
        ]

    def start(self) -> GethNode:
        if not GETH.exists():
            raise FileNotFoundError(
                f"{GETH} is missing: `./dev test` installs it (go install of cmd/geth)"
            )
        self.datadir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        if self.core is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.core), *argv]
        log = (self.datadir / "geth.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"geth exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if int(rpc_call(self.port, "eth_chainId", timeout=2.0), 16) == DEV_CHAIN_ID:
                    return
            except (OSError, ValueError, RpcError):
                pass
            time.sleep(0.1)
        raise TimeoutError(
            f"geth not answering on {self.port} after {timeout}s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        path = self.datadir / "geth.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the abrupt death of a primary."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, sig, wait=30)

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc_call(self.port, method, params)

    def wait_receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                receipt = self.call("eth_getTransactionReceipt", [tx_hash])
            except RpcError as error:
                # a node just started answers this until its transaction index is built
                # (go-ethereum v1.17.10 internal/ethapi/errors.go TxIndexingError)
                if error.message != "transaction indexing is in progress":
                    raise
                receipt = None
            if receipt is not None:
                return dict(receipt)
            time.sleep(0.05)
        raise TimeoutError(f"no receipt for {tx_hash} after {timeout}s")

    def fund(self, addresses: list[str], value: int, batch: int = 500) -> None:
        """Send `value` wei from the dev account to each address and wait until all are mined."""
        dev = address_of(DEV_KEY)
        nonce = int(self.call("eth_getTransactionCount", [dev, "pending"]), 16)
        last = ""
        for start in range(0, len(addresses), batch):
            calls = []
            for i, address in enumerate(addresses[start : start + batch]):
                tx = sign_transfer(DEV_KEY, nonce + start + i, address, value)
                calls.append(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "eth_sendRawTransaction",
                        "params": [tx.raw],
                    }
                )
                last = tx.hash
            for answer in rpc_post(self.port, calls, timeout=60.0):
                if "error" in answer:
                    raise RpcError(answer["error"])
        if last:
            self.wait_receipt(last, timeout=120.0)
            self._wait_pool_caught_up(dev, nonce + len(addresses) - 1)

    def _wait_pool_caught_up(self, sender: str, nonce: int, timeout: float = 10.0) -> None:
        """Wait until the txpool has dropped sender's mined transactions up to nonce.

        A receipt comes with the block; the txpool takes the new head in its reorg loop a
        moment later (core/txpool/legacypool), and until then it judges new transactions by
        the old state: a just-funded account has "insufficient funds", a mined transaction is
        still "already known". Its content shows when that is done.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.call("txpool_contentFrom", [sender])
            pending = content.get("pending") or {}
            if all(int(n) > nonce for n in pending):
                return
            time.sleep(0.02)
        raise TimeoutError(f"the txpool holds {sender}'s mined transactions after {timeout}s")
