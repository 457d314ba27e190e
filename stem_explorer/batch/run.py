"""``batch``: the same analyses over many inputs, one results file each, a summary.

Several tasks are in flight at once (``concurrency`` of them on the one cluster),
so the workers always have the next task while this process opens inputs and saves
results. A task is one input, or a group of small files (:data:`GROUP_BYTES` and
:data:`GROUP_FILES` at most, fewer when few inputs are left, so that every worker
gets some): a task per 4 MiB file cost this process more than the file's data
(:mod:`stem_explorer.engine.grouped`). The loop runs in the calling thread: it hands
tasks' inputs to a thread pool, settles their rows as they finish (summary,
progress, hooks), and in watch mode looks for new files between.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .._atomic import check_writable_folder
from .._options import seconds, whole_number
from ..engine.cluster import check_n_workers, default_n_workers, n_workers_of, start_local_cluster
from ..engine.hooks import as_hooks
from ..errors import OptionError, StemExplorerError
from .inputs import expand, fingerprint, name_outputs
from .process import SMALL_FILE_BYTES, InputProcessor, Outcome
from .progress import make_view
from .recipe import as_recipe
from .resume import held_by_other, up_to_date
from .summary import CANCELLED, DONE, FAILED, KEPT, Summary, dataset_columns, scalar_summaries
from .watch import FolderWatcher

#: Upper bound of ``concurrency``: beyond it threads and open files only add cost.
MAX_CONCURRENCY = 1024

#: A group of small files reads at most this many bytes (its files' sizes)...
GROUP_BYTES = SMALL_FILE_BYTES
#: ... and holds at most this many files: a group's results come back together.
GROUP_FILES = 32


@dataclass
class BatchReport:
    """What a batch did: its rows (as in ``summary.json``) and where they are."""

    rows: list
    out_dir: Path

    def count(self, status: str) -> int:
        """Rows with ``status`` ('done', 'kept', 'failed', 'cancelled')."""
        return sum(r.get("status") == status for r in self.rows)

    @property
    def failed(self) -> list:
        """The rows of the inputs that failed."""
        return [r for r in self.rows if r.get("status") == FAILED]

    @property
    def ok(self) -> bool:
        """True when every input has complete results (computed now or kept)."""
        return all(r.get("status") in (DONE, KEPT) for r in self.rows)

    def __repr__(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in (DONE, KEPT, FAILED, CANCELLED) if self.count(s))
        return f"<BatchReport {len(self.rows)} inputs ({counts or 'none'}) in {self.out_dir}>"


def batch(
    inputs,
    analyses,
    out_dir,
    *,
    client=None,
    n_workers: Optional[int] = None,
    open_options: Optional[dict] = None,
    concurrency: Optional[int] = None,
    hooks=None,
    progress="auto",
    watch: bool = False,
    settle_s: float = 2.0,
    poll_s: float = 0.5,
    idle_timeout: Optional[float] = None,
    kernel: str = "auto",
) -> BatchReport:
    """Run ``analyses`` on every input; one results file each and a summary in ``out_dir``.

    Parameters
    ----------
    inputs : path, glob pattern or list of them
        Data files, folders (their data files; a folder that is one data set, such
        as a zarr store, is one input) and glob patterns, in any readable format.
    analyses : list of Analysis or dict, BatchRecipe, or path
        What to compute (one pass per input): analysis objects, their ``to_dict()``
        descriptions, a :class:`~stem_explorer.batch.BatchRecipe`, or a recipe file.
    out_dir : path
        Folder of the results files (``<input name>.results.h5``, atomic, with the
        provenance and the batch's recipe) and of ``summary.csv`` / ``summary.json``.
    client : distributed.Client, optional
        The cluster to use; default: an embedded cluster, stopped at the end.
    n_workers : int, optional
        Worker processes of the embedded cluster (default: one per core).
    open_options : dict, optional
        Options of :func:`~stem_explorer.io.open_dataset` for every input (added to
        the recipe's ``open``).
    concurrency : int, optional
        Tasks in flight at once (default: twice the workers, at least 2); a task is
        one input, or a group of small files (up to 64 MiB in all).
    hooks : optional
        Event hooks (see :mod:`stem_explorer.engine.hooks`): ``on_submit`` (an input
        handed to the cluster), ``on_result`` (its results saved: ``output``,
        ``results``, ``stats``, ``row``), ``on_error`` (``error``, ``row``) and
        ``on_complete`` (``rows``, ``failed``, ``out_dir``); the installed plugins of
        the entry-point group ``stem_explorer.hooks`` are called too. A hook that
        raises is logged and never stops the batch.
    progress : bool, "auto" or ProgressView
        Show progress: a widget in a notebook, tqdm bars elsewhere; False: none.
    watch : bool
        After the inputs, keep watching the input folders and process each new data
        file once complete, until interrupted (or ``idle_timeout``).
    settle_s : float
        Watch mode: seconds a new file's size must stay the same before it is read.
    poll_s : float
        Watch mode: seconds between looks at the folders.
    idle_timeout : float, optional
        Watch mode: end after this many seconds with nothing in flight and no new file.
    kernel : str
        The mask-product path ('auto', 'spans', 'columns', 'sparse', 'dense').

    Returns
    -------
    BatchReport
        The rows; failed inputs are rows with ``status == "failed"`` and the reason.

    Raises
    ------
    AnalysisError
        The recipe fails its schema (the message names the JSON pointer).
    DataSetNotFoundError
        An input does not exist, or a watched folder disappears.
    SaveError
        ``out_dir`` cannot be written (read-only, full): nothing half-written is left.

    Inputs whose results file is complete and was made by the same recipe from the
    input as it is now (size and modification time) are kept (status ``kept``), so
    running a batch again continues where it stopped.
    """
    recipe = as_recipe(analyses, open_options)
    out_dir = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))
    check_writable_folder(out_dir)
    paths = expand(inputs, exclude=[out_dir])
    folders = _watched_folders(inputs, out_dir) if watch else []
    settle_s = seconds("settle_s", settle_s, 86400.0, "a new file's size must stay the same")
    poll_s = seconds("poll_s", poll_s, 3600.0, "between looks at the watched folders")
    if idle_timeout is not None:
        idle_timeout = seconds("idle_timeout", idle_timeout, 10 * 86400.0, "without a new file")
    if client is not None and n_workers is not None:
        raise OptionError("n_workers is an option of the embedded cluster; with client= size the cluster where you start it")
    if n_workers is not None:
        check_n_workers(n_workers)
    limit = _concurrency(concurrency, client, n_workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        def connect():
            """The cluster, started when the first input needs computing (a re-run
            that keeps every results file starts none)."""
            if client is not None:
                return client
            from distributed import Client

            return stack.enter_context(Client(stack.enter_context(start_local_cluster(n_workers))))

        runner = _BatchLoop(recipe, out_dir, connect, as_hooks(hooks, installed=True), make_view(progress), limit, kernel)
        watcher = FolderWatcher(folders, paths, settle_s=settle_s, exclude=[out_dir]) if watch else None
        return runner.run(paths, watcher, poll_s, idle_timeout)


def _concurrency(value, client, n_workers: Optional[int]) -> int:
    if value is None:
        workers = n_workers_of(client) if client is not None else n_workers or default_n_workers()
        return max(2, 2 * workers)
    return whole_number("concurrency", value, 1, MAX_CONCURRENCY, "tasks in flight at once")


def _watched_folders(inputs, out_dir: Path) -> list[Path]:
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    folders = [Path(os.path.abspath(os.fspath(i))) for i in items if os.path.isdir(os.fspath(i))]
    if not folders:
        raise OptionError("watch=True needs a folder among the inputs (the folder the files land in)")
    return [f for f in folders if f != out_dir]


class _BatchLoop:
    """The calling thread's loop: submit, settle, watch."""

    def __init__(self, recipe, out_dir: Path, connect, hooks, view, limit: int, kernel: str):
        self.recipe, self.out_dir, self.hooks, self.view, self.limit = recipe, out_dir, hooks, view, limit
        self.connect = connect
        self.process = InputProcessor(recipe, out_dir, None, kernel)
        self.summary = Summary(out_dir, [])
        self.fatal: Optional[BaseException] = None
        self._ready: Optional[tuple] = None  # an input admitted, left for the next task

    def run(self, paths: list, watcher: Optional[FolderWatcher], poll_s: float, idle_timeout) -> BatchReport:
        pending = deque()
        self._add(paths, pending)
        in_flight: dict = {}
        unsettled: deque = deque()  # the outcomes of a finished task not settled yet
        idle_since = time.monotonic()
        pool = ThreadPoolExecutor(self.limit, thread_name_prefix="stem-explorer-batch")
        try:
            while True:
                while (pending or self._ready) and len(in_flight) < self.limit and self.fatal is None:
                    self._launch(self._next_task(pending), pool, in_flight)
                if not in_flight and (watcher is None or self.fatal is not None):
                    break
                done, _ = wait(in_flight, timeout=poll_s if watcher else None, return_when=FIRST_COMPLETED)
                for future in done:
                    del in_flight[future]
                    unsettled.extend(future.result())
                    while unsettled:
                        self._settle(unsettled.popleft())
                if watcher is not None and self.fatal is None:
                    watcher = self._watch(watcher, pending)
                    if pending or self._ready or in_flight:
                        idle_since = time.monotonic()
                    elif idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                        break
        except BaseException:  # Ctrl-C: stop the jobs; what was saved stays whole
            self.process.cancel_all()
            pool.shutdown(wait=True, cancel_futures=True)
            self.process.close()
            for future in in_flight:
                if future.done() and not future.cancelled():
                    unsettled.extend(future.result())
            while unsettled:
                self._settle(unsettled.popleft())
            self._finish()
            raise
        pool.shutdown(wait=True)
        self.process.close()
        self._finish()
        if self.fatal is not None:
            raise self.fatal
        return BatchReport(self.summary.rows, self.out_dir)

    def _add(self, paths: list, pending: deque) -> None:
        named = name_outputs(paths, held_by_other(self.out_dir))
        self.summary.add_inputs(named)
        pending.extend(named)
        self.view.grow(len(named), sum(_size(p) for p in paths))

    def _watch(self, watcher: FolderWatcher, pending: deque) -> Optional[FolderWatcher]:
        """Queue the watched folders' new complete files; a folder that is gone ends
        the watch (the inputs in flight finish, then the batch raises)."""
        try:
            new = watcher.poll()
        except StemExplorerError as exc:  # DataSetNotFoundError: the folder disappeared
            self.fatal = exc
            return None
        if new:
            self._add(new, pending)
        return watcher

    def _next_task(self, pending: deque) -> list:
        """The ``(input, fingerprint)`` pairs of the next task: an input over
        :data:`SMALL_FILE_BYTES` alone, or small ones up to :data:`GROUP_BYTES` and a
        group size that leaves twice ``concurrency`` groups for what is waiting (so
        the last groups are small and every worker has some). Inputs kept from an
        earlier run, and those gone, are settled here and join no task."""
        waiting = len(pending) + (self._ready is not None)
        size = min(GROUP_FILES, max(1, math.ceil(waiting / (2 * self.limit))))
        members, nbytes = [], 0
        while len(members) < size and (pending or self._ready):
            if self._ready is None:
                self._ready = self._admit(pending.popleft())
                if self._ready is None:
                    continue
            item, print_ = self._ready
            alone = print_["size"] > SMALL_FILE_BYTES
            if members and (alone or nbytes + print_["size"] > GROUP_BYTES):
                break  # the next task's
            self._ready = None
            members.append((item, print_))
            nbytes += print_["size"]
            if alone:
                break
        return members

    def _admit(self, item) -> Optional[tuple]:
        """``(item, fingerprint)`` of an input to compute; None for one settled here
        (gone since it was listed, or kept: its results are up to date)."""
        try:
            print_ = fingerprint(item.path)
        except StemExplorerError as exc:  # the input went away since it was listed
            self._settle(Outcome({"input": item.key, "output": item.output_name, "status": FAILED, "error": str(exc)}))
            return None
        kept = up_to_date(self.out_dir / item.output_name, self.recipe, item.path, print_)
        if kept is not None:
            self._settle(Outcome(_kept_row(item, kept)))
            return None
        return item, print_

    def _launch(self, members: list, pool: ThreadPoolExecutor, in_flight: dict) -> None:
        """Hand one task's inputs to the pool (none: nothing to compute)."""
        if not members:
            return
        if self.process.client is None:
            self.process.client = self.connect()
        for item, print_ in members:
            self.hooks.emit("on_submit", input=item.key, output=str(self.out_dir / item.output_name), bytes=print_["size"])
        in_flight[pool.submit(self.process, members)] = members

    def _settle(self, outcome: Outcome) -> None:
        row = outcome.row
        self.summary.set(row)
        self.view.advance(row)
        if outcome.fatal is not None and self.fatal is None:
            self.fatal = outcome.fatal
            self.process.cancel_all()  # every further save would fail the same way
        if row["status"] == DONE:
            self.hooks.emit("on_result", input=row["input"], output=str(outcome.output), results=outcome.results,
                            stats=outcome.stats, row=row)
        elif row["status"] == FAILED:
            self.hooks.emit("on_error", input=row["input"], error=row["error"], row=row)

    def _finish(self) -> None:
        self.view.close()
        for row in self.summary.rows:
            if "status" not in row:  # never started: the batch stopped first
                row.update(status=CANCELLED, error="not started: the batch stopped before it")
        rows = self.summary.rows
        try:
            self.summary.write()
        except Exception as exc:  # a full or read-only disk: the batch's own error says more
            if self.fatal is None:
                self.fatal = exc
        self.hooks.emit("on_complete", rows=rows, failed=self.summary.count(FAILED), out_dir=str(self.out_dir))


def _kept_row(item, results) -> dict:
    """The row of an input whose results are kept from an earlier run."""
    figures = results.provenance["batch"].get("figures", {})
    return {"input": item.key, "output": item.output_name, "status": KEPT, "error": "",
            **dataset_columns(results.provenance.get("dataset", {})), **figures, **scalar_summaries(results)}


def _size(path: Path) -> int:
    try:
        return fingerprint(path)["size"]
    except Exception:
        return 0
