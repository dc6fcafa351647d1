from typing import Any

def plain_request(
    data: bytes, max_header_bytes: int, max_uri_bytes: int, max_body_bytes: int, /
) -> int: ...
def plain_answer(data: bytes, /) -> int: ...
def one_call_method(body: bytes, max_depth: int, /) -> str | None: ...

class Lane:
    def __init__(
        self,
        proto: Any,
        plain_reads: frozenset[str],
        one_safe: tuple[str, ...],
        hold: frozenset[int],
        counted_from: int,
        max_depth: int,
        /,
    ) -> None: ...
    def __call__(self, data: bytes, /) -> bool: ...
    def answer(self, data: bytes, /) -> None: ...
