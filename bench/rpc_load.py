"""A JSON-RPC load client: keep-alive connections, a fixed mix of calls, errors by kind.

wrk counts HTTP statuses only; a JSON-RPC proxy answers a failed call with HTTP 200 and an
error object. This client tells apart, for safe calls (reads, eth_sendRawTransaction) and
unsafe ones (eth_sendTransaction): transport errors (reset, EOF, timeout), non-200 answers and
JSON-RPC error objects (by message). One request at a time per connection, as a web3 client's
pool does; a connection that failed is opened anew for the next request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

from bench.geth import DEV_KEY, SignedTx, address_of, key_for, sign_transfer

DEV = address_of(DEV_KEY)
SINK = "0x" + "00" * 19 + "42"  # receiver of every benchmark transfer
# One cycle of 16 calls per connection: 14 reads, one raw transaction (safe: a signed
# transaction is identified by its hash), one eth_sendTransaction (unsafe: the node signs).
READS: tuple[tuple[str, list[Any]], ...] = (
    ("eth_blockNumber", []),
    ("eth_getBalance", [DEV, "latest"]),
    ("eth_chainId", []),
    ("eth_call", [{"to": SINK, "data": "0x"}, "latest"]),
    ("eth_blockNumber", []),
    ("eth_getTransactionCount", [DEV, "latest"]),
    ("net_version", []),
    ("eth_getBalance", [SINK, "latest"]),
    ("eth_blockNumber", []),
    ("eth_gasPrice", []),
    ("eth_call", [{"to": SINK, "data": "0x"}, "latest"]),
    ("eth_getBlockByNumber", ["latest", False]),
    ("eth_chainId", []),
    ("web3_clientVersion", []),
)
RAW = "eth_sendRawTransaction"
UNSAFE = "eth_sendTransaction"
MIX: tuple[str, ...] = (*(m for m, _ in READS[:7]), RAW, *(m for m, _ in READS[7:]), UNSAFE)
PARAMS = dict(READS)
REQUEST_TIMEOUT = 15.0


def http_request(body: bytes) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: quorum\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def call_body(method: str, params: list[Any], request_id: int) -> bytes:
    payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Tally:
    """Outcomes of one class of calls (safe or unsafe)."""

    ok: int = 0
    transport: int = 0
    http: int = 0
    rpc: Counter[str] = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return self.transport + self.http + sum(self.rpc.values())

    def describe(self) -> str:
        rpc = ", ".join(f"{n}x {msg!r}" for msg, n in self.rpc.most_common(3))
        return (
            f"{self.ok} ok, {self.errors} errors (transport {self.transport}, "
            f"http {self.http}, json-rpc {sum(self.rpc.values())}{': ' + rpc if rpc else ''})"
        )


@dataclass
class LoadResult:
    seconds: float
    safe: Tally = field(default_factory=Tally)
    unsafe: Tally = field(default_factory=Tally)
    error_times: list[float] = field(default_factory=list)  # since start, every error

    @property
    def requests(self) -> int:
        return self.safe.ok + self.safe.errors + self.unsafe.ok + self.unsafe.errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class _Connection(asyncio.Protocol):
    """One keep-alive client connection with one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        status = self.parser.get_status_code()
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("closed by peer"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, REQUEST_TIMEOUT)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def rpc_errors(body: bytes) -> list[str]:
    """Messages of the JSON-RPC error objects in an answer (a call or a batch)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ["answer is not JSON"]
    answers = answer if isinstance(answer, list) else [answer]
    errors = []
    for a in answers:
        if not isinstance(a, dict) or ("result" not in a and "error" not in a):
            errors.append("answer is not JSON-RPC")
        elif "error" in a:
            error = a["error"]
            errors.append(str(error.get("message") if isinstance(error, dict) else error))
    return errors


class RawTransactions:
    """Each connection's own sender: nonces 0, 1, 2... in order, signed when needed."""

    def __init__(self, label: str, connections: int) -> None:
        self.keys = [key_for(label, c) for c in range(connections)]
        self.nonces = [0] * connections

    @property
    def senders(self) -> list[str]:
        return [address_of(k) for k in self.keys]

    def next(self, connection: int) -> SignedTx:
        nonce = self.nonces[connection]
        self.nonces[connection] += 1
        return sign_transfer(self.keys[connection], nonce, SINK, 1)


async def run_load(
    port: int,
    connections: int,
    seconds: float,
    raw: RawTransactions,
    events: list[tuple[float, Callable[[], Any]]] = (),  # type: ignore[assignment]
) -> LoadResult:
    """Drive `connections` clients for `seconds`; run each (at, action) on the way."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    stop_at = start + seconds
    result = LoadResult(seconds)

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        return conn

    async def client(index: int) -> None:
        conn: _Connection | None = None
        n = 0
        while time.monotonic() < stop_at:
            method = MIX[(n + index) % len(MIX)]
            n += 1
            if method == RAW:
                params: list[Any] = [raw.next(index).raw]
            elif method == UNSAFE:
                # a distinct value each time: two sends are never the same transaction
                params = [{"from": DEV, "to": SINK, "value": hex(index * 10**9 + n)}]
            else:
                params = PARAMS[method]
            tally = result.unsafe if method == UNSAFE else result.safe
            try:
                if conn is None or conn.closed:
                    conn = await connect()
                status, body = await conn.send(http_request(call_body(method, params, n)))
            except (TimeoutError, OSError, httptools.HttpParserError):
                tally.transport += 1
                result.error_times.append(time.monotonic() - start)
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.02)  # a refused connect must not spin
                continue
            if status != 200:
                tally.http += 1
                result.error_times.append(time.monotonic() - start)
                continue
            errors = rpc_errors(body)
            if errors:
                tally.rpc.update(errors)
                result.error_times.append(time.monotonic() - start)
            else:
                tally.ok += 1
        if conn is not None:
            conn.close()

    async def scheduler() -> None:
        for at, action in sorted(events, key=lambda e: e[0]):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            # actions block (a geth restart waits for its RPC): keep the clients running
            await loop.run_in_executor(None, action)

    await asyncio.gather(scheduler(), *(client(i) for i in range(connections)))
    result.seconds = time.monotonic() - start
    return result
