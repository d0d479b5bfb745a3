"""``python -m sim`` runs the gpusim command line."""

import sys

from sim.cli import main

sys.exit(main())
