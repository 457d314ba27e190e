"""The one object a notebook holds: a data set, a dask client and the current job."""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Optional

import numpy as np

from .analyses import PickFrame, build_plan
from .analyses.scan_roi import roi_to_frames
from .engine import Job, Progress, preview, warmup
from .engine.checkpoint import DEFAULT_EVERY, Checkpoint
from ._options import seconds, whole_number
from .engine.cluster import check_n_workers, connect, n_workers_of, start_local_cluster
from .engine.failures import check_client
from .engine.gateway import start_gateway_cluster
from .engine.hooks import as_hooks, merge
from .engine.live_job import job_class
from .engine.reduced_copy import LiveCopy, ReducedCopy, default_budget, plan_copy, plan_live_copy
from .engine.roi import plan_frames
from .errors import AnalysisError, CheckpointError, ClusterError, OptionError
from .io import DataSet, open_dataset
from .io.live import LiveDataSet

#: Upper bounds of the session's options: beyond them a value is a mistake (a day's
#: wait, a partition larger than any file, a tile that would not fit in memory).
MAX_TIMEOUT = 86400.0
MAX_PARTITION_BYTES = 2**50
MAX_TILE_BYTES = 2**30
MAX_REDUCED_COPY_BYTES = 2**50


class Session:
    """A data set on a dask cluster; runs analyses as streaming jobs.

    With neither ``client`` nor ``address`` an embedded cluster starts (one
    single-threaded worker process per core, on 127.0.0.1, TLS with a certificate of
    its own so no other user can connect; see
    :func:`~stem_explorer.engine.cluster.start_local_cluster`) and stops with the
    session. With ``address="tcp://..."`` or an existing ``Client`` the session uses
    that cluster and leaves it running. With ``cluster="gateway"`` the session asks
    the site's dask-gateway for a cluster of the user's own (``n_workers`` workers of
    ``worker_memory`` GiB; see :func:`~stem_explorer.engine.gateway.start_gateway_cluster`)
    and shuts it down with the session.

    Parameters
    ----------
    dataset : str, path or DataSet
        What to open (``open_options`` go to :func:`~stem_explorer.io.open_dataset`).
    client : distributed.Client, optional
        A client of a cluster to use.
    address : str, optional
        The scheduler address of a cluster to connect to.
    cluster : str, optional
        ``"gateway"``: a new cluster from the dask-gateway that dask's configuration
        names (``gateway.address``); needs the ``[gateway]`` extra.
    n_workers : int, optional
        Worker processes of the embedded cluster (default: one per core; at most 4
        per core), or workers asked of the gateway (default 1).
    worker_memory : float, optional
        GiB per gateway worker, where the gateway offers that option.
    timeout : float
        Seconds to wait for the scheduler at ``address``, or for the gateway and its
        first worker (up to a day).
    partition_bytes : int, optional
        Data per partition (one task each), in bytes; default: sized by the reader.
    tile_bytes : int, optional
        Data a worker reads and holds at once, in bytes (up to 1 GiB); default 32 MiB.
    kernel : str
        The mask-product path: 'auto', 'spans', 'columns', 'sparse' or 'dense'.
    dashboard : bool
        Serve the dask dashboard of the embedded cluster on 127.0.0.1 (off by default:
        it has no login, so any local user could read it).
    hooks : optional
        Event hooks of every job (anything :func:`~stem_explorer.engine.hooks.as_hooks`
        takes: callables, plugins, plugin names); the installed hook plugins are added.
    reduced_copy_bytes : int, optional
        Worker memory, in bytes and all workers together, for the reduced copy that
        jobs reading whole partitions leave in the workers and that later jobs preview
        from (:attr:`reduced_copy`, :mod:`stem_explorer.engine.reduced`); default 10%
        of the workers' memory limits, 0 turns it off. The copy also stays within
        32 MiB a worker, which its preview reads in tens of milliseconds
        (:data:`~stem_explorer.engine.reduced_copy.PREVIEW_BYTES_PER_WORKER`). A live
        acquisition recorded in this process keeps its copy here, within this budget
        and 256 MiB (:class:`~stem_explorer.engine.reduced_copy.LiveCopy`): a mask
        changed mid-scan previews the whole scan so far from it.

    Raises
    ------
    OptionError
        A count, size or time outside its range (the message says which and the fix).
    ClusterError
        The cluster cannot be started or reached.

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
        cluster: Optional[str] = None,
        n_workers: Optional[int] = None,
        worker_memory: Optional[float] = None,
        timeout: float = 10.0,
        partition_bytes: Optional[int] = None,
        tile_bytes: Optional[int] = None,
        kernel: str = "auto",
        dashboard: bool = False,
        hooks=None,
        reduced_copy_bytes: Optional[int] = None,
        **open_options,
    ):
        if cluster not in (None, "gateway"):
            raise OptionError(f'cluster must be "gateway" or None (an embedded cluster), got {cluster!r}')
        if cluster is None:
            check_cluster_options(client, address, n_workers, dashboard)
            if worker_memory is not None:
                raise OptionError('worker_memory is an option of cluster="gateway"; leave it out otherwise')
        elif client is not None or address is not None:
            raise ClusterError('pass either cluster="gateway" or client=/address=, not both')
        elif dashboard is not False:
            raise OptionError("dashboard is an option of the embedded cluster; a gateway's cluster always "
                              "has one, behind the gateway's proxy (session.dashboard_link)")
        timeout = seconds("timeout", timeout, MAX_TIMEOUT, "how long to wait for the scheduler")
        partition_bytes = _check_bytes("partition_bytes", partition_bytes, MAX_PARTITION_BYTES, "data per partition")
        tile_bytes = _check_bytes("tile_bytes", tile_bytes, MAX_TILE_BYTES, "data a worker reads and holds at once")
        if reduced_copy_bytes is not None:
            reduced_copy_bytes = whole_number("reduced_copy_bytes", reduced_copy_bytes, 0, MAX_REDUCED_COPY_BYTES,
                                              "bytes of worker memory for the reduced copy", "0 turns it off")
        #: the hooks every job of the session gets (those given and the installed plugins)
        self.hooks = as_hooks(hooks, installed=True)
        self.dataset: DataSet = dataset if isinstance(dataset, DataSet) else open_dataset(dataset, **open_options)
        self.partition_bytes = partition_bytes
        self.tile_bytes = tile_bytes
        self.kernel = kernel
        #: the :class:`~stem_explorer.analyses.Descan` every run applies unless it
        #: passes its own (None: no correction); the Explorer's descan control sets it
        self.descan = None
        ds = self.dataset
        # jobs compute their coarse preview in this process once its kernels are warm
        # for the dtype (Job._preview_here): warm them when a job ends (at the start
        # the warm-up slowed the cluster's start by 0.2 s)
        self._warm_here = ds.random_access_here and preview.auto_stride(ds.nav_shape, ds.frame_bytes) > 1
        self._dashboard = dashboard
        self._owns_client = client is None
        self._gateway = None
        if cluster == "gateway":
            self._gateway = start_gateway_cluster(n_workers, worker_memory, timeout=timeout)
            self.client, self._cluster = self._gateway.client, None
        else:
            self.client, self._cluster = open_client(client, address, n_workers, timeout, dashboard)
        #: the reduced copy jobs keep in the workers and preview from
        #: (:class:`~stem_explorer.engine.reduced_copy.ReducedCopy`; its ``status`` says
        #: what it holds, or why there is none)
        self.reduced_copy = self._plan_reduced_copy(reduced_copy_bytes)
        self._lock = threading.Lock()
        self._current: Optional[Job] = None
        self._jobs: "weakref.WeakSet[Job]" = weakref.WeakSet()  # the jobs a new one follows

    # -- running analyses ------------------------------------------------------------------
    def run(
        self,
        *analyses,
        supersede: bool = False,
        on_partial: Optional[Callable[[Progress], None]] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
        kernel: Optional[str] = None,
        preview_stride: Optional[int] = None,
        roi=None,
        descan=None,
        checkpoint=None,
        checkpoint_every: float = DEFAULT_EVERY,
        hooks=None,
    ) -> Job:
        """Start a job computing ``analyses`` in one pass; returns the :class:`Job` at once.

        This call only plans (bad analyses raise here, and a
        :class:`~stem_explorer.errors.ClusterError` when the session's cluster is gone);
        the job's thread submits the tasks, and what goes wrong from then on (the data,
        the cluster) is the job's error, raised by ``job.result()``.

        ``job.result()`` blocks for the final :class:`~stem_explorer.results.Results`;
        iterating the job yields :class:`Progress` snapshots as partitions finish.
        Callbacks run in the job's thread, outside its lock; one that raises is logged
        and kept in ``job.callback_errors`` (the job goes on). With ``supersede=True``
        the session's previous job is cancelled first. No callback of a cancelled job
        starts after ``cancel()`` returns, and this job delivers nothing before a
        callback still running in one of the session's cancelled jobs has returned:
        no stale partial result follows a newer one.

        Large data sets get a coarse preview first: the per-frame analyses run on every
        ``preview_stride``-th scan row and column before the rest (sized automatically
        when None; 0 or 1 turns it off); ``Progress.fill_preview(image)`` shows it as a full
        field. Once a job has read every frame, the session's :attr:`reduced_copy` is in
        the workers' memory, and later jobs of virtual detectors, radial profiles and
        centres of mass preview every scan position from it, on a binned detector
        (``Progress.preview_source == "reduced"``; a grid preview this process reads
        faster, from the page cache, shows first; 0 or 1 turns both off).
        Preview values never replace exact ones (``Progress.exact``). ``kernel`` overrides the session's mask-product path for this job: 'auto'
        (the cost model), or 'spans', 'columns', 'sparse' or 'dense' (see
        :class:`~stem_explorer.engine.ops.MaskProduct`).

        ``roi`` limits every analysis to a region of the scan: a boolean array of the
        scan's shape, a mask shape of :mod:`stem_explorer.masks` in scan coordinates
        (2-D scans) or a list of scan positions (see
        :mod:`~stem_explorer.analyses.scan_roi`). Only the partitions holding its
        frames run and each reads only the tiles (the chunks, for chunked or
        compressed files) that hold them; per-position results are NaN outside it,
        reductions (sum, mean, ...) cover only it, and there is no coarse preview.
        Analyses that need only some frames (:class:`~stem_explorer.analyses.PickFrame`,
        :class:`~stem_explorer.analyses.RoiSum`) read only those, ROI or not.

        ``descan`` (a :class:`~stem_explorer.analyses.Descan`) moves every mask of the
        run with the diffraction pattern and subtracts the shift from centre-of-mass
        results; None takes the session's :attr:`descan`, False runs without one. It is
        recorded in the results' provenance (``"descan"``).

        With ``checkpoint`` (a file path, e.g.
        :func:`~stem_explorer.engine.checkpoint.checkpoint_path` of the results file)
        the job saves its merged accumulators and finished partitions there every
        ``checkpoint_every`` seconds, and a job started with a checkpoint made for the
        same data set file and analyses computes only the partitions it lacks. Save
        with ``job.save(path)``, which removes the checkpoint once the results file
        is written. A checkpoint made for other work or damaged is replaced, with a
        :class:`~stem_explorer.errors.CheckpointWarning`; a file there that is not a
        checkpoint raises :class:`~stem_explorer.errors.CheckpointError`. See
        :mod:`stem_explorer.engine.checkpoint`.

        ``hooks`` are this job's event hooks, after the session's (see
        :mod:`stem_explorer.engine.hooks`); one that raises is logged and kept in
        ``job.hook_errors``.
        """
        if preview_stride is not None:
            preview_stride = whole_number(
                "preview_stride", preview_stride, 0, max(self.dataset.nav_shape, default=1),
                "scan positions between preview points along each axis", "0 or 1 turns the preview off",
            )
        frames = self._roi_frames(roi)
        plan, finalize = build_plan(
            analyses, self.dataset, kernel=kernel or self.kernel, tile_bytes=self.tile_bytes, roi=frames,
            descan=self.descan if descan is None else (None if descan is False else descan),
        )
        if frames is not None and plan_frames(plan.ops, frames).size == 0:
            raise AnalysisError("roi holds none of the frames these analyses read (picked positions or a "
                                "scan_roi outside it); widen roi or run them without it")
        check_client(self.client)
        saver = self._checkpoint(checkpoint, checkpoint_every, analyses, frames)
        hooks = merge(self.hooks, hooks)
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
                after=list(self._jobs),
                hooks=hooks,
                **({} if frames is None else {"roi": frames}),
                **({"reduced": self.reduced_copy} if self.reduced_copy.spec is not None else {}),
                # only a Job takes one: live data sets are refused by _checkpoint
                **({"checkpoint": saver} if saver is not None else {}),
            )
            self._jobs.add(job)
            self._current = job
        if self._warm_here and not warmup.is_warm(self.dataset.dtype):
            self._warm_when_done(job)
        return job

    def _plan_reduced_copy(self, budget: Optional[int]) -> ReducedCopy:
        """The session's reduced copy, sized for ``budget`` bytes (None: the default)."""
        ds = self.dataset
        live = isinstance(ds, LiveDataSet)
        if live and not (ds.recorded_here and not ds.source.decodes):
            return ReducedCopy(None, 0, "no reduced copy: the workers read this acquisition's frames as they arrive")
        if budget is None:
            try:
                budget = default_budget(self.client)
            except Exception as exc:  # a cluster that does not say: no copy, previews as before
                return ReducedCopy(None, 0, f"no reduced copy: the workers' memory is unknown ({exc})")
        if live:  # its frames are computed here: the copy is kept here too
            return plan_live_copy(ds.nav_shape, ds.sig_shape, ds.dtype, budget)
        spec, reason = plan_copy(ds.nav_shape, ds.sig_shape, ds.dtype, budget, max(1, self.n_workers))
        return ReducedCopy(spec, budget, reason)

    def _roi_frames(self, roi) -> Optional[np.ndarray]:
        """The sorted flat frame indices of ``run``'s ``roi`` (None: the whole scan)."""
        if roi is None:
            return None
        if not job_class(self.dataset).selects_frames:
            raise OptionError("roi is not available on a live data set: its jobs follow the acquisition frame "
                              "by frame; run without roi, or on the recording once it has ended")
        return roi_to_frames(roi, self.dataset, "roi")

    def _checkpoint(self, path, every, analyses, roi) -> Optional[Checkpoint]:
        """The :class:`Checkpoint` of a job of ``analyses`` (None without ``path``)."""
        if path is None:
            return None
        if isinstance(self.dataset, LiveDataSet):
            raise CheckpointError("a live acquisition cannot be checkpointed (its frames are still arriving); run without checkpoint=")
        if roi is not None:
            raise CheckpointError("a job over a scan roi is not checkpointed (it reads only the region's frames); "
                                  "run it without checkpoint=, or without roi")
        return Checkpoint(path, every=every, context={"analyses": [a.to_dict() for a in analyses]})

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
        if self._gateway is not None:
            return self._gateway.dashboard_link
        if self._cluster is not None and not self._dashboard:
            return None  # the embedded scheduler's HTTP server serves no pages
        try:
            return self.client.dashboard_link or None
        except Exception:  # no dashboard (bokeh missing) or scheduler gone
            return None

    def close(self) -> None:
        """Cancel the running job; stop the embedded or gateway cluster if the session
        started it."""
        if self._current is not None:
            self._current.cancel()
        # the copy's parts here, and on a cluster that outlives the session
        workers = not self._owns_client and not isinstance(self.reduced_copy, LiveCopy)
        self.reduced_copy.drop(self.client if workers else None)
        if self._gateway is not None:
            self._gateway.close()  # its client too
            self._gateway = None
        elif self._owns_client:
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


def open_client(client, address: Optional[str], n_workers: Optional[int], timeout: float, dashboard: bool):
    """``(client, cluster)``: the given client, one connected to ``address``, or one of
    a new embedded cluster (``cluster`` is None unless it was started here)."""
    if client is not None:
        return client, None
    if address is not None:
        return connect(address, timeout), None
    cluster = start_local_cluster(n_workers, dashboard=dashboard)  # before dask's import
    from distributed import Client

    return Client(cluster, timeout=timeout), cluster


def check_cluster_options(client, address, n_workers, dashboard) -> None:
    """Refuse both ``client`` and ``address``, or embedded-cluster options with either."""
    if client is not None and address is not None:
        raise ClusterError("pass either client= or address=, not both")
    if not isinstance(dashboard, bool):
        raise OptionError(f"dashboard must be True or False, got {dashboard!r}")
    if client is None and address is None:
        if n_workers is not None:
            check_n_workers(n_workers)
    elif n_workers is not None or dashboard:
        raise OptionError(
            "n_workers and dashboard are options of the embedded cluster; with client= or address= "
            "the cluster is yours: size it (and open its dashboard) where you start it"
        )


def _check_bytes(name: str, value, maximum: int, meaning: str) -> Optional[int]:
    if value is None:
        return None
    return whole_number(name, value, 1, maximum, f"bytes of {meaning}", "or None for the default")
