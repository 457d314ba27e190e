"""The one object a notebook holds: a data set, a dask client and the current job."""

from __future__ import annotations

import threading
from typing import Callable, Optional

import numpy as np

from .analyses import PickFrame, build_plan
from .engine import Job, Progress, preview, warmup
from .engine.live_job import job_class
from .engine.cluster import connect, n_workers_of, start_local_cluster
from .errors import ClusterError
from .io import DataSet, open_dataset


class Session:
    """A data set on a dask cluster; runs analyses as streaming jobs.

    With neither ``client`` nor ``address`` an embedded ``distributed.LocalCluster``
    starts (one single-threaded worker process per core, dashboard on 127.0.0.1) and
    stops with the session. With ``address="tcp://..."`` or an existing ``Client`` the
    session uses that cluster and leaves it running.

    Use it as a context manager::

        with Session("scan.h5") as s:
            bf = s.run(VirtualDetector(Disk(64, 64, 10))).result()["vd/mask0"]
    """

    def __init__(
        self,
        dataset,
        *,
        client=None,
        address: Optional[str] = None,
        n_workers: Optional[int] = None,
        timeout: float = 10.0,
        partition_bytes: Optional[int] = None,
        tile_bytes: Optional[int] = None,
        kernel: str = "auto",
        **open_options,
    ):
        if client is not None and address is not None:
            raise ClusterError("pass either client= or address=, not both")
        self.dataset: DataSet = dataset if isinstance(dataset, DataSet) else open_dataset(dataset, **open_options)
        self.partition_bytes = partition_bytes
        self.tile_bytes = tile_bytes
        self.kernel = kernel
        ds = self.dataset
        # jobs compute their coarse preview in this process once its kernels are warm
        # for the dtype (Job._preview_here): warm them when a job ends (at the start
        # the warm-up slowed the cluster's start by 0.2 s)
        self._warm_here = ds.random_access_here and preview.auto_stride(ds.nav_shape, ds.frame_bytes) > 1
        self._cluster = None
        self._owns_client = client is None
        if client is not None:
            self.client = client
        elif address is not None:
            self.client = connect(address, timeout)
        else:
            from distributed import Client

            self._cluster = start_local_cluster(n_workers)
            self.client = Client(self._cluster, timeout=timeout)
        self._lock = threading.Lock()
        self._current: Optional[Job] = None

    # -- running analyses ------------------------------------------------------------------
    def run(
        self,
        *analyses,
        supersede: bool = False,
        on_partial: Optional[Callable[[Progress], None]] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
        kernel: Optional[str] = None,
        preview_stride: Optional[int] = None,
    ) -> Job:
        """Start a job computing ``analyses`` in one pass; returns the :class:`Job` at once.

        This call only plans (bad analyses raise here); the job's thread submits the
        tasks, and what goes wrong from then on (the data, the cluster) is the job's
        error, raised by ``job.result()``.

        ``job.result()`` blocks for the final :class:`~stem_explorer.results.Results`;
        iterating the job yields :class:`Progress` snapshots as partitions finish.
        With ``supersede=True`` the session's previous job is cancelled first, so no
        partial result of it is delivered after this job's first one.

        Large data sets get a coarse preview first: the per-frame analyses run on every
        ``preview_stride``-th scan row and column before the rest (sized automatically
        when None; 1 turns it off); ``Progress.fill_preview(image)`` shows it as a full
        field. ``kernel`` overrides the session's mask-product path for this job: 'auto'
        (the cost model), or 'spans', 'columns', 'sparse' or 'dense' (see
        :class:`~stem_explorer.engine.ops.MaskProduct`).
        """
        plan, finalize = build_plan(
            analyses, self.dataset, kernel=kernel or self.kernel, tile_bytes=self.tile_bytes
        )
        with self._lock:
            if supersede and self._current is not None:
                self._current.cancel()
            job = job_class(self.dataset)(
                self.client,
                self.dataset,
                plan,
                finalize,
                n_workers=self.n_workers,
                partition_bytes=self.partition_bytes,
                preview_stride=preview_stride,
                on_partial=on_partial,
                on_progress=on_progress,
            )
            self._current = job
        if self._warm_here and not warmup.is_warm(self.dataset.dtype):
            self._warm_when_done(job)
        return job

    def _warm_when_done(self, job: Job) -> None:
        def warm(_progress=None) -> None:
            warmup.warm_up_in_background([self.dataset.dtype], partitions=False)

        job.add_callback(lambda progress: progress.final and warm(), results=False)
        if job.done:  # it ended before the callback was in place
            warm()

    def compute(self, *analyses, **kwargs):
        """Run and wait: the final results of ``analyses``."""
        return self.run(*analyses, **kwargs).result()

    def pick_frame(self, position) -> np.ndarray:
        """The frame at one scan position, read on the cluster."""
        return self.compute(PickFrame(position))["pick/frames"].data[0]

    @property
    def current_job(self) -> Optional[Job]:
        return self._current

    # -- cluster ---------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        return n_workers_of(self.client)

    @property
    def dashboard_link(self) -> Optional[str]:
        """URL of the dask dashboard, when the scheduler serves one."""
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard (bokeh missing) or scheduler gone
            return None

    def close(self) -> None:
        """Cancel the running job; stop the embedded cluster if the session owns it."""
        if self._current is not None:
            self._current.cancel()
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.dataset!r} on {self.client.scheduler.address if self.client.scheduler else '?'}>"
