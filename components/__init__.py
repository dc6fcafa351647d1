"""The client node's AWS components: one module per AWS concept, one per seed setup."""
