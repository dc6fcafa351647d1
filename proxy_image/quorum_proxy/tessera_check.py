"""The Tessera deep check: readiness that touches the database and the key, plus party info.

Tessera's /upcheck answers "I'm up!" without touching anything (UpCheckResource, Tessera
24.x), so this check asks what does. Sources, in Consensys/tessera:

- third party ``GET /keys`` lists the public keys the enclave loaded at start
  (tessera-jaxrs/thirdparty-jaxrs/.../thirdparty/KeyResource.java, RuntimeContext
  .getPublicKeys()): ours must be among them;
- P2P ``POST /resend`` {"type": "INDIVIDUAL", "publicKey", "key"} for a random hash
  (sync-jaxrs/.../p2p/TransactionResource.java -> LegacyResendManagerImpl.resendIndividual)
  queries the database first; an absent hash is TransactionNotFoundException -> 404
  (TransactionNotFoundExceptionMapper), a database error reaches DefaultExceptionMapper -> 500,
  an unreachable database holds the request until Hikari's connection timeout (30 s default,
  tessera-data/.../HikariDataSourceFactory.java sets none);
- Q2T ``GET /transaction/{hash}`` for a random hash (transaction-jaxrs/.../q2t/
  TransactionResource.receive -> TransactionManagerImpl.receive) asks the database the same way.

Each probe must pass; the third party ``GET /partyinfo/keys`` ({"keys": [{"key": ...}]},
thirdparty/PartyInfoResource.java) is read alongside for the party count and never decides
health.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from .config import SERVER_PORT, HealthCheck
from .http_probe import http_request

if TYPE_CHECKING:
    from .upstream import Server

log = logging.getLogger("quorum_proxy")
JSON = "application/json"


@dataclass
class TesseraState:
    """What the last deep check of one server found."""

    checked: bool = False
    failure: str | None = None  # the first failing probe's reason, None when all passed
    party_count: int | None = None  # None: not read, or the last read failed


_states: weakref.WeakKeyDictionary[Server, TesseraState] = weakref.WeakKeyDictionary()


def tessera_state(server: Server) -> TesseraState | None:
    """The server's deep check state, None before its first check."""
    return _states.get(server)


def random_hash() -> str:
    """A well-formed transaction hash (base64 of 64 bytes) that exists nowhere.

    Neither "/" nor "+": the Q2T path carries it unencoded, and Jetty refuses an encoded slash
    in a path as ambiguous.
    """
    while True:
        text = base64.b64encode(os.urandom(64)).decode()
        if "/" not in text and "+" not in text:
            return text


def _keys(body: bytes) -> list[str]:
    """The keys of a {"keys": [{"key": "..."}]} answer (/keys and /partyinfo/keys)."""
    answer: Any = json.loads(body)
    entries = answer["keys"]
    if not isinstance(entries, list):
        raise ValueError("keys is not a list")
    return [str(entry["key"]) for entry in entries]


async def _probe_keys(host: str, port: int, public_key: str) -> str | None:
    status, body = await http_request((host, port), "GET", "/keys", headers=(("Accept", JSON),))
    if status != 200:
        return f"GET /keys answered {status}"
    if public_key not in _keys(body):
        return "GET /keys does not list the public key"
    return None


async def _probe_resend(host: str, port: int, public_key: str) -> str | None:
    body = json.dumps({"type": "INDIVIDUAL", "publicKey": public_key, "key": random_hash()})
    status, _ = await http_request(
        (host, port), "POST", "/resend", body.encode(), (("Content-Type", JSON),)
    )
    return None if status == 404 else f"POST /resend of an unknown hash answered {status}"


async def _probe_transaction(host: str, port: int) -> str | None:
    # Accept picks TransactionResource.receive among the /transaction/{hash} overloads
    status, _ = await http_request(
        (host, port), "GET", f"/transaction/{random_hash()}", headers=(("Accept", JSON),)
    )
    return None if status == 404 else f"GET /transaction of an unknown hash answered {status}"


async def _party_count(host: str, port: int) -> int:
    status, body = await http_request(
        (host, port), "GET", "/partyinfo/keys", headers=(("Accept", JSON),)
    )
    if status != 200:
        raise ValueError(f"GET /partyinfo/keys answered {status}")
    return len(set(_keys(body)))


async def _bounded(what: str, timeout: float, coro: Any) -> Any:
    """The probe's result, or a failure reason when it raises or outlives timeout."""
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        return f"{what}: no answer within {timeout:g}s"
    except (OSError, ValueError, KeyError, TypeError, httptools.HttpParserError) as e:
        return f"{what}: {e.__class__.__name__}: {e}"


async def run_tessera_check(server: Server, check: HealthCheck, addr: tuple[str, int]) -> bool:
    """One deep check of one Tessera at addr (the server's); True when every probe passed.

    The probes run concurrently, each within the check's timeout, so a database that holds
    requests fails the check in one timeout and the party count is still read.
    """
    host = addr[0]

    def port(value: int | None) -> int | None:
        return addr[1] if value == SERVER_PORT else value

    third_party, p2p, q2t = (
        port(check.third_party_port),
        port(check.p2p_port),
        port(check.q2t_port),
    )
    probes: list[tuple[str, Any]] = []
    key = check.public_key
    if third_party is not None and key is not None:
        probes.append(("keys", _probe_keys(host, third_party, key)))
    if p2p is not None and key is not None:
        probes.append(("resend", _probe_resend(host, p2p, key)))
    if q2t is not None:
        probes.append(("transaction", _probe_transaction(host, q2t)))
    party = None
    if third_party is not None:
        party = _bounded("partyinfo", check.timeout, _party_count(host, third_party))
    results = await asyncio.gather(
        *(_bounded(name, check.timeout, coro) for name, coro in probes),
        *((party,) if party is not None else ()),
    )
    state = _states.setdefault(server, TesseraState())
    if party is not None:
        count = results[-1]
        state.party_count = count if isinstance(count, int) else None
        results = results[:-1]
    failure = next((r for r in results if r is not None), None)
    if failure != state.failure:
        # log changes only: a failing Tessera is probed every interval
        if failure is None:
            log.warning("tessera deep check of %s passes again", server.name)
        else:
            log.warning("tessera deep check of %s fails: %s", server.name, failure)
    state.failure = failure
    state.checked = True
    return failure is None
