"""`python -m tools.export`: see `tools/export/cli.py`."""

import sys

from tools.export.cli import main

sys.exit(main())
