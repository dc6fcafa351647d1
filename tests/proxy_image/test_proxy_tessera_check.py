"""Issue 12 items 3 and 4: the Tessera deep check and the party counts, on real sockets.

Each stand-in Tessera answers /upcheck "I'm up!" whatever its state, as Tessera 24.x does
(UpCheckResource touches nothing), and answers the deep check's probes the way Tessera's
resources do: 404 for an unknown hash once the database answered, 500 when it errs
(DefaultExceptionMapper), or nothing for as long as Hikari waits for a connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from proxy_support import (
    LoopThread,
    Proxy,
    Reply,
    Seen,
    UpstreamServer,
    _UpstreamProtocol,
    http_config,
    request,
    wait_for,
)
from quorum_proxy.config import ConfigError, parse_config

NODE_KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
UP = "quorum_proxy_tessera_deep_check_up"
PARTIES = "quorum_proxy_tessera_party_count"
SPREAD = "quorum_proxy_tessera_party_count_spread"


def party(i: int) -> str:
    return base64.b64encode(bytes([i]) * 32).decode()


def hash_ok(text: str) -> bool:
    """A well-formed transaction hash: standard base64 of 64 bytes."""
    try:
        return len(base64.b64decode(text, validate=True)) == 64
    except ValueError:
        return False


@dataclass
class TesseraStandIn:
    """Third party, P2P and Q2T servers of one Tessera, sharing its state."""

    third_party: UpstreamServer
    p2p: UpstreamServer
    q2t: UpstreamServer
    database: str = "up"  # up | error (500) | hung (no answer)
    keys: list[str] = field(default_factory=lambda: [NODE_KEY])
    parties: list[str] = field(default_factory=lambda: [NODE_KEY])
    partyinfo_status: int = 200

    def __post_init__(self) -> None:
        self.third_party.handler = self.answer_third_party
        self.p2p.handler = self.answer_p2p
        self.q2t.handler = self.answer_q2t

    def upcheck(self, seen: Seen) -> Reply | None:
        return Reply(body=b"I'm up!") if seen.path == "/upcheck" else None

    def database_lookup(self) -> Reply:
        if self.database == "error":
            return Reply(status=500, body=b"Unable to acquire JDBC Connection")
        if self.database == "hung":
            return Reply(status=500, delay=3.0)
        return Reply(status=404, body=b"Message with hash was not found")

    def answer_third_party(self, seen: Seen) -> Reply:
        keys = {"/keys": self.keys, "/partyinfo/keys": self.parties}.get(seen.path)
        if keys is None or seen.method != "GET":
            return self.upcheck(seen) or Reply(status=404)
        if seen.path == "/partyinfo/keys" and self.partyinfo_status != 200:
            return Reply(status=self.partyinfo_status)
        return Reply(body=json.dumps({"keys": [{"key": k} for k in keys]}).encode())

    def answer_p2p(self, seen: Seen) -> Reply:
        if seen.path != "/resend":
            return self.upcheck(seen) or Reply()
        body = json.loads(seen.body)
        well_formed = (
            seen.method == "POST"
            and seen.headers.get("content-type") == "application/json"
            and body["type"] == "INDIVIDUAL"
            and body["publicKey"] == NODE_KEY
            and hash_ok(body["key"])
        )
        return self.database_lookup() if well_formed else Reply(status=400)

    def answer_q2t(self, seen: Seen) -> Reply:
        m = re.fullmatch(r"/transaction/([A-Za-z0-9=]+)", seen.path)
        if m is None:
            return self.upcheck(seen) or Reply()
        if seen.headers.get("accept") != "application/json" or not hash_ok(m.group(1)):
            return Reply(status=400)
        return self.database_lookup()


class HostServer(UpstreamServer):
    """An upstream stand-in on one loopback address: Tesseras share ports, not hosts."""

    def __init__(self, loop: LoopThread, name: str, host: str, port: int) -> None:
        self.host = host
        super().__init__(loop, name, port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> None:
        async def listen() -> asyncio.AbstractServer:
            loop = asyncio.get_running_loop()
            return await loop.create_server(
                lambda: _UpstreamProtocol(self), self.host, self.port, reuse_address=True
            )

        self.server = self.loop.run(listen())
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
def tessera(backend_loop: LoopThread) -> Iterator[Callable[[str], TesseraStandIn]]:
    """Stand-in Tesseras on 127.0.0.2, .3, ...: the same three ports on each, like machines."""
    made: list[TesseraStandIn] = []

    def make(name: str) -> TesseraStandIn:
        host = f"127.0.0.{len(made) + 2}"
        first = made[0] if made else None
        ports = (
            (0, 0, 0)
            if first is None
            else (first.third_party.port, first.p2p.port, first.q2t.port)
        )
        servers = [
            HostServer(backend_loop, f"{name}-{api}", host, port)
            for api, port in zip(("third-party", "p2p", "q2t"), ports, strict=True)
        ]
        made.append(TesseraStandIn(*servers))
        return made[-1]

    try:
        yield make
    finally:
        for stand_in in made:
            for server in (stand_in.third_party, stand_in.p2p, stand_in.q2t):
                server.kill()


def deep_check(**probes: Any) -> dict[str, Any]:
    return {
        "type": "tessera",
        "interval": "50ms",
        "timeout": "300ms",
        "rise": 1,
        "fall": 2,
        "public_key": NODE_KEY,
        **probes,
    }


def all_probes(t: TesseraStandIn) -> dict[str, int]:
    return {"third_party_port": t.third_party.port, "p2p_port": t.p2p.port, "q2t_port": t.q2t.port}


def scrape(proxy: Proxy) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every series of the admin port's /metrics, as a client scrapes it."""
    text = request(proxy.addr("admin"), "GET", "/metrics").body.decode()
    series = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m is None:
            continue
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2) or ""))
        series[(m.group(1), labels)] = float(m.group(3))
    return series


def gauge(proxy: Proxy, name: str, **labels: str) -> float | None:
    return scrape(proxy).get((name, frozenset(labels.items())))


def healthy(proxy: Proxy, server: str) -> bool:
    def read() -> bool:
        group = proxy.runtime.groups["tessera"]
        return next(s for s in group.servers if s.name == server).available(time.monotonic())

    return proxy.loop.call(read)


def start_deep(
    start_proxy: Callable[..., Proxy], stand_ins: list[TesseraStandIn], **probes: Any
) -> Proxy:
    """One upstream "tessera" over the stand-ins' third party servers; all probes by default."""
    check = deep_check(**(probes or all_probes(stand_ins[0])))
    return start_proxy(
        http_config([t.third_party.address for t in stand_ins], upstream={"health_check": check})
    )


DATABASE_PROBES = [
    pytest.param("p2p_port", "error", id="p2p-resend-500"),
    pytest.param("p2p_port", "hung", id="p2p-resend-no-answer"),
    pytest.param("q2t_port", "error", id="q2t-transaction-500"),
    pytest.param("q2t_port", "hung", id="q2t-transaction-no-answer"),
]


@pytest.mark.parametrize(("probe", "failure"), DATABASE_PROBES)
def test_a_tessera_whose_database_is_gone_is_marked_down_while_upcheck_says_up(
    tessera: Callable[[str], TesseraStandIn],
    start_proxy: Callable[..., Proxy],
    probe: str,
    failure: str,
) -> None:
    a = tessera("a")
    port = a.p2p.port if probe == "p2p_port" else a.q2t.port
    proxy = start_deep(start_proxy, [a], **{probe: port})
    wait_for(lambda: gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 1.0)
    a.database = failure
    wait_for(lambda: not healthy(proxy, a.third_party.address), what="deep check fall")
    assert gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 0.0
    # what /upcheck alone would have said
    for stand_in in (a.third_party, a.p2p, a.q2t):
        assert request(stand_in.addr, "GET", "/upcheck").body == b"I'm up!"
    a.database = "up"
    wait_for(lambda: healthy(proxy, a.third_party.address), what="deep check rise")
    assert gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 1.0


def test_a_tessera_that_has_not_loaded_the_shared_key_is_marked_down(
    tessera: Callable[[str], TesseraStandIn], start_proxy: Callable[..., Proxy]
) -> None:
    a = tessera("a")
    proxy = start_deep(start_proxy, [a])
    wait_for(lambda: gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 1.0)
    a.keys = [OTHER_KEY]  # started with another key pair, or with none
    wait_for(lambda: not healthy(proxy, a.third_party.address), what="key missing")
    assert gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 0.0
    assert request(a.third_party.addr, "GET", "/upcheck").status == 200
    a.keys = []
    time.sleep(0.2)
    assert not healthy(proxy, a.third_party.address)
    a.keys = [OTHER_KEY, NODE_KEY]
    wait_for(lambda: healthy(proxy, a.third_party.address), what="key listed again")


def test_traffic_and_listener_readiness_follow_the_deep_check(
    tessera: Callable[[str], TesseraStandIn], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = tessera("a"), tessera("b")
    proxy = start_deep(start_proxy, [a, b])
    ready = lambda: request(proxy.addr("admin"), "GET", "/readyz/p2p").status  # noqa: E731
    wait_for(lambda: gauge(proxy, UP, upstream="tessera", server=b.third_party.address) == 1.0)
    assert ready() == 200
    a.database = "error"
    wait_for(lambda: not healthy(proxy, a.third_party.address), what="a down")
    before = len(a.third_party.seen)
    for _ in range(4):
        assert request(proxy.addr("p2p"), "GET", "/version").json()["server"] == "b-third-party"
    assert not [s for s in a.third_party.seen[before:] if s.path == "/version"]
    assert ready() == 200  # b still serves
    b.keys = []
    wait_for(lambda: ready() == 503, what="no Tessera passes")
    readiness = request(proxy.addr("admin"), "GET", "/readyz/p2p").json()
    assert readiness["upstreams"]["tessera"]["available"] == 0
    a.database = "up"
    wait_for(lambda: ready() == 200, what="a back")


def test_party_counts_show_tessera_processes_whose_party_lists_diverge(
    tessera: Callable[[str], TesseraStandIn], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = tessera("a"), tessera("b")
    a.parties = [NODE_KEY, party(1), party(2)]
    b.parties = [NODE_KEY, party(1)]  # b missed a /partyinfo broadcast
    proxy = start_deep(start_proxy, [a, b])
    wait_for(lambda: gauge(proxy, SPREAD, upstream="tessera") == 1.0, what="spread 1")
    assert gauge(proxy, PARTIES, upstream="tessera", server=a.third_party.address) == 3.0
    assert gauge(proxy, PARTIES, upstream="tessera", server=b.third_party.address) == 2.0
    # diverging party lists are an alarm, not a reason to take b out
    assert healthy(proxy, a.third_party.address) and healthy(proxy, b.third_party.address)
    b.parties = [party(2), NODE_KEY, party(1), party(1)]  # a key listed twice counts once
    wait_for(lambda: gauge(proxy, SPREAD, upstream="tessera") == 0.0, what="agreement")
    assert gauge(proxy, PARTIES, upstream="tessera", server=b.third_party.address) == 3.0


def test_a_party_list_that_cannot_be_read_drops_its_series_and_keeps_the_server(
    tessera: Callable[[str], TesseraStandIn], start_proxy: Callable[..., Proxy]
) -> None:
    a, b = tessera("a"), tessera("b")
    a.parties = [NODE_KEY, party(1), party(2), party(3)]
    proxy = start_deep(start_proxy, [a, b])
    wait_for(lambda: gauge(proxy, SPREAD, upstream="tessera") == 3.0, what="both read")
    a.partyinfo_status = 500
    wait_for(
        lambda: gauge(proxy, PARTIES, upstream="tessera", server=a.third_party.address) is None,
        what="a's series gone",
    )
    # a stale count would show a divergence that may no longer exist
    assert gauge(proxy, SPREAD, upstream="tessera") == 0.0
    assert healthy(proxy, a.third_party.address)
    assert gauge(proxy, UP, upstream="tessera", server=a.third_party.address) == 1.0


def test_checks_of_other_kinds_expose_no_tessera_series(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    a = upstreams("a")
    check = {"type": "http", "path": "/upcheck", "interval": "50ms", "rise": 1, "fall": 1}
    proxy = start_proxy(http_config([a.address], upstream={"health_check": check}))
    wait_for(lambda: len(a.seen) >= 2, what="two checks")
    names = {name for name, _ in scrape(proxy)}
    assert "quorum_proxy_upstream_healthy" in names
    assert not {UP, PARTIES, SPREAD} & names


def parse_check(check: dict[str, Any]) -> Any:
    return parse_config(http_config(["127.0.0.1:9081"], upstream={"health_check": check}))


GOOD = {"type": "tessera", "public_key": NODE_KEY, "third_party_port": 9081}
BAD_CHECKS = [
    ({"type": "tessera"}, "health_check.third_party_port", "at least one of"),
    ({**GOOD, "public_key": "not base64!"}, "health_check.public_key", "base64 of 32 bytes"),
    (
        {**GOOD, "public_key": base64.b64encode(b"x" * 31).decode()},
        "health_check.public_key",
        "base64 of 32 bytes",
    ),
    ({**GOOD, "public_key": 42}, "health_check.public_key", "base64 of 32 bytes"),
    ({**GOOD, "third_party_port": 0}, "health_check.third_party_port", "integer >= 1"),
    ({**GOOD, "p2p_port": 65536}, "health_check.p2p_port", "<= 65535"),
    ({**GOOD, "q2t_port": "9101"}, "health_check.q2t_port", 'or "server"'),
    ({**GOOD, "q2t_port": True}, "health_check.q2t_port", 'or "server"'),
    ({"type": "tessera", "p2p_port": 9001}, "health_check.public_key", "when third_party_port"),
    ({"type": "http", "public_key": NODE_KEY}, "health_check.public_key", "tessera checks only"),
    ({"type": "tcp", "q2t_port": 9101}, "health_check.q2t_port", "tessera checks only"),
]


@pytest.mark.parametrize(("check", "key", "allowed"), BAD_CHECKS)
def test_bad_tessera_check_settings_are_refused_naming_the_key(
    check: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_check(check)
    assert e.value.path == f"upstreams.tessera.{key}"
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_a_probe_on_the_server_port_asks_each_server_on_its_own_port(
    upstreams: Callable[..., UpstreamServer], start_proxy: Callable[..., Proxy]
) -> None:
    # two Tesseras on one host, told apart by port only (the cluster drill's layout)
    a, b = upstreams("a"), upstreams("b")
    state = {a.name: "up", b.name: "up"}

    def q2t(server: UpstreamServer) -> Callable[[Seen], Reply]:
        def answer(seen: Seen) -> Reply:
            if not seen.path.startswith("/transaction/"):
                return Reply()
            return Reply(status=404 if state[server.name] == "up" else 500)

        return answer

    a.handler, b.handler = q2t(a), q2t(b)
    check = {"type": "tessera", "q2t_port": "server", "interval": "50ms", "rise": 1, "fall": 1}
    proxy = start_proxy(http_config([a.address, b.address], upstream={"health_check": check}))
    wait_for(lambda: gauge(proxy, UP, upstream="tessera", server=b.address) == 1.0)
    state[b.name] = "error"
    wait_for(lambda: not healthy(proxy, b.address), what="b down")
    assert healthy(proxy, a.address)
    assert any(s.path.startswith("/transaction/") for s in a.seen)


def test_a_q2t_only_tessera_check_needs_no_public_key() -> None:
    config = parse_check({"type": "tessera", "q2t_port": 9101})
    check = config.upstreams["tessera"].health_check
    assert (check.type, check.q2t_port, check.public_key) == ("tessera", 9101, None)
