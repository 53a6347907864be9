"""``python -m b2s_bench`` is the same as ``b2s-bench``."""

import sys

from .cli.main import main

sys.exit(main())
