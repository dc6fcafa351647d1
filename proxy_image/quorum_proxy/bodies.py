"""Request bodies kept in memory for a retry or a mirror: one bound over all of them, and the
memory they held given back to the OS once they are gone.

At the bound the largest unfinished body is refused (503), not the byte that arrived last: a
few slow senders of big bodies hold most of the bytes, while a legitimate small body arrives
whole and fits (see proxy_image/README.md, "Bounded under abuse").
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Protocol

# malloc_trim at most this often, and only after this much was released since the last one
TRIM_INTERVAL = 1.0
TRIM_AFTER_BYTES = 4 << 20


class BodyHolder(Protocol):
    """A client connection reading a body it keeps: how much it holds, and how to refuse it."""

    def held_body_bytes(self) -> int: ...

    def refuse_body(self) -> None: ...


def _libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0) (the image is python slim bookworm: glibc); None elsewhere.

    CPython hands blocks over 512 bytes to malloc; glibc keeps freed heap memory unless asked
    (man 3 malloc_trim: since glibc 2.8 it releases free pages in every arena, not only the top).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class BodyBudget:
    """Bytes of request bodies this process keeps, against limits.max_buffered_body_bytes."""

    def __init__(self, limit: int, trim: Callable[[], object] | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.holders: set[BodyHolder] = set()
        self.released = 0
        self.last_trim = 0.0
        self.trim = trim if trim is not None else _libc_malloc_trim()

    def add(self, holder: BodyHolder, size: int) -> None:
        """holder keeps size more bytes; past the bound, the largest holders are refused."""
        self.holders.add(holder)
        self.keep(size)

    def keep(self, size: int) -> None:
        """size bytes of a body read whole are kept while it is served: counted, never refused
        themselves; past the bound, unfinished bodies are."""
        self.total += size
        while self.total > self.limit and self.holders:
            victim = max(self.holders, key=lambda h: h.held_body_bytes())
            victim.refuse_body()
            self.holders.discard(victim)  # refused, or holding nothing: no longer a candidate

    def give_back(self, size: int) -> None:
        """What keep() counted is gone."""
        self.total -= size
        self.released += size

    def release(self, holder: BodyHolder, size: int) -> None:
        """holder's body is gone (answered, refused, or its connection closed)."""
        self.holders.discard(holder)
        self.give_back(size)

    def done_reading(self, holder: BodyHolder) -> None:
        """holder's body is whole: it is being served, no longer a candidate for refusal."""
        self.holders.discard(holder)

    def maybe_trim(self, now: float) -> None:
        """Called by the sweeper: give freed memory back after large releases, rate-limited."""
        if self.trim is None or self.released < TRIM_AFTER_BYTES:
            return
        if now - self.last_trim < TRIM_INTERVAL:
            return
        self.released = 0
        self.last_trim = now
        self.trim()
