"""`python -m tools.cluster [writes]`: the cluster drill (docs/cluster.md)."""

from tools.cluster.drill import main

raise SystemExit(main())
