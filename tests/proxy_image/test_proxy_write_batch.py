"""WriteBatch (proxy_image/quorum_proxy/upstream.py): gathered writes and write_now's order."""

from __future__ import annotations

import asyncio

import pytest
from quorum_proxy.upstream import WriteBatch


class Recorder(asyncio.Transport):
    """Records writes in one list shared by every Recorder, to see their order."""

    def __init__(self, name: str, log: list[tuple[str, bytes]], closing: bool = False) -> None:
        super().__init__()
        self.name = name
        self.log = log
        self.closing = closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append((self.name, bytes(data)))

    def is_closing(self) -> bool:
        return self.closing


@pytest.mark.parametrize(
    ("waiting", "closing", "at_once", "after_flush"),
    [
        # nothing waits: written at once
        (False, False, [("a", b"now")], [("a", b"now")]),
        # an earlier write waits in the batch: this one goes after it, at the flush
        (True, False, [], [("b", b"earlier"), ("a", b"now")]),
        # the transport closes: dropped, as flush drops what waits for a closing transport
        (False, True, [], []),
    ],
)
def test_write_now_writes_at_once_unless_earlier_writes_wait_or_the_transport_closes(
    waiting: bool,
    closing: bool,
    at_once: list[tuple[str, bytes]],
    after_flush: list[tuple[str, bytes]],
) -> None:
    async def run() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        log: list[tuple[str, bytes]] = []
        batch = WriteBatch()
        if waiting:
            batch.write(Recorder("b", log), b"earlier")
        batch.write_now(Recorder("a", log, closing), b"now")
        seen = list(log)
        await asyncio.sleep(0)  # the loop turns: the batch is flushed
        return seen, log

    seen, log = asyncio.run(run())
    assert seen == at_once
    assert log == after_flush
