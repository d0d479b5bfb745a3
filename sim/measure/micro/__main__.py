"""``python -m sim.measure.micro``: run device campaign 1 (see README.md)."""

import sys

from sim.measure.micro.campaign import main

sys.exit(main())
