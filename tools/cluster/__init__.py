"""The cluster drill: real PostgreSQL, a Secrets Manager in moto's server mode, our proxy and
the configs node_bootstrap renders, run on 127.0.0.1 (docs/cluster.md)."""
