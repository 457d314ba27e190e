"""Binder without Docker (tests/binder_fixtures.py): an environment built exactly from
binder/ (requirements.txt, postBuild, start) as repo2docker builds it, the notebooks
run there on one core (so one embedded worker) in a 2 GiB memory cgroup (the kernel
kills what exceeds it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest

from binder_fixtures import BINDER, MEMORY_LIMIT, NOTEBOOKS, ROOT
from cgroup_fixtures import needs_mounts

#: What each notebook prints when it worked.
EXPECTED = {
    "explorer.ipynb": "session.compute(",
    "quickstart.ipynb": "CoM error vs the known beam shift",
    "custom_masks.ipynb": "virtual images equal the numpy reference",
}

@needs_mounts
def test_embedded_cluster_takes_one_worker_per_core_of_the_cpu_quota():
    """A container's CPU quota (Binder's one core) leaves the affinity at all the host's
    cores: the default worker count follows the quota. The cgroup files a container
    sees are mounted in a private mount namespace."""
    quota = (
        'mount -t tmpfs tmpfs /sys/fs/cgroup; mkdir "/sys/fs/cgroup/cpu,cpuacct"; cd "/sys/fs/cgroup/cpu,cpuacct"; '
        'echo 100000 > cpu.cfs_quota_us; echo 100000 > cpu.cfs_period_us; exec "$@"'
    )
    probe = "import os; from stem_explorer.engine.cluster import default_n_workers as n; print(len(os.sched_getaffinity(0)), n())"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", quota, "sh",
                           sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    affinity, workers = map(int, done.stdout.split())
    assert workers == 1, f"{workers} workers for a quota of one core (affinity: {affinity} cores)"


def test_binder_files_follow_repo2docker_conventions():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!/usr/bin/env bash"), script
    assert 'exec "$@"' in (BINDER / "start").read_text()  # start must hand over to the server
    # the README's launch link (its form until the repository is published) opens the explorer notebook
    launch = re.search(r"`https://mybinder\.org/v2/gh/<owner>/<repository>/HEAD\?urlpath=lab/tree/(\S+?)`",
                       (ROOT / "README.md").read_text())
    assert launch and launch.group(1) == "notebooks/explorer.ipynb" and (ROOT / launch.group(1)).is_file()


@pytest.mark.slow
@pytest.mark.cluster
def test_binder_environment_runs_the_notebooks_within_its_limits(binder, binder_notebooks):
    """Each notebook, launched through binder/start, on one core and within 2 GiB: no
    error, the result each prints, one worker for the explorer."""
    printed = {}
    for name in NOTEBOOKS:
        outputs = [o for c in nbformat.read(binder_notebooks[name], as_version=4).cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        printed[name] = "".join(o.get("text", "") for o in outputs)
        assert EXPECTED[name] in printed[name], name
    assert "workers: 1\n" in printed["explorer.ipynb"]
    assert (binder.repo / "sample_data" / "sample_64x64x128x128.h5").is_file()  # postBuild's sample, opened via start
    peak = binder_notebooks["peak"]
    if peak is None:
        pytest.skip("ran on one core; no memory cgroup here (needs root and cgroup v1), so no memory limit")
    print(f"peak memory: postBuild {binder.postbuild_peak / 2**20:.0f} MiB, notebooks {peak / 2**20:.0f} MiB")
    assert peak < MEMORY_LIMIT
