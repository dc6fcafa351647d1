"""`python -m quorum_proxy --config FILE` (the image's ENTRYPOINT)."""

from quorum_proxy.main import main

raise SystemExit(main())
