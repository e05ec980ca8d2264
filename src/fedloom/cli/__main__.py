"""``python -m fedloom.cli``: the ``fedloom`` command without the console script."""

import sys

from fedloom.cli import main

sys.exit(main())
