"""JSON-RPC awareness for the Quorum RPC listener: which calls may go to another node.

Pure functions, no I/O: parse a request body into calls, classify each call as safe or unsafe
to repeat on another node, build the JSON-RPC error objects the proxy answers when a call
failed, and turn a second node's "already known" answer to a repeated eth_sendRawTransaction
into the success it is. See proxy_image/README.md, "JSON-RPC mode".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from .jsonrpc_keccak import keccak256
from .relay_scan import one_call_method

SAFE = "safe"
UNSAFE = "unsafe"
INVALID = "invalid"
CLASSES = (SAFE, UNSAFE, INVALID)

SEND_RAW_TRANSACTION = "eth_sendRawTransaction"
# Reads: repeating one on another node changes nothing anywhere. The names are GoQuorum
# 24.4's (internal/ethapi/api.go of Consensys/quorum, geth 1.10.3 underneath) and the standard
# execution API's; a method not listed here is unsafe, whatever it does.
SAFE_METHODS = frozenset(
    {
        # chain and node state
        "eth_blockNumber",
        "eth_chainId",
        "eth_syncing",
        "eth_protocolVersion",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_accounts",
        "eth_coinbase",
        "eth_mining",
        "eth_hashrate",
        # accounts and contracts
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getProof",
        "eth_getTransactionCount",
        "eth_call",
        "eth_estimateGas",
        "eth_createAccessList",
        # blocks, transactions, receipts, logs
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getHeaderByNumber",
        "eth_getHeaderByHash",
        "eth_getBlockTransactionCountByNumber",
        "eth_getBlockTransactionCountByHash",
        "eth_getUncleByBlockNumberAndIndex",
        "eth_getUncleByBlockHashAndIndex",
        "eth_getUncleCountByBlockNumber",
        "eth_getUncleCountByBlockHash",
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getRawTransactionByHash",
        "eth_getRawTransactionByBlockNumberAndIndex",
        "eth_getRawTransactionByBlockHashAndIndex",
        "eth_getTransactionReceipt",
        "eth_getLogs",
        "eth_pendingTransactions",
        # filters live in one node's memory: a repeat creates or asks one on the next node,
        # which answers "filter not found" for an id the failed node gave (the truth)
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        # GoQuorum reads (privacy metadata, private receipts, payloads read from Tessera)
        "eth_getPrivacyPrecompileAddress",
        "eth_getPSI",
        "eth_getContractPrivacyMetadata",
        "eth_getPrivateTransactionByHash",
        "eth_getPrivateTransactionReceipt",
        "eth_getQuorumPayload",
        "eth_getQuorumPayloadExtra",
        "eth_decryptQuorumPayload",
        "txpool_content",
        "txpool_status",
        "txpool_inspect",
        # a signed transaction is identified by its hash: a second node that has it answers
        # "already known", which the proxy turns into the hash (see rewrite_already_known)
        SEND_RAW_TRANSACTION,
    }
)
# namespaces of reads only (geth: net_listening/peerCount/version, web3_clientVersion/sha3)
SAFE_PREFIXES = ("net_", "web3_")
# Calls that sign or send with the node's account (both HA nodes hold the same one), or make
# Tessera store and send a private payload: a repeat can send twice. Named in the error a
# client gets; every other method off the safe list is unsafe too ("not known to be safe").
SIGNING_METHODS = frozenset(
    {
        "eth_sendTransaction",
        "eth_sendTransactionAsync",  # GoQuorum: eth_sendTransaction answered by callback
        "eth_sign",
        "eth_signTransaction",
        "eth_signTypedData",
        "eth_signTypedData_v3",
        "eth_signTypedData_v4",
        "eth_fillTransaction",  # GoQuorum stores a private payload in Tessera for it
        "eth_sendRawPrivateTransaction",  # distributes the payload through Tessera
        "eth_distributePrivateTransaction",
        "eth_resend",
    }
)
SIGNING_PREFIXES = ("personal_",)

# What a node answers to a transaction its pool already holds. go-ethereum's txpool and
# GoQuorum 24.4 (core/tx_pool.go): ErrAlreadyKnown = errors.New("already known"); geth before
# 1.9.11: fmt.Errorf("known transaction: %x", hash).
ALREADY_KNOWN = re.compile(r"^\s*(already known|known transaction: (?:0x)?([0-9a-fA-F]{64}))\s*$")
# core.ErrNonceTooLow (GoQuorum core/error.go), later geth adds ": address ..., tx: n state: m"
NONCE_TOO_LOW = re.compile(r"^\s*nonce too low\b")

# JSON-RPC 2.0 leaves -32000..-32099 to the server; these are the proxy's own
CODE_OUTCOME_UNKNOWN = -32098
CODE_NO_ANSWER = -32099


class RawNumber(str):
    """A JSON number kept as its text, so that an id goes back to the client exactly."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# made once: json.loads with hooks builds a decoder per call, which costs more than the parse
_DECODER = json.JSONDecoder(
    parse_int=RawNumber, parse_float=RawNumber, parse_constant=_no_constants
)


# Deeper than this is not a JSON-RPC body (a call nests a few levels): refused before the C
# decoder, which recurses once per level and, under a raised recursion limit (py_ecc sets
# 100,000 on import), overflowed the C stack and killed the process.
MAX_DEPTH = 128
# strings as whole tokens (a bracket inside one does not nest), then brackets
_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


def _nesting_depth_ok(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return True  # the common case: too few brackets to nest that deep
    depth = 0
    for match in _NESTING.finditer(text):
        char = match.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def loads(data: bytes | str) -> Any:
    """JSON with numbers kept as their text (RawNumber); NaN and Infinity refused, and nesting
    deeper than MAX_DEPTH (ValueError)."""
    text = data.decode() if isinstance(data, bytes) else data
    if not _nesting_depth_ok(text):
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return _DECODER.decode(text)


def dumps(value: Any) -> str:
    """Compact JSON of what loads() gave (RawNumber written as the number it was)."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"))


@dataclass(slots=True)
class Call:
    """One call of a request: its id as received, its method and class."""

    id: Any = None
    has_id: bool = False
    method: str | None = None
    kind: str = INVALID
    # eth_sendRawTransaction: the signed transaction's bytes
    raw_tx: bytes | None = None

    @property
    def id_json(self) -> str:
        return dumps(self.id)

    @property
    def tx_hash(self) -> str:
        """The raw transaction's hash, "0x" + Keccak-256 (computed when asked: ~2 ms)."""
        assert self.raw_tx is not None
        return "0x" + keccak256(self.raw_tx).hex()


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON-RPC request body: one call, or a batch of them."""

    calls: tuple[Call, ...]
    batch: bool

    @property
    def safe(self) -> bool:
        """Every call may be repeated on another node."""
        return all(call.kind == SAFE for call in self.calls)

    @property
    def sends_raw(self) -> bool:
        return any(call.raw_tx is not None for call in self.calls)

    def unsafe_methods(self) -> list[str]:
        return list(
            dict.fromkeys(c.method or "(invalid call)" for c in self.calls if c.kind != SAFE)
        )


def _is_text(value: object) -> TypeGuard[str]:
    """A JSON string (loads() keeps numbers as RawNumber, a str too: not one)."""
    return type(value) is str


def classify(method: str) -> str:
    """SAFE when a repeat on another node can do no harm, else UNSAFE (unknown included)."""
    if method in SAFE_METHODS or method.startswith(SAFE_PREFIXES):
        return SAFE
    return UNSAFE


def signs(method: str) -> bool:
    return method in SIGNING_METHODS or method.startswith(SIGNING_PREFIXES)


def raw_transaction(params: Any) -> bytes | None:
    """eth_sendRawTransaction's signed transaction bytes, None if params are not one."""
    if not isinstance(params, list) or len(params) != 1 or not _is_text(params[0]):
        return None
    text = params[0]
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw or None


# the fields of geth's jsonrpcMessage (rpc/json.go)
_MESSAGE_FIELDS = frozenset({"jsonrpc", "id", "method", "params", "error", "result"})


def _read_alike(item: dict[str, Any]) -> bool:
    """Whether geth reads a call's fields as this module does: no key is another spelling of
    one. Go's encoding/json matches a key to a field ignoring case, with Unicode folding (the
    long s, U+017F, ends "params" too), and the last key wins: to geth (checked with go run),
    {"method":"eth_call","METHOD":"eth_sendTransaction"} is a send. casefold() folds at least
    as much as Go does."""
    return item.keys() <= _MESSAGE_FIELDS or not any(
        key not in _MESSAGE_FIELDS and key.casefold() in _MESSAGE_FIELDS for key in item
    )


def _call(item: Any) -> Call:
    if not isinstance(item, dict):
        return Call()
    has_id = "id" in item
    call_id = item.get("id")
    method = item.get("method")
    if not _read_alike(item):
        # geth may run another method, with other params, than the ones read here
        return Call(id=call_id, has_id=has_id, method=_text_or_none(method), kind=UNSAFE)
    if not _is_text(method):
        return Call(id=call_id, has_id=has_id)
    raw_tx = raw_transaction(item.get("params")) if method == SEND_RAW_TRANSACTION else None
    return Call(id=call_id, has_id=has_id, method=method, kind=_kind(method, item), raw_tx=raw_tx)


def _text_or_none(value: Any) -> str | None:
    return value if _is_text(value) else None


def _kind(method: str, item: dict[str, Any]) -> str:
    """The class of a call whose method is a string."""
    if method == SEND_RAW_TRANSACTION and raw_transaction(item.get("params")) is None:
        return UNSAFE  # the node answers "invalid params": harmless, but nothing identifies it
    return classify(method)


def parse_body(data: bytes) -> Body | None:
    """The calls of a JSON-RPC body; None when it is not JSON or not JSON-RPC (passed as is)."""
    try:
        doc = loads(data)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict):
        if not _is_text(doc.get("method")) and _read_alike(doc):
            return None
        return Body(calls=(_call(doc),), batch=False)
    if isinstance(doc, list) and doc:
        return Body(calls=tuple(_call(item) for item in doc), batch=True)
    return None


_ONE = {kind: (kind,) for kind in CLASSES}
# what call_kinds gives for a single safe call (callers may compare by identity)
ONE_SAFE = _ONE[SAFE]
# safe whatever their params: one set lookup on the hot path
PLAIN_READS = SAFE_METHODS - {SEND_RAW_TRANSACTION}


def call_kinds(data: bytes) -> tuple[str, ...] | None:
    """The classes of a body's calls, as parse_body(data) finds them; None: not JSON-RPC.

    The hot path: a single call is classified without building its Call and Body (parse_body
    runs only when a failure or a repeat needs the calls), and the document is read by orjson
    (a fifth of the time). Where the two parsers differ, a number's value (orjson makes a big
    integer a float), classes do not depend on it; whatever orjson refuses (a lone surrogate,
    a BOM, NaN) is decided by loads(), as parse_body decides it.
    """
    method = one_call_method(data, MAX_DEPTH) if one_call_method is not None else None
    if method is not None:
        # one call in strict JSON within MAX_DEPTH, its four fields spelled once each: its
        # class is its method's, as below; a raw transaction's params are read for it
        if method != SEND_RAW_TRANSACTION:
            return ONE_SAFE if method in PLAIN_READS else _ONE[classify(method)]
        try:
            return _ONE[_kind(method, orjson.loads(data))]
        except orjson.JSONDecodeError:
            pass  # a number past a double (1e400): loads() below decides
    # orjson reads 1024 levels: deeper than MAX_DEPTH takes that many brackets, both ways
    if (
        len(data) > 2 * MAX_DEPTH
        and data.count(b"[") + data.count(b"{") > MAX_DEPTH
        and not _nesting_depth_ok(data.decode(errors="replace"))
    ):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            doc = loads(data)
        except (ValueError, RecursionError):
            return None
    if type(doc) is dict:
        if not _read_alike(doc):
            return _ONE[UNSAFE]
        method = doc.get("method")
        if type(method) is not str:
            return None
        if method in PLAIN_READS:
            return ONE_SAFE
        return _ONE[_kind(method, doc)]
    if isinstance(doc, list) and doc:
        return tuple(_call(item).kind for item in doc)
    return None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the proxy answers a body itself: the last node's failure and whether it got it."""

    reason: str  # error, timeout, http_502, http_503
    sent: bool  # some node may have received the body
    repeated: bool  # the body went to more than one node
    server: str = ""


_REASON_TEXT = {
    "error": "the connection failed (refused, reset or closed early)",
    "timeout": "no answer in time",
    "http_502": "it answered HTTP 502",
    "http_503": "it answered HTTP 503",
}


def _failure_text(failure: Failure) -> str:
    what = _REASON_TEXT.get(failure.reason, failure.reason)
    node = f"node {failure.server}" if failure.server else "the node"
    return f"{node} failed: {what}"


def error_object(call: Call, code: int, message: str, data: dict[str, Any]) -> str:
    return (
        f'{{"jsonrpc":"2.0","id":{call.id_json},"error":'
        f'{{"code":{code},"message":{json.dumps(message)},"data":{json.dumps(data)}}}}}'
    )


def failure_answer(body: Body, failure: Failure) -> tuple[bytes, int]:
    """The proxy's own answer when no node answered: one error object per call (notifications
    get none), a batch as a batch in order; and how many calls have an unknown outcome."""
    unsafe = body.unsafe_methods()
    parts = []
    unknown = 0
    for call in body.calls:
        if failure.sent and call.kind != SAFE:
            unknown += 1
        if call.method is not None and not call.has_id:
            continue  # a notification: JSON-RPC 2.0 answers it with nothing
        data: dict[str, Any] = {"reason": failure.reason, "node": failure.server}
        if not failure.sent:
            code = CODE_NO_ANSWER
            data["outcome"] = "not_sent"
            message = f"not sent: no Quorum node could be reached ({_failure_text(failure)})"
        elif call.kind != SAFE:
            code = CODE_OUTCOME_UNKNOWN
            data["outcome"] = "unknown"
            why = (
                f"{call.method} signs or sends with the node's account"
                if call.method is not None and signs(call.method)
                else f"{call.method or 'an invalid call'} is not known to be safe to repeat"
            )
            message = (
                f"outcome unknown: {_failure_text(failure)} after the call was sent; "
                f"not repeated on another node: {why}"
            )
        elif not failure.repeated and unsafe:
            code = CODE_NO_ANSWER
            data["outcome"] = "no_answer"
            message = (
                f"no answer: {_failure_text(failure)}; the batch was not repeated on another "
                f"node because it holds calls unsafe to repeat ({', '.join(unsafe)})"
            )
        else:
            code = CODE_NO_ANSWER
            data["outcome"] = "no_answer"
            message = f"no answer: every Quorum node failed (last: {_failure_text(failure)})"
        parts.append(error_object(call, code, message, data))
    if not parts:
        return b"", unknown
    text = "[" + ",".join(parts) + "]" if body.batch else parts[0]
    return text.encode(), unknown


def _is_already_known(message: str, tx_hash: str) -> bool:
    m = ALREADY_KNOWN.match(message)
    if m is None:
        return False
    named = m.group(2)
    return named is None or named.lower() == tx_hash[2:]


def _raw_tx_errors(
    body: Body, answer: Any, says: Callable[[str, str], bool]
) -> list[tuple[dict[str, Any], Call]]:
    """Error answers to body's eth_sendRawTransaction calls whose message `says` (message,
    the call's transaction hash); matched by id, as a batch's answers may come in any order."""
    by_id = {c.id_json: c for c in body.calls if c.raw_tx is not None and c.has_id}
    items: Iterable[Any] = answer if isinstance(answer, list) else [answer]
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("error"), dict):
            continue
        call = by_id.get(dumps(item.get("id")))
        message = item["error"].get("message")
        if call is None or not isinstance(message, str):
            continue
        if says(message, call.tx_hash):
            found.append((item, call))
    return found


def already_known_calls(body: Body, answer: Any) -> list[tuple[dict[str, Any], Call]]:
    """Answer objects that say "already known" to one of body's eth_sendRawTransaction."""
    return _raw_tx_errors(body, answer, _is_already_known)


def nonce_too_low_calls(body: Body, answer: Any) -> list[tuple[dict[str, Any], Call]]:
    """Answer objects that say "nonce too low" to one of body's eth_sendRawTransaction."""
    return _raw_tx_errors(body, answer, lambda message, _: bool(NONCE_TOO_LOW.match(message)))


def as_success(item: dict[str, Any], call: Call) -> None:
    """Make an error answer to call the success it is: the transaction's hash as result."""
    item.pop("error", None)
    item["result"] = call.tx_hash


def settle_raw_transactions(
    body: Body, answer: Any
) -> tuple[int, list[tuple[dict[str, Any], Call]]]:
    """In a repeat's answer (from loads), make each "already known" to one of body's raw
    transactions the success it is, in place; the count made, and the "nonce too low"
    answers left to check (the failed node may have had the transaction mined)."""
    made = already_known_calls(body, answer)
    for item, call in made:
        as_success(item, call)
    return len(made), nonce_too_low_calls(body, answer)


def transaction_lookup(tx_hash: str) -> bytes:
    """eth_getTransactionByHash of one hash: a node that has the transaction (pending or in a
    block) answers it, one that has not answers null (go-ethereum internal/ethapi)."""
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionByHash", "params": [tx_hash]}
    ).encode()


def lookup_found(data: bytes) -> bool:
    """Whether an eth_getTransactionByHash answer names a transaction."""
    try:
        answer = json.loads(data)
    except ValueError:
        return False
    return isinstance(answer, dict) and isinstance(answer.get("result"), dict)
