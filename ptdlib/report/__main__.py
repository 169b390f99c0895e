import sys

from ptdlib.report import main

sys.exit(main())
