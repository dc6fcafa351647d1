"""The ports the whole project agrees on (the seed and docs/domain.md): the one home of each.

The machines, the security groups, the NLB listeners, the proxy's configs and the alarms all
read them from here.
"""

from __future__ import annotations

QUORUM_RPC_PORT = 22000  # the seed's client-facing JSON-RPC port, on the NLB and on each node
QUORUM_WS_PORT = 8546
QUORUM_P2P_PORT = 30303
QUORUM_METRICS_PORT = 6060  # geth's own default; /debug/metrics/prometheus, bound to 127.0.0.1
TESSERA_P2P_PORT = 9001
TESSERA_THIRD_PARTY_PORT = 9081
TESSERA_Q2T_PORT = 9101  # Q2T over HTTP, for the IPC proxy on Quorum machines (setups 2 and 3)
PROXY_ADMIN_PORT = 9900  # /healthz, /readyz, /metrics of our proxy
DB_PORT = 5432  # the Tessera database (PostgreSQL's default, which RDS keeps)

# The NLB's listeners, each fronting the proxy listener of the same name and port.
LISTENERS: dict[str, int] = {
    "rpc": QUORUM_RPC_PORT,
    "third-party": TESSERA_THIRD_PARTY_PORT,
    "p2p": TESSERA_P2P_PORT,
}
NLB_PORTS = tuple(LISTENERS.values())
# The standalone proxy's listener behind each NLB listener (its readiness is /readyz/<name>).
PROXY_LISTENER_NAMES: dict[str, str] = {
    "rpc": "quorum-rpc",
    "third-party": "third-party",
    "p2p": "p2p",
}
