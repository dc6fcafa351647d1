"""Issue 13 items 2, 3 and 6, pure logic: classification, id echo, batch answers, the
"already known" rewrite, Keccak-256 (quorum_proxy/jsonrpc.py, jsonrpc_keccak.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from quorum_proxy.config import ConfigError, parse_config
from quorum_proxy.jsonrpc import (
    CODE_NO_ANSWER,
    CODE_OUTCOME_UNKNOWN,
    INVALID,
    SAFE,
    UNSAFE,
    Failure,
    call_kinds,
    classify,
    dumps,
    failure_answer,
    loads,
    lookup_found,
    parse_body,
    settle_raw_transactions,
)
from quorum_proxy.jsonrpc_keccak import keccak256

# EIP-155's example: a real signed transaction and its hash (eips.ethereum.org/EIPS/eip-155)
EIP155_TX = (
    "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080"
    "25a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb7"
    "03304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
)
EIP155_HASH = "0x33469b22e9f636356c4160a87eb19df52b7412e8eac32a4a55ffe88ea8350788"


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        # one byte short of the rate, and exactly the rate (padding in one block / a new one)
        (b"a" * 135, "34367dc248bbd832f4e3e69dfaac2f92638bd0bbd18f2912ba4ef454919cf446"),
        (b"a" * 136, "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e"),
        (
            bytes(range(256)) * 3,
            "00e77ce2c4f77212a0d5df106b08157b77058479357a98a6039b457c469723e4",
        ),
        (bytes.fromhex(EIP155_TX[2:]), EIP155_HASH[2:]),
    ],
    ids=["empty", "abc", "rate-1", "rate", "three-blocks+", "eip155-tx"],
)
def test_keccak256_matches_known_digests(data: bytes, digest: str) -> None:
    assert keccak256(data).hex() == digest


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("eth_blockNumber", SAFE),
        ("eth_call", SAFE),
        ("eth_getBalance", SAFE),
        ("eth_getTransactionReceipt", SAFE),
        ("eth_getLogs", SAFE),
        ("eth_chainId", SAFE),
        ("net_version", SAFE),
        ("net_peerCount", SAFE),
        ("web3_clientVersion", SAFE),
        ("eth_getPrivateTransactionReceipt", SAFE),
        ("eth_sendRawTransaction", SAFE),
        ("eth_sendTransaction", UNSAFE),
        ("eth_sendTransactionAsync", UNSAFE),
        ("eth_sendRawPrivateTransaction", UNSAFE),
        ("eth_distributePrivateTransaction", UNSAFE),
        ("eth_fillTransaction", UNSAFE),
        ("eth_sign", UNSAFE),
        ("eth_signTransaction", UNSAFE),
        ("eth_signTypedData_v4", UNSAFE),
        ("personal_sendTransaction", UNSAFE),
        ("personal_unlockAccount", UNSAFE),
        ("admin_addPeer", UNSAFE),
        ("raft_addPeer", UNSAFE),
        ("eth_somethingNew", UNSAFE),
        ("", UNSAFE),
    ],
)
def test_classify_names_reads_safe_and_everything_else_unsafe(method: str, kind: str) -> None:
    assert classify(method) == kind


@dataclass(frozen=True)
class BodyCase:
    name: str
    body: bytes
    calls: list[tuple[str, bool, str]] | None  # (id JSON, has id, kind); None: not JSON-RPC
    batch: bool = False
    safe: bool = False


BODY_CASES = [
    BodyCase("not-json", b"hello", None),
    BodyCase("nan-is-not-json", b'{"jsonrpc":"2.0","id":NaN,"method":"eth_call"}', None),
    BodyCase("json-not-rpc", b'{"hello": 1}', None),
    BodyCase("empty-batch", b"[]", None),
    BodyCase("a-string", b'"eth_call"', None),
    BodyCase(
        "single-safe",
        b'{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}',
        [("7", True, SAFE)],
        safe=True,
    ),
    BodyCase(
        "string-id",
        b'{"jsonrpc":"2.0","id":"a\\"b","method":"eth_sendTransaction","params":[{}]}',
        [('"a\\"b"', True, UNSAFE)],
    ),
    BodyCase(
        "null-id-and-notification",
        b'[{"jsonrpc":"2.0","id":null,"method":"eth_chainId"},'
        b'{"jsonrpc":"2.0","method":"eth_chainId"}]',
        [("null", True, SAFE), ("null", False, SAFE)],
        batch=True,
        safe=True,
    ),
    BodyCase(
        "numbers-kept-as-written",
        b'[{"id":1.50,"method":"eth_call"},{"id":123456789012345678901234567890,"method":"x"},'
        b'{"id":-0,"method":"eth_call"},{"id":1e3,"method":"eth_call"}]',
        [
            ("1.50", True, SAFE),
            ("123456789012345678901234567890", True, UNSAFE),
            ("-0", True, SAFE),
            ("1e3", True, SAFE),
        ],
        batch=True,
    ),
    BodyCase(
        "batch-with-invalid-element",
        b'[{"id":1,"method":"eth_call"},5,{"id":2}]',
        [("1", True, SAFE), ("null", False, INVALID), ("2", True, INVALID)],
        batch=True,
    ),
    BodyCase(
        "raw-tx-without-params-is-unsafe",
        b'{"id":1,"method":"eth_sendRawTransaction","params":[]}',
        [("1", True, UNSAFE)],
    ),
]


@pytest.mark.parametrize("case", BODY_CASES, ids=[c.name for c in BODY_CASES])
def test_parse_body_reads_calls_ids_and_classes(case: BodyCase) -> None:
    body = parse_body(case.body)
    if case.calls is None:
        assert body is None
        return
    assert body is not None
    assert [(c.id_json, c.has_id, c.kind) for c in body.calls] == case.calls
    assert body.batch is case.batch
    assert body.safe is case.safe


# Bodies where a shortcut could read a class the parse does not: call_kinds (the hot path)
# must say what parse_body says, "not JSON-RPC" included.
TRICKY_BODIES = [
    *(case.body for case in BODY_CASES),
    # "method" inside a params string, and as a key of a nested object
    b'{"id":1,"params":["\\"method\\":\\"eth_call\\""],"method":"eth_sendTransaction"}',
    b'{"id":1,"params":[{"method":"eth_call"}],"method":"personal_sign"}',
    b'{"id":1,"params":[{"method":"eth_call"}]}',
    b'{"id":1,"params":"\\"method\\":\\"eth_call\\""}',
    # duplicate keys: json keeps the last
    b'{"id":1,"method":"eth_call","method":"eth_sendTransaction"}',
    b'{"id":1,"method":"eth_sendTransaction","method":"eth_call"}',
    b'{"id":1,"method":"eth_call","method":7}',
    b'{"id":1,"method":7,"method":"eth_call"}',
    # whitespace everywhere JSON allows it, and where it does not (\v, \f)
    b' \t\r\n{ "id" :\t1 ,\n"method"\r: "eth_call" , "params" : [ ] }\n ',
    b'\x0b{"id":1,"method":"eth_call"}',
    b'{"id":1,"method":"eth_call"}\x0c',
    # escapes: a method spelled with them is that method; a broken escape is not JSON
    b'{"id":1,"method":"eth\\u005fcall"}',
    b'{"id":1,"\\u006dethod":"eth_sendTransaction"}',
    b'{"id":"a\\"b","method":"eth_call"}',
    b'{"id":1,"method":"eth_call\\q"}',
    # not JSON: trailing data, truncation, a raw control character, bad UTF-8, leading zeros
    b'{"id":1,"method":"eth_call"}{}',
    b'{"id":1,"method":"eth_call"',
    b'{"id":1,"method":"eth\x01call"}',
    b'{"id":1,"method":"eth_call","x":"\xff"}',
    b'{"id":01,"method":"eth_call"}',
    b'{"id":Infinity,"method":"eth_call"}',
    # an id of more digits than int() takes (kept as text, still JSON-RPC)
    b'{"id":' + b"9" * 5000 + b',"method":"eth_call"}',
    # non-ASCII in a method and in params
    '{"id":1,"method":"eth_cäll"}'.encode(),
    '{"id":1,"method":"eth_call","params":["ü"]}'.encode(),
    # methods that are not strings, and prefixes
    b'{"id":1,"method":null}',
    b'{"id":1,"method":["eth_call"]}',
    b'{"id":1,"method":7}',
    b'{"id":1,"method":"eth_call","method":7}',
    b'{"id":1,"method":"net_version"}',
    b'{"id":1,"method":"personal_unlockAccount"}',
    b'{"id":1,"method":""}',
    # raw transactions: valid hex is safe, anything else unsafe
    b'{"id":1,"method":"eth_sendRawTransaction","params":["0xf86c09"]}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":["0xzz"]}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":["0x"]}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":"0xf86c09"}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":["0xf86c09","x"]}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":[1234]}',
    # keys Go's encoding/json matches to geth's fields case-insensitively (the last wins)
    b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","METHOD":"eth_sendTransaction"}',
    b'{"id":1,"Method":"eth_call"}',
    b'{"id":1,"method":"eth_sendRawTransaction","params":["0xf86c09"],"PARAMS":["0x01"]}',
    b'{"id":1,"method":"eth_call","param\xc5\xbf":[]}',
    b'[{"id":1,"method":"eth_call"},{"id":2,"method":"eth_call","ID":3}]',
    # what orjson refuses and the standard parser reads: a BOM, a lone surrogate, NaN
    b'\xef\xbb\xbf{"id":1,"method":"eth_call"}',
    b'{"id":1,"method":"eth_call","params":["\\ud800"]}',
    b'{"id":1,"method":"eth_call","params":[NaN]}',
    # an id bigger than 64 bits (orjson reads it as a float; the class does not change)
    b'{"id":123456789012345678901234567890,"method":"eth_call"}',
    # batches: mixed, nested, one invalid element, a batch of batches
    b'[{"id":1,"method":"eth_call"},{"id":2,"method":"eth_sendTransaction"}]',
    b'[{"id":1,"method":"eth_call"}, '
    b'{"id":2,"method":"eth_sendRawTransaction","params":["0x01"]}]',
    b'[[{"id":1,"method":"eth_call"}]]',
    b'[{"id":1,"method":"eth_call"},"x",null]',
    b" [ ] ",
    b"{}",
    b"null",
    b"",
    b"[" * 100000 + b"]" * 100000,
]


@pytest.mark.parametrize("raw", TRICKY_BODIES, ids=range(len(TRICKY_BODIES)))
def test_call_kinds_classifies_as_the_full_parse(raw: bytes) -> None:
    body = parse_body(raw)
    expected = None if body is None else tuple(call.kind for call in body.calls)
    assert call_kinds(raw) == expected


def test_call_kinds_reads_the_classes_of_a_mixed_body() -> None:
    # pins a few of the table's answers, so that both sides cannot drift together
    assert call_kinds(TRICKY_BODIES[len(BODY_CASES) + 4]) == (UNSAFE,)
    assert call_kinds(TRICKY_BODIES[len(BODY_CASES) + 5]) == (SAFE,)
    assert call_kinds(b'{"id":1,"method":"eth\\u005fcall"}') == (SAFE,)
    assert call_kinds(b'{"id":1,"method":"eth_call"}{}') is None
    # a number is not a method name, nor a signed transaction (the parser keeps numbers as
    # text: they must not pass for strings)
    assert call_kinds(b'{"id":1,"method":7}') is None
    assert parse_body(b'{"id":1,"method":7}') is None
    raw_number = b'{"id":1,"method":"eth_sendRawTransaction","params":[1234]}'
    assert call_kinds(raw_number) == (UNSAFE,)
    parsed = parse_body(raw_number)
    assert parsed is not None and parsed.calls[0].kind == UNSAFE
    assert call_kinds(b'{"id":1,"method":"eth_call","params":["\\ud800"]}') == (SAFE,)


@pytest.mark.parametrize(
    "raw",
    [
        # geth runs eth_sendTransaction: Go's encoding/json (rpc/json.go's jsonrpcMessage)
        # matches "METHOD" to `json:"method"` ignoring case, and the last key wins
        b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","METHOD":"eth_sendTransaction"}',
        b'{"jsonrpc":"2.0","id":1,"Method":"eth_sendTransaction"}',
        # Go folds the long s (U+017F, UTF-8 c5 bf) to s: "param" and it is params to geth
        b'{"id":1,"method":"eth_sendRawTransaction","params":["0x01"],"param\xc5\xbf":["0x02"]}',
    ],
    ids=["METHOD", "Method", "long-s"],
)
def test_a_call_go_reads_otherwise_than_python_is_never_safe(raw: bytes) -> None:
    assert call_kinds(raw) == (UNSAFE,)
    body = parse_body(raw)
    assert body is not None and [call.kind for call in body.calls] == [UNSAFE]
    assert call_kinds(
        b'[{"id":1,"method":"eth_call"},{"id":2,"method":"eth_sendTransaction"},5]'
    ) == (SAFE, UNSAFE, INVALID)


def test_raw_transaction_is_identified_by_its_keccak_hash() -> None:
    body = parse_body(
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [EIP155_TX]}
        ).encode()
    )
    assert body is not None and body.safe and body.sends_raw
    assert body.calls[0].tx_hash == EIP155_HASH


SENT = Failure(reason="error", sent=True, repeated=False, server="10.0.0.1:22000")


def _answer(raw: bytes, failure: Failure) -> tuple[object, int]:
    body = parse_body(raw)
    assert body is not None
    data, unknown = failure_answer(body, failure)
    return (json.loads(data) if data else None), unknown


def test_unsafe_call_after_a_failure_gets_unknown_outcome_with_its_own_id() -> None:
    answer, unknown = _answer(
        b'{"jsonrpc":"2.0","id":"tx-1","method":"eth_sendTransaction","params":[{}]}', SENT
    )
    assert unknown == 1
    assert isinstance(answer, dict)
    assert answer["id"] == "tx-1" and answer["jsonrpc"] == "2.0" and "result" not in answer
    assert answer["error"]["code"] == CODE_OUTCOME_UNKNOWN
    assert "outcome unknown" in answer["error"]["message"]
    assert "signs or sends with the node's account" in answer["error"]["message"]
    assert answer["error"]["data"]["outcome"] == "unknown"


def test_mixed_batch_answers_each_call_in_order_with_its_id() -> None:
    raw = (
        b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},'
        b'{"jsonrpc":"2.0","id":"two","method":"eth_sendTransaction","params":[{}]},'
        b'{"jsonrpc":"2.0","method":"eth_sendTransaction","params":[{}]},'
        b'{"jsonrpc":"2.0","id":null,"method":"eth_frobnicate"},'
        b'{"jsonrpc":"2.0","id":2.50,"method":"eth_call"}]'
    )
    body = parse_body(raw)
    assert body is not None
    data, unknown = failure_answer(body, SENT)
    # ids go back exactly as written, 2.50 included; the notification gets no answer
    assert [json.dumps(x["id"]) for x in json.loads(data)] == ["1", '"two"', "null", "2.5"]
    assert b'"id":2.50' in data
    answer = json.loads(data)
    assert [x["error"]["code"] for x in answer] == [
        CODE_NO_ANSWER,
        CODE_OUTCOME_UNKNOWN,
        CODE_OUTCOME_UNKNOWN,
        CODE_NO_ANSWER,
    ]
    assert "eth_sendTransaction" in answer[0]["error"]["message"]
    assert "not known to be safe" in answer[2]["error"]["message"]
    assert unknown == 3  # the notification's outcome is unknown too, though unanswered


@pytest.mark.parametrize(
    ("failure", "code", "outcome"),
    [
        (Failure(reason="error", sent=False, repeated=False), CODE_NO_ANSWER, "not_sent"),
        (Failure(reason="timeout", sent=True, repeated=True), CODE_NO_ANSWER, "no_answer"),
    ],
    ids=["nothing-sent", "every-node-failed"],
)
def test_failure_answers_for_safe_or_unsent_calls(
    failure: Failure, code: int, outcome: str
) -> None:
    answer, unknown = _answer(b'{"jsonrpc":"2.0","id":3,"method":"eth_getBalance"}', failure)
    assert unknown == 0
    assert isinstance(answer, dict)
    assert answer["error"]["code"] == code and answer["error"]["data"]["outcome"] == outcome


def test_only_notifications_get_an_empty_answer() -> None:
    answer, unknown = _answer(b'{"jsonrpc":"2.0","method":"eth_sendTransaction"}', SENT)
    assert answer is None and unknown == 1


def _raw_body(*ids: object) -> bytes:
    return json.dumps(
        [
            {"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [EIP155_TX]}
            for i in ids
        ]
    ).encode()


@pytest.mark.parametrize(
    "message",
    ["already known", "known transaction: " + EIP155_HASH[2:]],
    ids=["geth-1.9.11+-and-goquorum", "older-geth"],
)
def test_already_known_for_a_repeated_raw_transaction_becomes_its_hash(message: str) -> None:
    body = parse_body(_raw_body(1, "b"))
    assert body is not None
    answer = loads(
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": message}},
                {"jsonrpc": "2.0", "id": "b", "result": EIP155_HASH},
            ]
        )
    )
    assert settle_raw_transactions(body, answer) == (1, [])
    assert json.loads(dumps(answer)) == [
        {"jsonrpc": "2.0", "id": 1, "result": EIP155_HASH},
        {"jsonrpc": "2.0", "id": "b", "result": EIP155_HASH},
    ]


@pytest.mark.parametrize(
    ("message", "to_check"),
    [
        ("nonce too low", True),
        ("nonce too low: address 0xab, tx: 9 state: 10", True),
        ("known transaction: " + "ab" * 32, False),
        ("insufficient funds", False),
        ("already knownX", False),
    ],
    ids=["nonce", "nonce-later-geth", "other-hash", "other-error", "not-exact"],
)
def test_other_errors_to_a_raw_transaction_are_left_and_nonce_too_low_is_to_check(
    message: str, to_check: bool
) -> None:
    body = parse_body(_raw_body(1))
    assert body is not None
    raw = [{"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": message}}]
    answer = loads(json.dumps(raw))
    made, low = settle_raw_transactions(body, answer)
    assert made == 0 and json.loads(dumps(answer)) == raw
    assert [call.tx_hash for _, call in low] == ([EIP155_HASH] if to_check else [])


def test_answers_are_matched_to_raw_transactions_by_id_not_position() -> None:
    body = parse_body(_raw_body("x", 2))
    assert body is not None
    answer = loads(
        '[{"jsonrpc":"2.0","id":2,"result":"0x1"},'
        '{"jsonrpc":"2.0","id":"x","error":{"code":-32000,"message":"already known"}}]'
    )
    assert settle_raw_transactions(body, answer)[0] == 1
    assert answer[1] == {"jsonrpc": "2.0", "id": "x", "result": EIP155_HASH}


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        (b'{"jsonrpc":"2.0","id":1,"result":{"hash":"0x1","blockNumber":"0x2"}}', True),
        (b'{"jsonrpc":"2.0","id":1,"result":null}', False),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}', False),
        (b"<html>", False),
    ],
    ids=["has-it", "null", "error", "not-json"],
)
def test_lookup_found_only_for_a_transaction_object(answer: bytes, found: bool) -> None:
    assert lookup_found(answer) is found


def _listener_config(listener: dict[str, object]) -> dict[str, object]:
    return {
        "upstreams": {"quorum": {"servers": ["127.0.0.1:22000"]}},
        "listeners": [{"name": "rpc", "listen": "127.0.0.1:0", **listener}],
    }


def test_jsonrpc_listener_config_names_its_upstream() -> None:
    config = parse_config(_listener_config({"protocol": "jsonrpc", "upstream": "quorum"}))
    (listener,) = config.listeners
    assert (listener.protocol, listener.upstream, listener.routes) == ("jsonrpc", "quorum", ())


@pytest.mark.parametrize(
    ("listener", "message"),
    [
        (
            {"protocol": "jsonrpc"},
            "listeners[0].upstream: None is not valid; allowed: a value (this key is required)",
        ),
        (
            {"protocol": "jsonrpc", "upstream": "nope"},
            "listeners[0].upstream: 'nope' is not valid; allowed: a name under upstreams: quorum",
        ),
        (
            {"protocol": "jsonrpc", "upstream": "quorum", "routes": []},
            "listeners[0].routes: [] is not valid; allowed: routes on http listeners only",
        ),
        (
            {"protocol": "json-rpc", "upstream": "quorum"},
            "listeners[0].protocol: 'json-rpc' is not valid; allowed: tcp | http | jsonrpc",
        ),
    ],
    ids=["no-upstream", "unknown-upstream", "routes", "misspelt"],
)
def test_bad_jsonrpc_listener_config_is_one_clear_error(
    listener: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_listener_config(listener))
    assert str(err.value) == message


def test_a_deeply_nested_body_is_not_json_rpc_whatever_the_recursion_limit() -> None:
    """The C JSON decoder recurses once per level: with the interpreter's recursion limit raised
    (a library did it on import: py_ecc sets 100,000) a deep body overflowed the C stack and
    killed the process (in a subprocess here: it was a segfault). Nesting is bounded before
    parsing; such a body is passed as it is."""

    script = (
        "import sys; sys.setrecursionlimit(200_000)\n"
        "from quorum_proxy.jsonrpc import call_kinds, parse_body\n"
        "body = b'[' * 100_000 + b']' * 100_000\n"
        'wrapped = b\'{"jsonrpc":"2.0","method":"eth_call","params":\' + body + b\'}\'\n'
        "print(parse_body(body), call_kinds(body), parse_body(wrapped), call_kinds(wrapped))\n"
    )
    proxy_dir = Path(__file__).resolve().parents[2] / "proxy_image"
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=proxy_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split() == ["None"] * 4


def test_nesting_is_bounded_at_max_depth_and_brackets_in_strings_do_not_count() -> None:
    from quorum_proxy.jsonrpc import MAX_DEPTH, loads

    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match="nested deeper"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    deep_text = '["' + "[{" * MAX_DEPTH + '\\"", 1]'
    assert loads(deep_text)[1] == "1"
