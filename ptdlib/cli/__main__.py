"""``python -m ptdlib.cli <command> ...``: the same as ``ptd <command> ...``."""

import sys

from ptdlib.cli import main

sys.exit(main())
