"""The relay's compiled scans (_relay_scan.c), or None for each when the module is not built.

Each says "not known" outside the common case and the caller then decides as it would without
them, so the proxy behaves the same either way, only slower without (bench/rpc_inprocess.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import _relay_scan

plain_request: Callable[[bytes, int, int, int], int] | None
plain_answer: Callable[[bytes], int] | None
one_call_method: Callable[[bytes, int], str | None] | None
Lane: type[_relay_scan.Lane] | None
try:
    from ._relay_scan import Lane, one_call_method, plain_answer, plain_request
except ImportError:  # not built: proxy_image/build_relay_scan.py
    plain_request = plain_answer = one_call_method = Lane = None

COMPILED = plain_request is not None
