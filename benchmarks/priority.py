"""Workers of the embedded cluster back at normal CPU priority, for benchmarks.

The embedded cluster's workers lower their own priority (``nice`` 19 in a scheduling
group of their own, :mod:`stem_explorer.engine.worker_setup`) to keep cores for the
notebook; on a machine that other processes keep busy that starves them, and a
benchmark then measures the machine's load. Raising a priority back needs root (or
``CAP_SYS_NICE``): without it the workers stay low and the records say so.
"""

from __future__ import annotations

import os


def _normal_priority() -> bool:
    """On a worker: nice 0 and its scheduling group at 0; whether both took."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        return False
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write("0")
    except FileNotFoundError:  # no autogroups here: the nice value is all there is
        pass
    except OSError:
        return False
    return True


def normal_priority(client) -> bool:
    """Put every worker of ``client`` back at normal priority; whether all of them are."""
    return all(client.run(_normal_priority).values())
