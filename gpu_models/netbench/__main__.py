"""``python -m gpu_models.netbench``: run device campaign 2 (see :mod:`.campaign`)."""

import sys

from gpu_models.netbench.campaign import run

sys.exit(run())
