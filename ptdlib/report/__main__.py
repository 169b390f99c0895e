import sys

from ptdlib.cli.report import main

sys.exit(main())
