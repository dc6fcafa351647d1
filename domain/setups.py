"""The seed's three setups and the machine roles each runs: the one home of which role runs what.

- pair (setup 1): N machines, each a Quorum + Tessera pair joined by the local tm.ipc.
- full (setup 2): N Quorum machines and M Tessera machines; an IPC proxy on each Quorum
  machine balances Q2T over every Tessera.
- tessera (setup 3): one Quorum machine (with that IPC proxy) and M Tessera machines.
"""

from __future__ import annotations

from typing import Literal

Setup = Literal["pair", "full", "tessera"]
MachineRole = Literal["pair", "quorum", "tessera"]

SETUPS: tuple[Setup, ...] = ("pair", "full", "tessera")
ROLES_BY_SETUP: dict[str, tuple[MachineRole, ...]] = {
    "pair": ("pair",),
    "full": ("quorum", "tessera"),
    "tessera": ("quorum", "tessera"),
}
# The smallest high-available shape of each setup, (Quorum machines, Tessera machines).
SMALLEST_HA: dict[str, tuple[int, int]] = {"pair": (2, 2), "full": (2, 2), "tessera": (1, 2)}


def runs_quorum(role: str) -> bool:
    return role in ("pair", "quorum")


def runs_tessera(role: str) -> bool:
    return role in ("pair", "tessera")


def runs_ipc_proxy(role: str) -> bool:
    """Quorum machines of setups 2 and 3 reach Tessera through a local proxy on tm.ipc."""
    return role == "quorum"
