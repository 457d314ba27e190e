"""``stem-explorer`` (its real ``main``) with one more reader, ``slowraw``: raw frames
read with a pause of ``STEM_TEST_TILE_DELAY`` seconds per tile (the slow source of
``test_session``, which travels to the workers by value), so that a job lasts long
enough for a test to act on it mid-way (kill the command, a worker, the scheduler).
Run as ``python slow_cli.py run DATA --format slowraw ...``."""

import os
import sys

import numpy as np

from stem_explorer.cli import main
from stem_explorer.io import DataSet
from stem_explorer.io.registry import ReaderPlugin, register_reader
from test_session import SlowSource


def open_slow(path, *, nav_shape, sig_shape, dtype, **_options):
    source = SlowSource(path, offset=0, n_frames=int(np.prod(nav_shape)), sig_shape=sig_shape, dtype=dtype)
    source.delay = float(os.environ.get("STEM_TEST_TILE_DELAY", "0.05"))
    return DataSet(source, nav_shape, format="slowraw", path=str(path))


register_reader(ReaderPlugin("slowraw", open_slow, description="raw frames, slowly (tests)"))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
