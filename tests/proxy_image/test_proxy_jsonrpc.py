"""Issue 13 items 1-6: the JSON-RPC listener on real sockets, in front of Quorum stand-ins that
answer, die mid-request, reset, hang, answer 502/503 or "already known"."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from jsonrpc_standins import (
    ALREADY_KNOWN,
    FAILURES,
    LISTENER,
    NONCE_TOO_LOW,
    SIGNED_TX,
    SIGNED_TX_HASH,
    Chain,
    QuorumStandin,
    counter,
    jsonrpc_config,
    post,
    rpc,
)
from proxy_support import (
    Client,
    LoopThread,
    Proxy,
    UpstreamServer,
    request,
    wait_for,
)
from quorum_proxy import jsonrpc_relay
from quorum_proxy.jsonrpc import CODE_NO_ANSWER, CODE_OUTCOME_UNKNOWN
from quorum_proxy.jsonrpc_keccak import keccak256
from quorum_proxy.jsonrpc_proxy import MAX_COLLECTED


def warm(client: Client, times: int = 1) -> None:
    """Requests that leave a pooled connection to the primary (the engine's fast path)."""
    for i in range(times):
        assert post(client, rpc("eth_blockNumber", 1000 + i)).json()["result"] == "0x10"


def test_every_request_goes_to_the_primary_over_one_pooled_connection(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin]
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        for i in range(5):
            answer = post(client, rpc("eth_sendTransaction", i, [{}]))
            assert answer.status == 200 and answer.json()["id"] == i
    assert primary.methods == ["eth_sendTransaction"] * 5
    assert backup.methods == []
    assert primary.server.accepted == 1
    assert counter(proxy, "jsonrpc_calls", LISTENER, "unsafe") == 5


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-connection", "pooled-connection"])
@pytest.mark.parametrize("failure", FAILURES)
def test_safe_call_failed_by_the_primary_is_repeated_on_the_next_node(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], failure: str, pooled: bool
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        if pooled:
            warm(client)
        primary.fail = failure
        answer = post(client, rpc("eth_getBalance", "b-1", ["0x00", "latest"]))
        assert answer.status == 200
        expected = {"jsonrpc": "2.0", "id": "b-1", "result": "quorum-1:eth_getBalance"}
        assert answer.json() == expected
        # the client's connection stays usable
        assert post(client, rpc("eth_blockNumber", 2)).json()["result"] == "0x10"
    # a pooled connection reset before any answer byte may be a keep-alive the node closed:
    # the engine sends once more on a fresh connection to the same node (not a try of it)
    stale_resend = pooled and failure == "reset"
    assert primary.methods.count("eth_getBalance") == (2 if stale_resend else 1)
    assert backup.methods[0] == "eth_getBalance"
    assert counter(proxy, "jsonrpc_repeats", LISTENER) == (2 if stale_resend else 1)
    assert counter(proxy, "jsonrpc_unknown_outcomes", LISTENER) == 0


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-connection", "pooled-connection"])
@pytest.mark.parametrize("failure", FAILURES)
def test_unsafe_call_failed_by_the_primary_gets_an_unknown_outcome_and_is_not_repeated(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    chain: Chain,
    failure: str,
    pooled: bool,
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        if pooled:
            warm(client)
        primary.fail = failure
        answer = post(client, rpc("eth_sendTransaction", 41, [{"privateFor": ["k"]}]))
        assert answer.status == 200
        reply = answer.json()
        assert reply["id"] == 41 and "result" not in reply
        assert reply["error"]["code"] == CODE_OUTCOME_UNKNOWN
        assert reply["error"]["message"].startswith("outcome unknown")
        assert "eth_sendTransaction" in reply["error"]["message"]
        assert reply["error"]["data"]["node"] == primary.address
    assert chain.sent_by_account == 1, "sent once, by the primary, never again"
    assert "eth_sendTransaction" not in backup.methods
    assert counter(proxy, "jsonrpc_unknown_outcomes", LISTENER) == 1
    assert counter(proxy, "jsonrpc_repeats", LISTENER) == 0


@pytest.mark.parametrize(("method", "fresh"), [("eth_sendTransaction", True), ("eth_call", False)])
def test_unsafe_call_skips_a_pooled_connection_the_node_may_be_closing(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    fresh: bool,
) -> None:
    primary, _ = nodes
    # stands for geth's 120 s idle timeout (jsonrpc_relay.UNSAFE_MAX_IDLE: 60 s)
    monkeypatch.setattr(jsonrpc_relay, "UNSAFE_MAX_IDLE", 0.2)
    with Client(proxy.addr(LISTENER)) as client:
        warm(client)
        time.sleep(0.5)
        assert "result" in post(client, rpc(method, 1, [{}])).json()
    assert primary.server.accepted == (2 if fresh else 1)


def test_unsafe_call_moves_on_when_the_primary_refuses_the_connection(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    chain: Chain,
    refused_address: Callable[[], str],
) -> None:
    dead = refused_address()
    proxy = start_proxy(jsonrpc_config([dead, nodes[1].address]))
    with Client(proxy.addr(LISTENER)) as client:
        answer = post(client, rpc("eth_sendTransaction", "x", [{}]))
    assert answer.json()["result"].startswith("0x"), "nothing was sent: it may go elsewhere"
    assert chain.sent_by_account == 1
    assert counter(proxy, "jsonrpc_repeats", LISTENER) == 0


def test_unsafe_call_gets_not_sent_when_no_node_can_be_reached(
    start_proxy: Callable[..., Proxy], refused_address: Callable[[], str]
) -> None:
    dead = [refused_address(), refused_address()]
    proxy = start_proxy(jsonrpc_config(dead))
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, rpc("eth_sendTransaction", None, [{}])).json()
    assert reply["id"] is None
    assert reply["error"]["code"] == CODE_NO_ANSWER
    assert reply["error"]["data"]["outcome"] == "not_sent"
    assert counter(proxy, "jsonrpc_unknown_outcomes", LISTENER) == 0


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh-connection", "pooled-connection"])
def test_repeated_raw_transaction_answered_already_known_is_its_hash(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], chain: Chain, pooled: bool
) -> None:
    primary, backup = nodes
    primary.fail = "reset"  # it took the transaction, passed it on, then died
    with Client(proxy.addr(LISTENER)) as client:
        if pooled:
            primary.fail_method = "eth_sendRawTransaction"
            warm(client)
        reply = post(client, rpc("eth_sendRawTransaction", 9, [SIGNED_TX])).json()
    assert reply == {"jsonrpc": "2.0", "id": 9, "result": SIGNED_TX_HASH}
    assert backup.methods == ["eth_sendRawTransaction"]
    assert chain.pool == {SIGNED_TX_HASH}
    assert counter(proxy, "jsonrpc_already_known", LISTENER) == 1


def test_repeated_raw_transaction_the_failed_node_had_mined_is_its_hash(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], chain: Chain
) -> None:
    primary, backup = nodes
    chain.mine = True  # the primary mined it at once, then died before answering
    primary.fail = "reset"
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, rpc("eth_sendRawTransaction", "m", [SIGNED_TX])).json()
    assert reply == {"jsonrpc": "2.0", "id": "m", "result": SIGNED_TX_HASH}
    # the backup said "nonce too low"; asked by hash, it has the transaction
    assert backup.methods == ["eth_sendRawTransaction", "eth_getTransactionByHash"]
    assert counter(proxy, "jsonrpc_already_known", LISTENER) == 1


def test_nonce_too_low_for_a_transaction_the_node_lacks_is_passed_as_it_said(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    # two chains: the backup never learns the primary's transaction; its nonce is used
    primary = QuorumStandin(upstreams("quorum-0"), Chain())
    backup = QuorumStandin(upstreams("quorum-1"), Chain())
    backup.nonce_used = True
    primary.fail = "reset"
    proxy = start_proxy(jsonrpc_config([primary.address, backup.address]))
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, rpc("eth_sendRawTransaction", 5, [SIGNED_TX])).json()
    assert reply == {
        "jsonrpc": "2.0",
        "id": 5,
        "error": {"code": -32000, "message": NONCE_TOO_LOW},
    }
    assert backup.methods == ["eth_sendRawTransaction", "eth_getTransactionByHash"]
    assert counter(proxy, "jsonrpc_already_known", LISTENER) == 0


@pytest.mark.parametrize("size", [100_000, 700_000], ids=["read-whole", "streamed-on"])
def test_repeated_batch_answer_is_rewritten_up_to_a_bound_and_streamed_past_it(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], size: int
) -> None:
    primary, _ = nodes
    primary.fail = "reset"
    batch = [
        rpc("eth_sendRawTransaction", 1, [SIGNED_TX]),
        rpc("eth_getLogs", 2, [{"size": size}]),
    ]
    with Client(proxy.addr(LISTENER), timeout=20) as client:
        reply = post(client, batch).json()
        assert post(client, rpc("eth_blockNumber", 3)).json()["result"] == "0x10"
    assert reply[1] == {"jsonrpc": "2.0", "id": 2, "result": "0x" + "ab" * size}
    if size * 2 < MAX_COLLECTED:
        assert reply[0] == {"jsonrpc": "2.0", "id": 1, "result": SIGNED_TX_HASH}
    else:
        # over jsonrpc_proxy.MAX_COLLECTED the answer is passed as the node gave it
        assert reply[0]["error"]["message"] == ALREADY_KNOWN


def test_already_known_on_a_first_send_is_passed_as_the_node_said(
    proxy: Proxy, chain: Chain
) -> None:
    chain.pool.add(SIGNED_TX_HASH)  # the client sends it a second time itself
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, rpc("eth_sendRawTransaction", 9, [SIGNED_TX])).json()
    assert reply["error"]["message"] == ALREADY_KNOWN
    assert counter(proxy, "jsonrpc_already_known", LISTENER) == 0


# ids of every JSON type a client may use: numbers (exact text kept), strings, null
MIXED_BATCH = (
    b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]},'
    b'{"jsonrpc":"2.0","id":"s-2","method":"eth_sendTransaction","params":[{}]},'
    b'{"jsonrpc":"2.0","id":null,"method":"eth_call","params":[{},"latest"]},'
    b'{"jsonrpc":"2.0","id":4.50,"method":"eth_chainId","params":[]}]'
)


def test_batch_mixing_safe_and_unsafe_calls_is_not_repeated_and_answered_in_order(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], chain: Chain
) -> None:
    primary, backup = nodes
    primary.fail = "reset"
    with Client(proxy.addr(LISTENER)) as client:
        answer = post(client, MIXED_BATCH)
    assert answer.status == 200
    assert b'"id":4.50' in answer.body, "a number id goes back as the client wrote it"
    reply = answer.json()
    assert [item["id"] for item in reply] == [1, "s-2", None, 4.5]
    assert [item["error"]["code"] for item in reply] == [
        CODE_NO_ANSWER,
        CODE_OUTCOME_UNKNOWN,
        CODE_NO_ANSWER,
        CODE_NO_ANSWER,
    ]
    assert "eth_sendTransaction" in reply[0]["error"]["message"]
    assert backup.methods == []
    assert chain.sent_by_account == 1
    assert counter(proxy, "jsonrpc_unknown_outcomes", LISTENER) == 1
    assert counter(proxy, "jsonrpc_calls", LISTENER, "safe") == 3
    assert counter(proxy, "jsonrpc_calls", LISTENER, "unsafe") == 1


def test_batch_of_safe_calls_is_repeated_and_answered_as_a_batch_in_order(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin]
) -> None:
    primary, backup = nodes
    primary.fail = "503"
    batch = [rpc("eth_blockNumber", 1), rpc("eth_chainId", "two"), rpc("net_version", None)]
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, batch).json()
    assert [item["id"] for item in reply] == [1, "two", None]
    assert [item["result"] for item in reply] == [
        "0x10",
        "quorum-1:eth_chainId",
        "quorum-1:net_version",
    ]
    assert backup.methods == ["eth_blockNumber", "eth_chainId", "net_version"]


def test_safe_call_failed_by_every_node_gets_a_json_rpc_error(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin]
) -> None:
    for node in nodes:
        node.fail = "502"
    with Client(proxy.addr(LISTENER)) as client:
        reply = post(client, rpc("eth_call", "c", [{}, "latest"])).json()
    assert reply["id"] == "c"
    assert reply["error"]["code"] == CODE_NO_ANSWER
    assert "every Quorum node failed" in reply["error"]["message"]


@pytest.mark.parametrize("body", [b"hello, not json", b'{"no": "method"}'], ids=["text", "json"])
def test_body_not_json_rpc_is_passed_unchanged_and_never_repeated(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], body: bytes
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        answer = post(client, body)
        assert answer.status == 200 and answer.json()["error"]["code"] == -32700
        assert primary.server.seen[-1].body == body
        primary.fail = "reset"
        failed = post(client, body)
    assert failed.status == 502
    assert backup.methods == []
    assert counter(proxy, "jsonrpc_calls", LISTENER, "invalid") == 2


def test_body_over_the_limit_gets_413(
    start_proxy: Callable[..., Proxy], nodes: tuple[QuorumStandin, QuorumStandin]
) -> None:
    proxy = start_proxy(
        jsonrpc_config([nodes[0].address, nodes[1].address], limits={"max_retry_body_bytes": 1024})
    )
    big = rpc("eth_call", 1, [{"data": "0x" + "ab" * 1024}, "latest"])
    with Client(proxy.addr(LISTENER)) as client:
        assert post(client, big).status == 413
    assert nodes[0].methods == [] and nodes[1].methods == []


def test_primary_change_is_counted_and_logged(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary, backup = nodes
    caplog.set_level(logging.WARNING, logger="quorum_proxy")
    with Client(proxy.addr(LISTENER)) as client:
        warm(client)
        primary.server.kill()
        for i in range(3):
            assert post(client, rpc("eth_blockNumber", i)).json()["result"] == "0x10"
    assert counter(proxy, "primary_changes", LISTENER) == 1
    assert backup.methods == ["eth_blockNumber"] * 3
    assert any(
        f"primary changed from {primary.address} to {backup.address}" in r.getMessage()
        for r in caplog.records
    )


class _WebSocketNode(asyncio.Protocol):
    """Answers an upgrade with 101, then echoes every byte back."""

    def __init__(self, heads: list[bytes]) -> None:
        self.heads = heads
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            self.transport.write(data)
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            self.heads.append(head)
            self.upgraded = True
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n" + rest
            )


@pytest.fixture
def websocket_node(backend_loop: LoopThread) -> Iterator[tuple[str, list[bytes]]]:
    heads: list[bytes] = []

    async def listen() -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _WebSocketNode(heads), "127.0.0.1", 0)

    server = backend_loop.run(listen())
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", heads
    finally:
        backend_loop.call(server.close)


def test_websocket_upgrade_is_a_byte_stream_to_the_primary(
    start_proxy: Callable[..., Proxy],
    websocket_node: tuple[str, list[bytes]],
    nodes: tuple[QuorumStandin, QuorumStandin],
) -> None:
    address, heads = websocket_node
    proxy = start_proxy(jsonrpc_config([address, nodes[1].address]))
    with Client(proxy.addr(LISTENER)) as client:
        client.send(
            b"GET / HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            b"\x81\x05hello"
        )
        received = b""
        while not received.endswith(b"\x81\x05hello"):
            chunk = client.sock.recv(65536)
            assert chunk, f"closed early: {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 101 ")
        client.send(b"\x81\x05again")
        echoed = b""
        while len(echoed) < 7:
            echoed += client.sock.recv(65536)
        assert echoed == b"\x81\x05again"
    head = heads[0].lower()
    assert b"upgrade: websocket" in head and b"sec-websocket-key: dghlihnhbxbszsbub25jzq==" in head
    assert nodes[1].methods == []


def test_killing_the_primary_under_load_costs_no_safe_call(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], chain: Chain
) -> None:
    """8 keep-alive clients send reads and signed transactions while the primary dies (every
    open connection cut, as a crashed process): no client sees an error."""
    primary, backup = nodes
    errors: list[str] = []
    answered = [0] * 8
    stop = threading.Event()

    def client_loop(n: int) -> None:
        with Client(proxy.addr(LISTENER), timeout=10) as client:
            i = 0
            while not stop.is_set():
                expected = "0x10"
                call = rpc("eth_blockNumber", f"{n}-{i}")
                if i % 5 == 4:
                    # a transaction of its own each time (the stand-ins hash any bytes)
                    raw = SIGNED_TX + f"{n:02x}{i:06x}"
                    expected = "0x" + keccak256(bytes.fromhex(raw[2:])).hex()
                    call = rpc("eth_sendRawTransaction", f"{n}-{i}", [raw])
                try:
                    reply = post(client, call).json()
                except (OSError, ValueError) as e:
                    errors.append(f"{n}-{i}: {e!r}")
                    return
                if reply.get("result") != expected or reply.get("id") != f"{n}-{i}":
                    errors.append(f"{n}-{i}: {reply}")
                answered[n] += 1
                i += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(answered) >= 200, timeout=30, what="traffic through the primary")
    primary.server.kill()
    before = sum(answered)
    wait_for(lambda: sum(answered) >= before + 200, timeout=30, what="traffic after the kill")
    stop.set()
    for t in threads:
        t.join(15)
    repeats = counter(proxy, "jsonrpc_repeats", LISTENER)
    print(
        f"failover: {sum(answered)} answered ({before} before the kill), {len(errors)} errors, "
        f"{repeats:g} repeats, {counter(proxy, 'jsonrpc_already_known', LISTENER):g} already "
        f"known made success, {counter(proxy, 'primary_changes', LISTENER):g} primary change"
    )
    assert errors == []
    assert counter(proxy, "primary_changes", LISTENER) == 1
    assert backup.methods, "the backup took over"
    assert counter(proxy, "jsonrpc_unknown_outcomes", LISTENER) == 0


def test_readiness_of_the_jsonrpc_listener_asks_its_upstream(proxy: Proxy) -> None:
    answer = request(proxy.addr("admin"), "GET", f"/readyz/{LISTENER}")
    assert answer.status == 200
    assert answer.json()["upstreams"] == {"quorum": {"servers": 2, "available": 2, "absent": 0}}
