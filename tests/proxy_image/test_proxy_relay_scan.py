"""The relay's compiled scans (relay_scan.py, _relay_scan.c) against the Python path they
shortcut: what C takes, llhttp, plain_head and the JSON parse take the same way (tables of the
common and the refused cases, then seeded mutations of them); what C leaves, the Python path
decides. The relay on real sockets runs on both paths (test_proxy_jsonrpc_relay.py)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

import httptools
import pytest
from quorum_proxy import jsonrpc, relay_scan
from quorum_proxy.config import Limits
from quorum_proxy.jsonrpc import MAX_DEPTH, SAFE_METHODS, call_kinds, parse_body
from quorum_proxy.jsonrpc_relay import RequestScan, ResponseScan

LIMITS = Limits(max_header_bytes=1024, max_uri_bytes=64, max_retry_body_bytes=512)
MUTATIONS = 4000


def compiled() -> tuple[
    Callable[[bytes, int, int, int], int],
    Callable[[bytes], int],
    Callable[[bytes, int], str | None],
]:
    request, answer, method = (
        relay_scan.plain_request,
        relay_scan.plain_answer,
        relay_scan.one_call_method,
    )
    assert request is not None and answer is not None and method is not None, (
        "quorum_proxy/_relay_scan.c is not built: run proxy_image/build_relay_scan.py "
        "(./dev test does)"
    )
    return request, answer, method


def test_the_compiled_scans_are_built_where_the_tests_run() -> None:
    compiled()
    assert relay_scan.COMPILED


# --- requests ---

BODY = b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":1}'


def request(*lines: str, body: bytes = BODY, start: str = "POST / HTTP/1.1") -> bytes:
    return ("\r\n".join((start, *lines)) + "\r\n\r\n").encode("latin-1") + body


CL = f"Content-Length: {len(BODY)}"
PLAIN_REQUESTS = {
    "curl": request(
        "Host: 127.0.0.1:22000",
        "User-Agent: curl/8.5.0",
        "Accept: */*",
        "Content-Type: application/json",
        CL,
    ),
    "web3.py, lower case": request(
        "host: q", "content-type: application/json", "connection: keep-alive", CL.lower()
    ),
    "tabs and spaces around values": request("Host:\tq ", f"Content-Length:  {len(BODY)}\t"),
    "a query and a path": request("Host: q", CL, start="POST /rpc/v1?key=a%20b&x=1 HTTP/1.1"),
    "an X-Forwarded-For already": request("Host: q", "X-Forwarded-For: 10.0.0.1", CL),
    "an empty body": request("Host: q", "Content-Length: 0", body=b""),
}
REFUSED_REQUESTS = {
    "HTTP/1.0": request("Host: q", CL, start="POST / HTTP/1.0"),
    "GET": request("Host: q", CL, start="GET / HTTP/1.1"),
    "absolute form": request("Host: q", CL, start="POST http://q/ HTTP/1.1"),
    "a fragment": request("Host: q", CL, start="POST /#x HTTP/1.1"),
    "target over max_uri_bytes": request("Host: q", CL, start=f"POST /{'a' * 64} HTTP/1.1"),
    "no Host": request(CL),
    "two Host lines": request("Host: q", "Host: r", CL),
    "no Content-Length": request("Host: q"),
    "two Content-Length lines": request("Host: q", CL, CL),
    "a signed Content-Length": request("Host: q", f"Content-Length: +{len(BODY)}"),
    "Content-Length short of the body": request("Host: q", f"Content-Length: {len(BODY) - 1}"),
    "Content-Length past the body": request("Host: q", f"Content-Length: {len(BODY) + 1}"),
    "Transfer-Encoding": request("Host: q", "Transfer-Encoding: chunked", CL),
    "Expect": request("Host: q", "Expect: 100-continue", CL),
    "Connection: close": request("Host: q", "Connection: close", CL),
    "Connection: upgrade": request("Host: q", "Connection: upgrade", "Upgrade: websocket", CL),
    "Proxy-Connection": request("Host: q", "Proxy-Connection: keep-alive", CL),
    "a space before a colon": request("Host : q", CL),
    "a folded line": request("Host: q", " folded", CL),
    "a bare LF": request("Host: q\nX: y", CL),
    "a non-ASCII value": request("Host: q", "X-Name: caf\xe9", CL),
    "a control byte in a value": request("Host: q", "X-Name: a\x01b", CL),
    "an empty line before": b"\r\n" + request("Host: q", CL),
    "an empty line after": request("Host: q", CL) + b"\r\n",
    "two requests": request("Host: q", CL) * 2,
    "a head over max_header_bytes": request("Host: q", "X-Pad: " + "a" * 1024, CL),
    # 1023 bytes as read, over 1024 as the engine counts them (name, value and 4 per header)
    "a head over max_header_bytes as the engine counts": request("Host: q", *["a:b"] * 195, CL),
    "a body over max_retry_body_bytes": request(
        "Host: q", "Content-Length: 600", body=b"[" + b" " * 598 + b"]"
    ),
}


def llhttp_body(data: bytes) -> bytes | None:
    return RequestScan().plain_body(data, LIMITS)


def c_body(data: bytes) -> bytes | None:
    plain_request = compiled()[0]
    size = plain_request(
        data, LIMITS.max_header_bytes, LIMITS.max_uri_bytes, LIMITS.max_retry_body_bytes
    )
    return None if size < 0 else data[size:]


@pytest.mark.parametrize("data", PLAIN_REQUESTS.values(), ids=PLAIN_REQUESTS.keys())
def test_a_common_plain_request_is_taken_by_the_compiled_scan_as_llhttp_takes_it(
    data: bytes,
) -> None:
    body = c_body(data)
    assert body is not None
    assert body == llhttp_body(data) == data[data.index(b"\r\n\r\n") + 4 :]


@pytest.mark.parametrize("data", REFUSED_REQUESTS.values(), ids=REFUSED_REQUESTS.keys())
def test_the_compiled_scan_leaves_anything_else_to_llhttp(data: bytes) -> None:
    """(llhttp then refuses most of these; a fragment, say, it takes.)"""
    assert c_body(data) is None


SPECIAL = [
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"0",
    b"9",
    b"-",
    b"+",
    b"e",
    b".",
    b"u",
    b"#",
    b"/",
]


def mutations(seeds: list[bytes], count: int, salt: int) -> Iterator[bytes]:
    """count seeded variants of the seeds: bytes replaced, inserted, dropped, cases flipped,
    lines doubled or cut short."""
    rng = random.Random(salt)  # noqa: S311 - test inputs, repeatable by their seed
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            what = rng.randrange(6)
            if what == 0 and at < len(data):
                data[at : at + 1] = rng.choice(SPECIAL)
            elif what == 1:
                data[at:at] = rng.choice(SPECIAL)
            elif what == 2 and at < len(data):
                del data[at]
            elif what == 3 and at < len(data):
                data[at : at + 1] = bytes(data[at : at + 1]).swapcase()
            elif what == 4:
                end = data.find(b"\n", at) + 1
                data[end:end] = data[at:end] if end else b""
            else:
                del data[at:]
        yield bytes(data)


def test_a_mutated_request_the_compiled_scan_takes_llhttp_takes_with_the_same_body() -> None:
    seeds = [*PLAIN_REQUESTS.values(), *REFUSED_REQUESTS.values()]
    taken = 0
    for data in mutations(seeds, MUTATIONS, 1):
        body = c_body(data)
        if body is not None:
            taken += 1
            assert llhttp_body(data) == body, data
    assert taken > MUTATIONS // 50  # the mutations reach accepted requests, not only refusals


@pytest.mark.parametrize("limit", ["max_header_bytes", "max_uri_bytes", "max_retry_body_bytes"])
def test_a_limit_past_a_c_integer_reads_as_no_limit_not_an_error(limit: str) -> None:
    """config.py bounds the limits from below only: 2**63 is a valid limit."""
    plain_request = compiled()[0]
    data = PLAIN_REQUESTS["curl"]
    limits = {"max_header_bytes": 1024, "max_uri_bytes": 64, "max_retry_body_bytes": 512}
    limits[limit] = 2**63
    size = plain_request(data, *limits.values())
    assert data[size:] == BODY


# --- answers ---

RESULT = b'{"jsonrpc":"2.0","id":1,"result":"0x10"}'


def answer(*lines: str, body: bytes = RESULT, start: str = "HTTP/1.1 200 OK") -> bytes:
    return ("\r\n".join((start, *lines)) + "\r\n\r\n").encode("latin-1") + body


RL = f"Content-Length: {len(RESULT)}"
PLAIN_ANSWERS = {
    "geth": (
        answer(
            "Content-Type: application/json",
            "Vary: Origin",
            "Date: Tue, 01 Dec 2026 21:00:00 GMT",
            RL,
        ),
        200,
    ),
    "keep-alive said": (answer("Connection: keep-alive", RL), 200),
    "a 500 with a body": (answer(RL, start="HTTP/1.1 500 Internal Server Error"), 500),
    "a 503": (answer(RL, start="HTTP/1.1 503 Service Unavailable"), 503),
    "an empty reason": (answer(RL, start="HTTP/1.1 200 "), 200),
}
REFUSED_ANSWERS = {
    "HTTP/1.0": answer(RL, start="HTTP/1.0 200 OK"),
    "interim first": answer(start="HTTP/1.1 100 Continue", body=answer(RL)),
    "204": answer("Content-Length: 0", start="HTTP/1.1 204 No Content", body=b""),
    "304": answer("Content-Length: 0", start="HTTP/1.1 304 Not Modified", body=b""),
    "no reason, no space": answer(RL, start="HTTP/1.1 200"),
    "chunked": answer("Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    "no length (ends with the close)": answer(),
    "Connection: close": answer("Connection: close", RL),
    "two Content-Length lines": answer(RL, RL),
    "a part of the body": answer(RL)[:-1],
    "the head only": answer(RL, body=b""),
    "two answers": answer(RL) * 2,
    "a non-ASCII value": answer("X: caf\xe9", RL),
}


def llhttp_answer(data: bytes) -> int:
    scan = ResponseScan()
    try:
        scan.parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return 0
    whole = scan.done and scan.keep and scan.begun == 1 and scan.interims == 0
    return scan.status if whole else 0


@pytest.mark.parametrize(("data", "status"), PLAIN_ANSWERS.values(), ids=PLAIN_ANSWERS.keys())
def test_a_whole_answer_is_taken_by_the_compiled_scan_as_llhttp_takes_it(
    data: bytes, status: int
) -> None:
    assert compiled()[1](data) == llhttp_answer(data) == status


@pytest.mark.parametrize("data", REFUSED_ANSWERS.values(), ids=REFUSED_ANSWERS.keys())
def test_an_answer_outside_the_common_case_is_left_to_llhttp(data: bytes) -> None:
    assert compiled()[1](data) == 0


def test_a_mutated_answer_the_compiled_scan_takes_llhttp_reads_as_whole_with_that_status() -> None:
    plain_answer = compiled()[1]
    seeds = [data for data, _ in PLAIN_ANSWERS.values()] + list(REFUSED_ANSWERS.values())
    taken = 0
    for data in mutations(seeds, MUTATIONS, 2):
        status = plain_answer(data)
        if status:
            taken += 1
            assert llhttp_answer(data) == status, data
    assert taken > MUTATIONS // 50


# --- one call's method ---

CALLS = {
    "geth's own shape": (BODY, "eth_blockNumber"),
    "keys in another order, spaces": (
        b' { "id" : "a" ,\n"params":[{"to":"0x1","data":"0x"},"latest"], "method":"eth_call",'
        b'"jsonrpc":"2.0"}\r\n',
        "eth_call",
    ),
    "every JSON value in params": (
        b'{"method":"eth_getLogs","params":[1,-2.5e-3,0,true,false,null,"\\u00e9\\n",{},[[]]],'
        b'"id":null}',
        "eth_getLogs",
    ),
    "no id, no params": (b'{"method":"net_version"}', "net_version"),
    "an unsafe method (the caller classifies it)": (
        b'{"method":"eth_sendTransaction","params":[{}],"id":1}',
        "eth_sendTransaction",
    ),
}
UNKNOWN_CALLS = {
    "a batch": b"[" + BODY + b"]",
    "no method": b'{"id":1}',
    "an empty object": b"{}",
    "a method that is not a string": b'{"method":7}',
    "an escaped method": b'{"method":"eth_c\\u0061ll"}',
    "an escaped key": b'{"m\\u0065thod":"eth_call"}',
    "the method twice": b'{"method":"eth_call","method":"eth_sendTransaction"}',
    "another spelling of a field": b'{"method":"eth_call","METHOD":"eth_sendTransaction"}',
    "another field": b'{"method":"eth_call","result":1}',
    "a trailing comma": b'{"method":"eth_call",}',
    "a trailing comma in params": b'{"method":"eth_call","params":[1,]}',
    "a leading zero": b'{"method":"eth_call","params":[01]}',
    "a lone surrogate": b'{"method":"eth_call","params":["\\ud800"]}',
    "a surrogate pair (left to the parsers)": b'{"method":"eth_call","params":["\\ud83d\\ude00"]}',
    "non-ASCII": '{"method":"eth_call","params":["é"]}'.encode(),
    "NaN": b'{"method":"eth_call","params":[NaN]}',
    "a byte order mark": b"\xef\xbb\xbf" + BODY,
    "two documents": BODY + BODY,
    "too deep": b'{"method":"eth_call","params":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
    "not closed": BODY[:-1],
}


@pytest.mark.parametrize(("body", "method"), CALLS.values(), ids=CALLS.keys())
def test_one_plain_call_gives_its_method_as_the_parse_reads_it(body: bytes, method: str) -> None:
    assert compiled()[2](body, MAX_DEPTH) == method
    parsed = parse_body(body)
    assert parsed is not None and not parsed.batch
    assert [call.method for call in parsed.calls] == [method]


@pytest.mark.parametrize("body", UNKNOWN_CALLS.values(), ids=UNKNOWN_CALLS.keys())
def test_anything_but_one_plain_call_is_left_to_the_parse(body: bytes) -> None:
    assert compiled()[2](body, MAX_DEPTH) is None


def test_the_depth_bound_is_the_parses() -> None:
    def nested(depth: int) -> bytes:  # the call object is the first level
        inner = depth - 1
        return b'{"method":"eth_call","params":' + b"[" * inner + b"]" * inner + b"}"

    assert compiled()[2](nested(MAX_DEPTH), MAX_DEPTH) == "eth_call"
    assert parse_body(nested(MAX_DEPTH)) is not None
    assert compiled()[2](nested(MAX_DEPTH + 1), MAX_DEPTH) is None
    assert parse_body(nested(MAX_DEPTH + 1)) is None


def test_a_mutated_call_the_compiled_scan_reads_the_parse_reads_as_that_one_call() -> None:
    one_call_method = compiled()[2]
    seeds = [body for body, _ in CALLS.values()] + list(UNKNOWN_CALLS.values())
    seeds.append(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "method": sorted(SAFE_METHODS)[0],
                "params": [{"a": [1, 2.5, "x"]}],
                "id": "q",
            }
        ).encode()
    )
    taken = 0
    for body in mutations(seeds, MUTATIONS, 3):
        method = one_call_method(body, MAX_DEPTH)
        if method is not None:
            taken += 1
            parsed = parse_body(body)
            assert parsed is not None and not parsed.batch, body
            assert [call.method for call in parsed.calls] == [method], body
    assert taken > MUTATIONS // 50


def test_a_body_is_classified_alike_with_and_without_the_compiled_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """call_kinds takes a call's class from its method when the compiled scan reads one call
    (every method but a raw transaction's, whose params decide): as the full parse does."""
    compiled()
    methods = [
        "eth_call",
        "net_version",
        "web3_clientVersion",
        "eth_sendTransaction",
        "personal_unlockAccount",
        "eth_sendRawTransaction",
        "eth_getLogs",
        "no_such",
    ]
    seeds = [body for body, _ in CALLS.values()] + list(UNKNOWN_CALLS.values())
    seeds += [
        json.dumps({"jsonrpc": "2.0", "method": m, "params": [], "id": 1}).encode()
        for m in methods
    ]
    raw = "0x" + bytes(range(110)).hex()  # a raw transaction's params are read
    seeds += [
        json.dumps({"method": "eth_sendRawTransaction", "params": [raw], "id": 2}).encode(),
        b'{"method":"eth_sendRawTransaction","params":["0x"],"id":1e400}',
        b'{"method":"eth_sendRawTransaction","params":["0xzz", 1]}',
    ]
    bodies = [*seeds, *mutations(seeds, MUTATIONS, 4)]
    with_scan = [call_kinds(body) for body in bodies]
    monkeypatch.setattr(jsonrpc, "one_call_method", None)
    assert [call_kinds(body) for body in bodies] == with_scan
