"""The compiled lane's own guards (_relay_scan.c, Lane): what it reads of a connection.

Its behaviour on real sockets is in test_proxy_jsonrpc_relay.py, where every case runs with
and without it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from quorum_proxy import relay_scan
from quorum_proxy.jsonrpc import MAX_DEPTH, ONE_SAFE, PLAIN_READS
from quorum_proxy.jsonrpc_proxy import JsonRpcClientProtocol
from quorum_proxy.jsonrpc_relay import COUNTED_FROM, HOLD_5XX

LIMITS = SimpleNamespace(
    max_header_bytes=8192, max_uri_bytes=4096, max_retry_body_bytes=1 << 20, keepalive_requests=2
)


class Recording(JsonRpcClientProtocol):
    """Records what the lane hands to the Python path."""

    __slots__ = ("seen",)

    def _relay(self, data: bytes) -> bool:
        self.seen.append("_relay")
        return False

    def _received(self, data: bytes) -> None:
        self.seen.append("_received")


class Redeclared(JsonRpcClientProtocol):
    """The same attributes at other offsets (a subclass declaring them again)."""

    __slots__ = ("active", "backlog", "partial", "queue", "relay_conn", "ws_req")


def idle(cls: type[JsonRpcClientProtocol]) -> JsonRpcClientProtocol:
    """A connection as idle as the gate wants it, past keepalive_requests: the lane declines
    its reads and hands them to _relay."""
    proto = cls.__new__(cls)
    proto.limits = LIMITS  # type: ignore[assignment]
    proto.relay_conn = proto.ws_req = proto.active = None
    proto.backlog = []
    proto.partial = proto.closed = proto.last_request = False
    proto.queue = []  # type: ignore[assignment]
    proto.requests = 10
    return proto


def lane_for(proto: object) -> relay_scan._relay_scan.Lane:
    lane = relay_scan.Lane
    assert lane is not None, "run proxy_image/build_relay_scan.py (./dev test does)"
    return lane(proto, PLAIN_READS, ONE_SAFE, HOLD_5XX, COUNTED_FROM, MAX_DEPTH)


def recording() -> Recording:
    proto = idle(Recording)
    assert isinstance(proto, Recording)
    proto.seen = []
    return proto


def test_an_idle_connection_past_its_requests_goes_to_relay_then_received() -> None:
    proto = recording()
    lane_for(proto)(b"x")
    assert proto.seen == ["_relay", "_received"]


def test_a_lane_refused_for_another_class_leaves_other_lanes_as_they_were() -> None:
    proto = recording()
    read = lane_for(proto)

    class Partial:
        __slots__ = ("relay_conn",)

    with pytest.raises(AttributeError, match="backlog"):
        lane_for(Partial())
    read(b"x")
    assert proto.seen == ["_relay", "_received"]


def test_a_lane_for_a_class_with_other_offsets_leaves_other_lanes_as_they_were() -> None:
    proto = recording()
    read = lane_for(proto)
    lane_for(idle(Redeclared))
    read(b"x")  # read at Redeclared's offsets, this would be past the end of proto
    assert proto.seen == ["_relay", "_received"]
