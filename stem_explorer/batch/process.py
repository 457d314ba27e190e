"""One input of a batch: open it, run the recipe as a job, save its results file.

Runs in one of the batch's threads (several inputs are in flight at once, each a
:class:`~stem_explorer.engine.Job` on the shared cluster; a small file is one task). What is wrong with the
input (unreadable, another format, analyses that do not fit it) fails its row; what
is wrong with the output folder or the cluster ends the batch (:data:`FATAL`): every
further input would fail the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ClusterError, JobCancelledError, SaveError, StemExplorerError
from ..analyses import build_plan
from ..engine import Job
from ..engine.cluster import n_workers_of
from ..engine.failures import check_client
from ..io import open_dataset
from .inputs import BatchInput
from .resume import batch_provenance, recorded
from .summary import CANCELLED, DONE, FAILED, dataset_columns, figure_columns, scalar_summaries
from .writer import ResultsWriter

#: Errors that end the whole batch rather than one row.
FATAL = (SaveError, ClusterError)

#: Files up to this size are one task each (a lighter path: the batch's concurrency,
#: not the file's partitions, keeps the workers busy).
SMALL_FILE_BYTES = 64 * 2**20


@dataclass
class Outcome:
    """What processing one input gave: its summary row, and for a computed input its
    results, stats and results path (for the hooks)."""

    row: dict
    results: Any = None
    stats: Any = None
    output: Optional[Path] = None
    fatal: Optional[BaseException] = None


class InputProcessor:
    """Processes inputs of one batch; :meth:`cancel_all` stops the running ones."""

    def __init__(self, recipe, out_dir: Path, client, kernel: str = "auto"):
        self.recipe, self.out_dir, self.client, self.kernel = recipe, Path(out_dir), client, kernel
        self._lock = threading.Lock()
        self._jobs: set = set()
        self._cancelled = False
        # one writer thread for every results file (:mod:`.writer`): an input is done
        # once its file and the file's name are on disk
        self._writer = ResultsWriter()

    def close(self) -> None:
        """Wait for the saves queued, if any; no save starts after."""
        self._writer.close()

    def cancel_all(self) -> None:
        """Cancel the running jobs (their rows end ``cancelled``) and start no more."""
        with self._lock:
            self._cancelled = True
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()

    def __call__(self, item: BatchInput, fingerprint: dict) -> Outcome:
        row = {"input": item.key, "output": item.output_name}
        try:
            return self._process(item, fingerprint, row)
        except JobCancelledError:
            return Outcome(dict(row, status=CANCELLED, error="interrupted"))
        except FATAL as exc:
            return Outcome(dict(row, status=FAILED, error=str(exc)), fatal=exc)
        except StemExplorerError as exc:
            return Outcome(dict(row, status=FAILED, error=str(exc)))
        except Exception as exc:  # a reader's or analysis's unforeseen error: this row only
            return Outcome(dict(row, status=FAILED, error=f"{type(exc).__name__}: {exc}"))

    def _process(self, item: BatchInput, fingerprint: dict, row: dict) -> Outcome:
        target = self.out_dir / item.output_name
        if not _replaceable(target, item):
            return Outcome(dict(row, status=FAILED, error=(
                f"{str(target)!r} exists and is not this batch's results file of {item.key!r}; it is left "
                f"alone: move it away, or choose another output folder")))
        dataset = open_dataset(item.path, **self.recipe.open)
        row.update(dataset_columns(dataset.describe()))
        plan, finalize = build_plan(self.recipe.build(), dataset, kernel=self.kernel)
        check_client(self.client)
        # a small file is one task (the batch's other inputs keep the other workers
        # busy); a big one is split over the workers as a session's job would be. No
        # coarse preview: nobody watches a batch's images fill in.
        spread = n_workers_of(self.client) if dataset.nbytes > SMALL_FILE_BYTES else 1
        with self._lock:
            if self._cancelled:
                raise JobCancelledError("the batch was interrupted")
            job = Job(self.client, dataset, plan, finalize, n_workers=spread, preview_stride=0)
            self._jobs.add(job)
        try:
            results = job.result()
            stats = job.stats
        finally:
            with self._lock:
                self._jobs.discard(job)
        figures = figure_columns(stats)
        results.provenance["batch"] = batch_provenance(self.recipe, item.path, fingerprint, figures)
        self._writer.submit(lambda: self._save(results, target)).result()
        row.update(figures, status=DONE, error="", **scalar_summaries(results))
        return Outcome(row, results, stats, target)

    def _save(self, results, target: Path) -> None:
        with self._lock:
            if self._cancelled:  # the batch stopped (Ctrl-C, a full disk) while this input ran
                raise JobCancelledError("the batch was interrupted")
        results.save(target)


def _replaceable(target: Path, item: BatchInput) -> bool:
    """Whether ``target`` is free or a batch's results file of this input: any other
    file there is the user's and never replaced (the name rules normally avoid it)."""
    if not target.exists():
        return True
    entry = recorded(target)
    return entry is not None and entry.get("input", {}).get("path") == item.key
