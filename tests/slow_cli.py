"""``stem-explorer`` (its real ``main``) with one more reader, ``slowraw``: raw frames
read with a pause of ``STEM_TEST_TILE_DELAY`` seconds per tile, so that a job lasts
long enough for a test to act on it mid-way (kill the command, a worker, the
scheduler). Run as ``python slow_cli.py run DATA --format slowraw ...``; the source
class is defined in ``__main__`` and so travels to the workers by value."""

import os
import sys
import time

import numpy as np

from stem_explorer.cli import main
from stem_explorer.io import DataSet, FrameReader
from stem_explorer.io.raw import MappedFrameSource
from stem_explorer.io.registry import ReaderPlugin, register_reader


class SlowReader(FrameReader):
    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def read(self, start, stop):
        time.sleep(self.delay)
        return self.inner.read(start, stop)

    def close(self):
        self.inner.close()


class SlowSource(MappedFrameSource):
    delay = float(os.environ.get("STEM_TEST_TILE_DELAY", "0.05"))

    def open(self, payload=None):
        return SlowReader(super().open(payload), self.delay)


def open_slow(path, *, nav_shape, sig_shape, dtype, **_options):
    n_frames = int(np.prod(nav_shape))
    source = SlowSource(path, offset=0, n_frames=n_frames, sig_shape=sig_shape, dtype=dtype)
    return DataSet(source, nav_shape, format="slowraw", path=str(path))


register_reader(ReaderPlugin("slowraw", open_slow, description="raw frames, slowly (tests)"))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
