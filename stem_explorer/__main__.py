"""``python -m stem_explorer`` is the ``stem-explorer`` command."""

import sys

from .cli import main

sys.exit(main())
