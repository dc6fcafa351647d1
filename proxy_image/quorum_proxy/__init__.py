"""quorum-ha's HA proxy: TCP and HTTP listeners in front of Quorum and Tessera servers."""
