"""``python -m benchmarks`` (from the repository root): run the benchmark suite."""

import sys

from .runner import main

sys.exit(main())
