"""`python -m qwick ...`: the same as the `qwick` command."""

import sys

from qwick.cli import main

sys.exit(main())
