"""``python -m gpu_models.micro``: run device campaign 1 (see README.md)."""

import sys

from gpu_models.micro.campaign import main

sys.exit(main())
