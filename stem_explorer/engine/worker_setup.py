"""Set-up of embedded LocalCluster workers, loaded as their dask preload.

Two things, once per worker process:

* a lower CPU priority (``nice`` +:data:`WORKER_NICENESS`). The workers keep every
  core busy while a job runs; on the same cores sit the process that submits jobs and
  merges their results (with the embedded scheduler), and in a notebook the kernel,
  the Jupyter server and the browser, which at equal priority wait for time slices
  while a job runs (mouse-up to image in Chromium, medians: 133 ms before, 117 and
  131 ms niced; within the runs' spread). When nothing else wants the cores the workers
  get all of them, so throughput does not change (measured);
* the kernels' warm-up in a daemon thread (:func:`.warmup.warm_up_in_background`), so
  the worker is ready at once and a task that arrives meanwhile waits only for what
  is left.
"""

from __future__ import annotations

import os

from .warmup import warm_up_in_background

#: How much lower than its parent's priority an embedded worker runs (``os.nice``).
WORKER_NICENESS = 10


def dask_setup(worker) -> None:  # the dask preload hook
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # not permitted here: run at the default priority
        pass
    warm_up_in_background()
