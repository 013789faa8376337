"""``python -m outpaint_engine.worker``: the same as ``outpaint-worker``."""

import sys

from outpaint_engine.worker.cli import main

sys.exit(main())
