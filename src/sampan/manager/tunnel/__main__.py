"""``python -m sampan.manager.tunnel``: the cluster agent's entry point (see ``agent.main``)."""

import sys

from sampan.manager.tunnel.agent import main

sys.exit(main())
