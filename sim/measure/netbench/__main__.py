"""``python -m sim.measure.netbench``: run device campaign 2 (see :mod:`.campaign`)."""

import sys

from sim.measure.netbench.campaign import run

sys.exit(run())
