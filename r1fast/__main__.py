"""``python -m r1fast``: see r1fast.cli."""

import sys

from r1fast.cli import main

sys.exit(main())
