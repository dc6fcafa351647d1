"""The JSON-RPC listener's relay (jsonrpc_relay.py) on real sockets: which requests it sends as
they came and which go through the engine, the answers it passes as the node sent them, and
the failures it hands to the engine (whose JSON-RPC policy test_proxy_jsonrpc.py proves)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from jsonrpc_standins import LISTENER, Chain, QuorumStandin, counter, jsonrpc_config, post, rpc
from proxy_support import Client, Proxy, Reply, Response, Seen, UpstreamServer, wait_for
from quorum_proxy import jsonrpc, jsonrpc_proxy, jsonrpc_relay, relay_scan
from quorum_proxy.jsonrpc import CODE_OUTCOME_UNKNOWN

CALL = json.dumps(rpc("eth_getBalance", 7, ["0x00", "latest"])).encode()
EXPECTED = {"jsonrpc": "2.0", "id": 7, "result": "quorum-0:eth_getBalance"}


@pytest.fixture(autouse=True, params=["compiled", "python"])
def scans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test on both paths: with the compiled scans and lane (relay_scan.py) and without."""
    if request.param == "python":
        monkeypatch.setattr(jsonrpc_relay, "Lane", None)
        monkeypatch.setattr(jsonrpc_relay, "plain_request", None)
        monkeypatch.setattr(jsonrpc_relay, "plain_answer", None)
        monkeypatch.setattr(jsonrpc, "one_call_method", None)
    else:
        assert relay_scan.COMPILED, "run proxy_image/build_relay_scan.py (./dev test does)"
    return str(request.param)


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the relay decided for each read it was offered (True: sent as it came)."""
    decisions: list[bool] = []
    original = jsonrpc_relay.RelayClientProtocol._relay

    def spy(self: jsonrpc_relay.RelayClientProtocol, data: bytes) -> bool:
        decided = original(self, data)
        decisions.append(decided)
        return decided

    monkeypatch.setattr(jsonrpc_relay.RelayClientProtocol, "_relay", spy)
    lane = jsonrpc_relay.Lane
    if lane is not None:
        # the compiled lane relays the common request itself; what it does not, it hands to
        # _relay (seen above) or, through the gate, to the engine (not offered, as in _read)
        class SpiedLane:
            def __init__(self, *args: Any) -> None:
                self.lane = lane(*args)
                self.answer = self.lane.answer

            def __call__(self, data: bytes) -> bool:
                sent = self.lane(data)
                if sent:
                    decisions.append(True)
                return sent

        spied_lane = SpiedLane

        monkeypatch.setattr(jsonrpc_relay, "Lane", spied_lane)
    return decisions


def steady(proxy: Proxy, client: Client, times: int = 1) -> None:
    """A pooled connection to the primary, and the client's connection idle: the relay's
    steady state. (A first request goes through the engine, on a coroutine that may still be
    counting the answer when the client has read it: a request sent then waits, unrelayed.)"""
    for i in range(times):
        assert post(client, rpc("eth_blockNumber", 1000 + i)).status == 200
    listener = proxy.runtime.listeners[LISTENER]

    def idle() -> bool:
        return proxy.loop.call(lambda: not any(c.busy() for c in listener.connections))  # type: ignore[union-attr]

    wait_for(idle, what="the client's connection idle")


def alter(node: QuorumStandin, change: Callable[[Seen, Reply], None]) -> None:
    """The node answers as before, then change() edits its reply (delays it, stalls it)."""
    handle = node.server.handler

    def altered(seen: Seen) -> Reply:
        reply = handle(seen)
        change(seen, reply)
        return reply

    node.server.handler = altered


def head(*lines: str, body: bytes = CALL, version: str = "1.1") -> bytes:
    start = f"POST / HTTP/{version}"
    return ("\r\n".join((start, *lines)) + "\r\n\r\n").encode() + body


PLAIN = head("Host: q", "Content-Type: application/json", f"Content-Length: {len(CALL)}")
CHUNKED = head(
    "Host: q",
    "Transfer-Encoding: chunked",
    body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(CALL), CALL),
)


# (what the client sends, in one write, whether the relay sends it, the answer's status)
SHAPES: dict[str, tuple[bytes, bool, int]] = {
    "plain": (PLAIN, True, 200),
    "lowercase names, keep-alive named": (
        head("host: q", "connection: keep-alive", f"content-length: {len(CALL)}"),
        True,
        200,
    ),
    "X-Forwarded-For from the client": (
        head("Host: q", "X-Forwarded-For: 10.0.0.9", f"Content-Length: {len(CALL)}"),
        True,
        200,
    ),
    "chunked body": (CHUNKED, False, 200),
    "Connection: close": (
        head("Host: q", "Connection: close", f"Content-Length: {len(CALL)}"),
        False,
        200,
    ),
    "HTTP/1.0": (head("Host: q", f"Content-Length: {len(CALL)}", version="1.0"), False, 200),
    "no Host": (head(f"Content-Length: {len(CALL)}"), False, 400),
    "two Host lines": (head("Host: q", "Host: r", f"Content-Length: {len(CALL)}"), False, 400),
    "GET": (b"GET / HTTP/1.1\r\nHost: q\r\n\r\n", False, 200),
    "two requests in one write": (PLAIN + PLAIN, False, 200),
}


@pytest.mark.parametrize(("raw", "relays", "status"), SHAPES.values(), ids=SHAPES.keys())
def test_only_a_plain_request_read_whole_is_relayed(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
    raw: bytes,
    relays: bool,
    status: int,
) -> None:
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        client.send(raw)
        answer = client.read_response()
        assert answer.status == status
        if status == 200 and raw.startswith(b"POST"):
            assert answer.json() == EXPECTED
        if raw.count(b"POST") == 2:
            assert client.read_response().json() == EXPECTED
    assert relayed[:1] == [relays]


def test_a_request_split_over_reads_goes_through_the_engine(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        cut = PLAIN.index(b"\r\n\r\n") + 4
        client.send(PLAIN[:cut])
        time.sleep(0.1)
        client.send(PLAIN[cut:])
        assert client.read_response().json() == EXPECTED
        # and the next one, whole, is relayed again
        client.send(PLAIN)
        assert client.read_response().json() == EXPECTED
    assert relayed == [False, True]
    assert counter(proxy, "jsonrpc_calls", LISTENER, "safe") == 3


def test_a_relayed_request_reaches_the_node_as_sent_with_the_client_address(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, _ = nodes
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        client.send(head("Host: q", "X-Custom: 1", f"Content-Length: {len(CALL)}"))
        assert client.read_response().json() == EXPECTED
    seen = primary.server.seen[-1]
    assert relayed[-1] is True
    assert seen.body == CALL
    assert seen.headers["x-custom"] == "1" and seen.headers["host"] == "q"
    assert seen.headers["x-forwarded-for"] == "127.0.0.1"
    assert counter(proxy, "requests", LISTENER, "/", "200") == 2


def test_a_plain_call_and_its_answer_are_read_by_the_compiled_scans_when_built(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
    scans: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken: list[tuple[str, int]] = []
    for name in ("plain_request", "plain_answer"):
        scan = getattr(jsonrpc_relay, name)
        if scan is not None:

            def spy(*args: Any, scan: Any = scan, name: str = name) -> int:
                found: int = scan(*args)
                taken.append((name, found))
                return found

            monkeypatch.setattr(jsonrpc_relay, name, spy)
    offered: list[bytes] = []  # reads the Python relay (_relay) decided
    python_relay = jsonrpc_relay.RelayClientProtocol._relay

    def relay(self: jsonrpc_relay.RelayClientProtocol, data: bytes) -> bool:
        offered.append(data)
        return python_relay(self, data)

    monkeypatch.setattr(jsonrpc_relay.RelayClientProtocol, "_relay", relay)
    answered: list[str] = []  # answer reads the Python relay read (_relay_answer, _relay_read)
    for method in ("_relay_answer", "_relay_read"):
        original = getattr(jsonrpc_relay.RelayClientProtocol, method)

        def spied(self: Any, *args: Any, original: Any = original, method: str = method) -> Any:
            answered.append(method)
            return original(self, *args)

        monkeypatch.setattr(jsonrpc_relay.RelayClientProtocol, method, spied)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        taken.clear()
        relayed.clear()
        offered.clear()
        answered.clear()
        assert post(client, rpc("eth_getBalance", 7, ["0x00", "latest"])).json() == EXPECTED
        assert relayed == [True]
        if scans == "compiled":
            # the request and its answer in the compiled lane (its scans inside)
            assert (offered, answered, taken) == ([], [], [])
        else:
            assert len(offered) == 1
            assert (answered, taken) == (["_relay_answer", "_relay_read"], [])  # llhttp's
        # a call the lane does not take (its method is not a plain read): _relay's, with the
        # compiled scan of the request when built
        taken.clear()
        relayed.clear()
        offered.clear()
        answered.clear()
        answer = post(client, rpc("eth_sendTransaction", 8, [{"from": "0x00"}])).json()
        assert answer["id"] == 8
        assert relayed == [True]
        assert len(offered) == 1
        if scans == "compiled":
            # the answer is the lane's all the same
            assert [name for name, _ in taken] == ["plain_request"] and taken[0][1] > 0
            assert answered == []
        else:
            assert (answered, taken) == (["_relay_answer", "_relay_read"], [])  # llhttp's


@pytest.mark.parametrize("limit", ["max_header_bytes", "max_uri_bytes", "max_retry_body_bytes"])
def test_a_limit_past_a_c_integer_still_relays_calls(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
    limit: str,
) -> None:
    """(Found in review: the compiled scan raised OverflowError, the client's connection died.)"""
    limits = {limit: 2**63}
    if limit == "max_retry_body_bytes":
        limits["max_buffered_body_bytes"] = 2**63
    proxy = start_proxy(jsonrpc_config([n.address for n in nodes], limits=limits))
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        assert post(client, rpc("eth_getBalance", 7, ["0x00", "latest"])).json() == EXPECTED
    assert relayed == [True]


def test_a_request_sent_while_an_answer_is_relayed_waits_its_turn(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, _ = nodes

    def slow_first(seen: Seen, reply: Reply) -> None:
        if b'"id": 1' in seen.body:
            reply.delay = 0.3

    alter(primary, slow_first)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        for call_id in (1, 2, 3):
            body = json.dumps(rpc("eth_blockNumber", call_id)).encode()
            client.send(head("Host: q", f"Content-Length: {len(body)}", body=body))
            time.sleep(0.02)
        assert [client.read_response().json()["id"] for _ in range(3)] == [1, 2, 3]


def test_the_last_request_of_a_connection_goes_through_the_engine_and_closes_it(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
) -> None:
    config = jsonrpc_config([n.address for n in nodes], limits={"keepalive_requests": 3})
    proxy = start_proxy(config)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)  # the first request: no pooled connection yet, the engine's
        relayed.clear()
        answers = [post(client, rpc("eth_blockNumber", i)) for i in (1, 2)]
        assert [a.json()["id"] for a in answers] == [1, 2]
        assert answers[-1].headers.get("connection") == "close"
        assert client.sock.recv(1) == b""
    assert relayed == [True, False]  # relayed; the last, the engine's


# the answer, as the node sends it


def answering(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    reply: Callable[[Seen], Reply],
) -> tuple[UpstreamServer, Proxy]:
    """Two nodes that answer with reply, and the proxy in front of them; and the primary."""
    primary, backup = upstreams(), upstreams()
    primary.handler = backup.handler = reply
    return primary, start_proxy(jsonrpc_config([primary.address, backup.address]))


def answer_of(seen: Seen) -> bytes:
    call = json.loads(seen.body)
    return json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x1"}).encode()


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_large_answer_streams_through_as_the_node_framed_it(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    relayed: list[bool],
    chunked: bool,
) -> None:
    result = "0x" + "ab" * 400_000  # 800 kB: many reads on the way

    def big(seen: Seen) -> Reply:
        call = json.loads(seen.body)
        body = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": result}).encode()
        return Reply(body=body, chunked=chunked)

    _, proxy = answering(upstreams, start_proxy, big)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        for i in range(2):
            answer = post(client, rpc("eth_getLogs", i, [{}]))
            assert answer.json() == {"jsonrpc": "2.0", "id": i, "result": result}
            assert ("transfer-encoding" in answer.headers) is chunked
    assert relayed == [True, True]


def test_an_answer_that_says_the_node_closes_ends_the_client_connection_too(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    relayed: list[bool],
) -> None:
    closing = {"on": False}

    def reply(seen: Seen) -> Reply:
        headers = [("Connection", "close")] if closing["on"] else []
        return Reply(body=answer_of(seen), headers=headers)

    primary, proxy = answering(upstreams, start_proxy, reply)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        closing["on"] = True
        answer = post(client, rpc("eth_chainId", 5))
        assert answer.json()["result"] == "0x1"
        assert client.sock.recv(1) == b"", "the proxy closed after the answer"
    assert relayed[-1] is True
    closing["on"] = False
    with Client(proxy.addr(LISTENER)) as client:
        assert post(client, rpc("eth_chainId", 6)).json()["id"] == 6
    assert primary.accepted == 2, "the closed connection was not pooled"


def test_interim_answers_before_the_final_one_are_passed_on(
    upstreams: Callable[..., UpstreamServer],
    start_proxy: Callable[..., Proxy],
    relayed: list[bool],
) -> None:
    def reply(seen: Seen) -> Reply:
        return Reply(body=answer_of(seen), interim=True)

    primary, proxy = answering(upstreams, start_proxy, reply)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        raw = json.dumps(rpc("eth_chainId", 9)).encode()
        client.send(head("Host: q", f"Content-Length: {len(raw)}", body=raw))
        data = b""
        while not data.endswith(b'"result": "0x1"}'):
            chunk = client.sock.recv(65536)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n")
    assert relayed[-1] is True
    assert primary.accepted == 1, "the connection stays pooled"


def test_an_answer_cut_after_it_started_ends_the_client_connection_and_is_not_repeated(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
) -> None:
    primary, backup = nodes
    config = jsonrpc_config([n.address for n in nodes], read_timeout=0.5)
    proxy = start_proxy(config)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)

        def stall(seen: Seen, reply: Reply) -> None:
            reply.stall_body = True

        alter(primary, stall)
        client.send(PLAIN)
        data = b""
        while chunk := client.sock.recv(65536):
            data += chunk
    head_part, _, body_part = data.partition(b"\r\n\r\n")
    length = int(head_part.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert 0 < len(body_part) < length, "half an answer, then the close"
    assert relayed[-1] is True
    assert "eth_getBalance" not in backup.methods


@pytest.mark.parametrize("failure", ["reset", "hang", "502"])
def test_a_relayed_unsafe_call_the_node_fails_is_answered_once_with_an_unknown_outcome(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    chain: Chain,
    relayed: list[bool],
    failure: str,
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        primary.fail = failure
        reply = post(client, rpc("eth_sendTransaction", "u", [{}])).json()
        # the engine answers what comes next on this connection
        primary.fail = None
        assert post(client, rpc("eth_blockNumber", 3)).json()["result"] == "0x10"
    assert reply["id"] == "u" and reply["error"]["code"] == CODE_OUTCOME_UNKNOWN
    assert relayed[0] is True
    assert chain.sent_by_account == 1 and "eth_sendTransaction" not in backup.methods
    assert counter(proxy, "jsonrpc_calls", LISTENER, "unsafe") == 1, "counted once"


def test_requests_after_a_failed_relayed_one_wait_for_its_answer(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, backup = nodes
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        primary.fail = "hang"
        calls: list[Any] = [
            rpc("eth_getBalance", "a", ["0x00", "latest"]),
            rpc("net_version", "b"),
        ]
        for call in calls:
            raw = json.dumps(call).encode()
            client.send(head("Host: q", f"Content-Length: {len(raw)}", body=raw))
            time.sleep(0.05)
        ids = [client.read_response().json()["id"] for _ in calls]
    assert ids == ["a", "b"]
    assert backup.methods[:1] == ["eth_getBalance"]


def test_a_large_relayed_request_counts_in_the_body_budget_until_answered(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, _ = nodes

    def slow(seen: Seen, reply: Reply) -> None:
        reply.delay = 0.5

    big = json.dumps(rpc("eth_call", 1, [{"data": "0x" + "ab" * 20_000}, "latest"])).encode()
    budget = proxy.runtime.bodies
    # 40 KB reach the proxy in one read most times, not always (a loaded machine reads what
    # has come): a request split over reads is the engine's; tried until one is relayed
    alter(primary, slow)
    for _ in range(5):
        with Client(proxy.addr(LISTENER)) as client:
            steady(proxy, client)
            relayed.clear()
            primary.server.seen.clear()
            client.send(head("Host: q", f"Content-Length: {len(big)}", body=big))
            wait_for(
                lambda: bool(primary.server.seen) and b"ab" * 100 in primary.server.seen[-1].body
            )
            in_service = proxy.loop.call(lambda: budget.total)
            assert client.read_response().json()["id"] == 1
        if relayed == [True]:
            break
    assert relayed == [True]
    assert in_service >= len(big), "the request's bytes are held while it is served"
    wait_for(lambda: proxy.loop.call(lambda: budget.total) == 0, what="the bytes let go")


# found by review: requests the relay must leave to the engine, and a backlog that is owed


def test_a_crlf_after_the_body_does_not_corrupt_the_relayed_request(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, _ = nodes
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        client.send(PLAIN + b"\r\n")
        answer = client.read_response()
    # the relay counted the head to the first blank line and inserted X-Forwarded-For before
    # the body's last bytes (28 of them were left on the pooled connection): now it declines
    assert relayed == [False]
    assert primary.server.seen[-1].body == CALL
    assert answer.json() == EXPECTED


def test_a_crlf_after_the_body_smuggles_a_request_whose_answer_another_client_gets(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    primary, _ = nodes
    handle = primary.server.handler

    def reply(seen: Seen) -> Reply:
        if seen.method == "GET":
            # answered in order after the POST, a moment later (a separate read)
            return Reply(body=b'{"smuggled": true}', delay=0.3)
        r = handle(seen)
        if b'"id": 99' in seen.body:
            r.delay = 0.6  # a node answers in order: after the smuggled GET
        return r

    # the body's last 28 bytes (the XFF line's length) plus the client's CRLF: a request
    tail = b"GET /aaaa HTTP/1.1\r\nHost:q\r\n"  # a keep-alive request, with the CRLF
    assert len(tail) == len(b"X-Forwarded-For: 127.0.0.1\r\n")
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}' + tail
    with Client(proxy.addr(LISTENER)) as a, Client(proxy.addr(LISTENER)) as b:
        steady(proxy, a)
        steady(proxy, b)
        primary.server.handler = reply
        relayed.clear()
        a.send(head("Host: q", f"Content-Length: {len(body)}", body=body) + b"\r\n")
        a.read_response()
        time.sleep(0.1)  # the pooled connection is back in the pool, its GET unanswered
        call = json.dumps(rpc("eth_blockNumber", 99)).encode()
        b.send(head("Host: q", f"Content-Length: {len(call)}", body=call))
        answer = b.read_response()
    # b got the answer to the GET a hid in its body (the node answers in order)
    assert answer.json().get("id") == 99, answer.body
    assert "GET" not in [s.method for s in primary.server.seen], "a request smuggled"


def sent_as_the_node_fails(
    proxy: Proxy, primary: QuorumStandin, relayed: list[bool], raw: bytes, fail: str
) -> Response:
    """raw sent from the steady state while the primary fails what it gets next (a "reset":
    it acts on the call, then its connection dies); the client's answer."""
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        relayed.clear()
        primary.fail = fail
        client.send(raw)
        return client.read_response()


def test_a_target_longer_than_max_uri_bytes_is_not_sent_by_the_relay(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool], chain: Chain
) -> None:
    primary, _ = nodes
    call = json.dumps(rpc("eth_sendTransaction", "u", [{}])).encode()
    raw = (
        f"POST /{'a' * 9000} HTTP/1.1\r\nHost: q\r\nContent-Length: {len(call)}\r\n\r\n"
    ).encode() + call
    answer = sent_as_the_node_fails(proxy, primary, relayed, raw, "reset")
    # the engine answers 414 and sends nothing; the relay sent it, and on the node's failure
    # the engine answered 414 for a call the node had run: now the relay declines it
    assert (answer.status, chain.sent_by_account, relayed) == (414, 0, [False])


def test_a_head_the_engine_would_count_over_max_header_bytes_is_not_sent_by_the_relay(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
    chain: Chain,
) -> None:
    """(Found in review.) The engine counts each header as name, value and 4 bytes: one more
    than a line `a:b` takes. A head within max_header_bytes as read can be over it as counted."""
    primary, _ = nodes
    proxy = start_proxy(
        jsonrpc_config([n.address for n in nodes], limits={"max_header_bytes": 1024})
    )
    call = json.dumps(rpc("eth_sendTransaction", "u", [{}])).encode()
    short = ["a:b"] * 190
    raw = head("Host: q", *short, f"Content-Length: {len(call)}", body=call)
    assert len(raw) - len(call) <= 1024 < len(raw) - len(call) + len(short)
    answer = sent_as_the_node_fails(proxy, primary, relayed, raw, "reset")
    # the engine answers 431 and sends nothing; the relay sent it, and on the node's failure
    # the engine answered 431 for a call the node had run
    assert (answer.status, chain.sent_by_account, relayed) == (431, 0, [False])


def test_a_target_the_engine_has_no_route_for_is_not_relayed(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool], chain: Chain
) -> None:
    primary, _ = nodes
    call = json.dumps(rpc("eth_sendTransaction", "u", [{}])).encode()
    raw = (f"POST ftp://x/ HTTP/1.1\r\nHost: q\r\nContent-Length: {len(call)}\r\n\r\n").encode()
    answer = sent_as_the_node_fails(proxy, primary, relayed, raw + call, "502")
    # relayed, then failed, it reached an engine with no route for it (an assertion inside
    # the parser's callback, the connection reset); the engine alone answers 404, sends nothing
    assert relayed == [False]
    assert (chain.sent_by_account, answer.status) == (0, 404), answer


def test_a_relayed_unsafe_call_the_engine_rereads_at_the_body_bound_is_not_refused_503(
    start_proxy: Callable[..., Proxy],
    nodes: tuple[QuorumStandin, QuorumStandin],
    relayed: list[bool],
    chain: Chain,
) -> None:
    primary, _ = nodes
    limits = {"max_retry_body_bytes": 4096, "max_buffered_body_bytes": 8192}
    proxy = start_proxy(jsonrpc_config([n.address for n in nodes], limits=limits))
    slow = [Client(proxy.addr(LISTENER)) for _ in range(3)]
    try:
        for c in slow:  # three unfinished bodies of 2700 bytes: 8100 of the 8192 held
            c.send(b"POST / HTTP/1.1\r\nHost: q\r\nContent-Length: 4000\r\n\r\n" + b" " * 2700)
        wait_for(lambda: proxy.loop.call(lambda: proxy.runtime.bodies.total) == 8100)
        call = json.dumps(rpc("eth_sendTransaction", "u", [{"data": "0x" + "00" * 1490}]))
        with Client(proxy.addr(LISTENER)) as client:
            for i in range(2):  # a pooled connection; this client's connection idle
                assert post(client, rpc("eth_blockNumber", i)).status == 200
            time.sleep(0.2)
            relayed.clear()
            primary.fail = "reset"  # acts on it, then the connection dies
            raw = call.encode()
            client.send(head("Host: q", f"Content-Length: {len(raw)}", body=raw))
            answer = client.read_response()
    finally:
        for c in slow:
            c.close()
    assert relayed == [True] and chain.sent_by_account == 1
    # read again by the engine after the failure, the body was a candidate for the bound's
    # 503 "send it again later", for a call the node had run: a body read whole never is
    assert answer.status == 200 and answer.json()["error"]["code"] == CODE_OUTCOME_UNKNOWN


def test_http_1_0_keep_alive_is_served_as_the_engine_serves_it(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    with Client(proxy.addr(LISTENER), timeout=1.0) as client:
        steady(proxy, client)
        relayed.clear()
        keep_alive = ("Host: q", "Connection: keep-alive", f"Content-Length: {len(CALL)}")
        client.send(head(*keep_alive, version="1.0"))
        assert client.read_response().json() == EXPECTED
        try:
            closed = client.sock.recv(1) == b""  # the engine closes (keep-alive: 1.1 only)
        except TimeoutError:
            closed = False
    assert relayed == [False] and closed


def test_a_request_held_behind_a_paused_answer_keeps_the_connection_busy_until_served(
    proxy: Proxy, nodes: tuple[QuorumStandin, QuorumStandin], relayed: list[bool]
) -> None:
    """A request read while an answer was relayed waits in the backlog; when that answer's end
    pauses the client's writes, the request waits for resume_writing. Meanwhile the connection
    owes an answer: not idle for draining, shedding or the keep-alive timer. (On sockets this
    takes a race: the answer's last read must pause the writes. Found by review with a 10 MB
    answer; here the two steps are made directly on a real connection.)"""
    listener = proxy.runtime.listeners[LISTENER]
    calls = [json.dumps(rpc("eth_blockNumber", i)).encode() for i in (2, 3)]
    second, third = (head("Host: q", f"Content-Length: {len(c)}", body=c) for c in calls)
    with Client(proxy.addr(LISTENER)) as client:
        steady(proxy, client)
        (conn,) = proxy.loop.call(lambda: list(listener.connections))
        assert isinstance(conn, jsonrpc_relay.RelayClientProtocol)

        def answer_ends_paused_with_a_request_behind() -> tuple[bool, float | None]:
            conn.backlog.append(second)
            conn.pause_writing()
            conn.data_received(third)  # a read already under way: after the second, not before
            conn.close_if_idle()  # draining's poll
            return conn.busy(), conn.idle_since()

        assert proxy.loop.call(answer_ends_paused_with_a_request_behind) == (True, None)
        relayed.clear()
        proxy.loop.call(conn.resume_writing)
        assert [client.read_response().json()["id"] for _ in calls] == [2, 3]


@pytest.mark.parametrize("interims", [0, 2])
def test_an_answer_relayed_while_draining_says_the_connection_closes(interims: int) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    answer = (interim if interims else b"") + final
    closing = jsonrpc_relay.closing(answer, interims)
    assert closing == (interim if interims else b"") + (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )


def test_a_client_connection_keeps_its_attributes_in_slots() -> None:
    # a class without __slots__ anywhere in the chain gives every connection a dict again
    from quorum_proxy.jsonrpc_proxy import JsonRpcClientProtocol

    assert JsonRpcClientProtocol.__dictoffset__ == 0
    assert all("__slots__" in vars(cls) for cls in JsonRpcClientProtocol.__mro__[:-1])


def test_a_plain_read_without_a_pooled_connection_picks_the_primary_once(
    proxy: Proxy,
    nodes: tuple[QuorumStandin, QuorumStandin],
    scans: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # picking counts and logs a change of primary: the compiled lane, having picked, must not
    # have the Python relay pick again
    picks: list[str] = []
    original = jsonrpc_proxy.JsonRpcListener.pick_primary

    def pick(self: jsonrpc_proxy.JsonRpcListener) -> Any:
        picks.append("pick")
        return original(self)

    monkeypatch.setattr(jsonrpc_proxy.JsonRpcListener, "pick_primary", pick)
    with Client(proxy.addr(LISTENER)) as client:  # a new proxy: nothing pooled yet
        client.send(PLAIN)
        assert client.read_response().json() == EXPECTED
    assert picks == ["pick"]
