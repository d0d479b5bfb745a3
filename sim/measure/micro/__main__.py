"""``python -m sim.measure.micro``: the device campaign (see README.md)."""

import sys

from sim.measure.micro.campaign import main

sys.exit(main())
