"""GoQuorum's files for one machine: genesis, static/permissioned nodes and the start script."""

from __future__ import annotations

import json

from node_bootstrap.context import BootContextError, NodeBootContext, validate_context
from node_bootstrap.scripts import START_QUORUM_SH, WAIT_FOR_PTM_SH


def quorum_nodes(ctx: NodeBootContext) -> list[str]:
    """This client node's own enodes first (both HA nodes), then the network's; each once."""
    return list(dict.fromkeys((*ctx.ha_enodes, *ctx.peer_enodes)))


def render_quorum_files(ctx: NodeBootContext) -> dict[str, str]:
    """File name -> content for a pair or quorum machine.

    genesis.json, static-nodes.json, permissioned-nodes.json (when ctx.permissioned),
    start-quorum.sh (fetches secrets, waits for tm.ipc, runs geth) and wait-for-ptm.sh.
    """
    validate_context(ctx)
    if not ctx.runs_quorum:
        raise BootContextError("role", ctx.role, "pair | quorum (GoQuorum runs there)")
    genesis = json.loads(ctx.genesis_json)
    nodes = json.dumps(quorum_nodes(ctx), indent=2) + "\n"
    files = {
        "genesis.json": json.dumps(genesis, indent=2) + "\n",
        "static-nodes.json": nodes,
        "start-quorum.sh": START_QUORUM_SH,
        "wait-for-ptm.sh": WAIT_FOR_PTM_SH,
    }
    if ctx.permissioned:
        files["permissioned-nodes.json"] = nodes
    return files
