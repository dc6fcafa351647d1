"""The tests' own helpers (proxy_support.py, conftest.py) where a flaw would make tests flaky."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest


def test_a_refused_address_refuses_connections_and_keeps_its_port(
    refused_address: Callable[[], str],
) -> None:
    # A dead server's port taken from free_port() is free again at once: a listener bound to
    # port 0 later (the proxy's own) may be given it, and the "dead" server then answers.
    host, port = refused_address().rsplit(":", 1)
    with socket.socket() as other, pytest.raises(OSError) as taken:
        other.bind((host, int(port)))
    assert taken.value.errno == errno.EADDRINUSE
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.settimeout(5)
        client.connect((host, int(port)))
