"""Set-up of embedded LocalCluster workers, loaded as their dask preload.

Two things, once per worker process:

* the lowest CPU priority (``nice`` +:data:`WORKER_NICENESS`, in a scheduling group of
  its own where Linux groups by session). The workers keep every core busy while a job
  runs; on the same cores sit the process that submits jobs and merges their results
  (with the embedded scheduler), and in a notebook the kernel, the Jupyter server and
  the browser. Chromium's renderer waited up to 40 ms for a core while it had 1 ms of
  work to do; mouse-up to image went from 81-98 ms (medians of 15) to 64-67 ms. When
  nothing else wants the cores the workers get all of them, so throughput does not
  change (measured);
* the kernels' warm-up in a daemon thread (:func:`.warmup.warm_up_in_background`), so
  the worker is ready at once and a task that arrives meanwhile waits only for what
  is left.
"""

from __future__ import annotations

import os

from .warmup import warm_up_in_background

#: How much lower than its parent's priority an embedded worker runs (``os.nice``;
#: capped at 19, the lowest).
WORKER_NICENESS = 19


def dask_setup(worker) -> None:  # the dask preload hook
    try:
        os.nice(WORKER_NICENESS)
    except OSError:  # not permitted here: run at the default priority
        pass
    _own_autogroup()
    warm_up_in_background()


def _own_autogroup() -> None:
    """Put this worker in a scheduling group of its own, at the same low priority.

    Where Linux groups processes by session for fair shares of the CPU (autogroup,
    ``/proc/sys/kernel/sched_autogroup_enabled``), a nice value only ranks a process
    within its session: the workers sat in the session of the process that started
    them (the notebook kernel), and that group as a whole took an equal share against
    the browser's. A new session (the worker still exits with its parent: dask watches
    the parent's pipe) and its group's nice value fix that. Nothing happens where
    there are no autogroups.
    """
    try:
        os.setsid()
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(WORKER_NICENESS))
    except OSError:  # already a session leader, no autogroups, or not permitted
        pass
