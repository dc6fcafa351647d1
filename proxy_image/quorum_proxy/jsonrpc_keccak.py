"""Keccak-256 as Ethereum uses it (the original Keccak padding, not FIPS 202 SHA3-256).

Pure Python, for the transaction hash of an `eth_sendRawTransaction` the proxy repeated (a few
per failover, never per request): no compiled dependency in the image for it. hashlib's
sha3_256 pads with 0x06 and gives other digests; Keccak pads with 0x01 (Keccak reference,
"The Keccak SHA-3 submission" 3.0, section 1.1, pad10*1 with suffix 0x01).
"""

from __future__ import annotations

_MASK = (1 << 64) - 1
_RATE = 136  # bytes: 1600-bit state, capacity 512 for a 256-bit digest


def _round_constants() -> tuple[int, ...]:
    """The 24 iota constants from the spec's LFSR rc(t) (FIPS 202 algorithm 5)."""
    r = 1
    bits = []
    for _ in range(24 * 7):
        bits.append(r & 1)
        r = ((r << 1) ^ 0x171) if r & 0x80 else r << 1
    constants = []
    for i in range(24):
        rc = 0
        for j in range(7):
            if bits[7 * i + j]:
                rc |= 1 << ((1 << j) - 1)
        constants.append(rc)
    return tuple(constants)


def _rotations() -> list[list[int]]:
    """rho offsets per lane [x][y] (FIPS 202 algorithm 2)."""
    offsets = [[0] * 5 for _ in range(5)]
    x, y = 1, 0
    for t in range(24):
        offsets[x][y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5
    return offsets


_RC = _round_constants()
_ROT = _rotations()


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK if shift else value


def _permute(lanes: list[list[int]]) -> None:
    """Keccak-f[1600] on lanes[x][y], in place."""
    for rc in _RC:
        c = [lanes[x][0] ^ lanes[x][1] ^ lanes[x][2] ^ lanes[x][3] ^ lanes[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rotl(c[(x + 1) % 5], 1) for x in range(5)]
        for x in range(5):
            for y in range(5):
                lanes[x][y] ^= d[x]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rotl(lanes[x][y], _ROT[x][y])
        for x in range(5):
            for y in range(5):
                lanes[x][y] = b[x][y] ^ ((~b[(x + 1) % 5][y]) & b[(x + 2) % 5][y])
        lanes[0][0] ^= rc


def keccak256(data: bytes) -> bytes:
    """The 32-byte Keccak-256 digest of data."""
    padded = bytearray(data)
    padded.append(0x01)
    padded.extend(b"\x00" * (-len(padded) % _RATE))
    padded[-1] |= 0x80
    lanes = [[0] * 5 for _ in range(5)]
    for start in range(0, len(padded), _RATE):
        block = padded[start : start + _RATE]
        for i in range(_RATE // 8):
            lanes[i % 5][i // 5] ^= int.from_bytes(block[8 * i : 8 * i + 8], "little")
        _permute(lanes)
    return b"".join(lanes[i % 5][i // 5].to_bytes(8, "little") for i in range(4))
