"""How a batch shows its progress: tqdm bars over files and bytes in a terminal, an
ipywidgets view in a notebook, or nothing.

Both follow one small interface (:class:`ProgressView`): ``grow`` when inputs are
found (a watched folder finds more as it goes), ``advance`` when an input's row is
settled, ``close`` at the end. Views are called from the batch's own thread.
"""

from __future__ import annotations

import time

from .summary import FAILED


class ProgressView:
    """Shows nothing; the base of the views."""

    def grow(self, files: int, nbytes: int) -> None:
        """``files`` more inputs holding ``nbytes`` are to be processed."""

    def advance(self, row: dict) -> None:
        """An input's row is settled (done, kept, failed or cancelled)."""

    def close(self) -> None:
        """The batch is over."""


class BarProgress(ProgressView):
    """Two tqdm bars on stderr: files (with the failure count) and bytes (with GB/s)."""

    def __init__(self):
        from tqdm.auto import tqdm

        self.files = tqdm(total=0, unit="files", desc="files", position=0)
        self.bytes = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="data ", position=1)
        self.failed = 0

    def grow(self, files: int, nbytes: int) -> None:
        self.files.total += files
        self.bytes.total += nbytes
        self.files.refresh()
        self.bytes.refresh()

    def advance(self, row: dict) -> None:
        self.failed += row.get("status") == FAILED
        if self.failed:
            self.files.set_postfix_str(f"{self.failed} failed", refresh=False)
        self.files.update(1)
        self.bytes.update(int(row.get("bytes") or 0))

    def close(self) -> None:
        self.files.close()
        self.bytes.close()


class WidgetProgress(ProgressView):
    """A notebook view: bars over files and bytes, counts by status and the
    throughput so far, shown (``IPython.display``) when made."""

    def __init__(self):
        import ipywidgets as w
        from IPython.display import display

        self.total_files = self.total_bytes = self.done_bytes = 0
        self.counts: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self.files = w.IntProgress(value=0, max=1, description="files")
        self.data = w.IntProgress(value=0, max=1, description="data")
        self.label = w.HTML()
        self.widget = w.VBox([self.files, self.data, self.label])
        self._show()
        display(self.widget)

    def grow(self, files: int, nbytes: int) -> None:
        self.total_files += files
        self.total_bytes += nbytes
        self._show()

    def advance(self, row: dict) -> None:
        status = row.get("status", "")
        self.counts[status] = self.counts.get(status, 0) + 1
        self.done_bytes += int(row.get("bytes") or 0)
        self.files.value += 1
        self._show()

    def _show(self) -> None:
        self.files.max = max(1, self.total_files)
        self.data.max = max(1, self.total_bytes)
        self.data.value = min(self.done_bytes, self.data.max)
        elapsed = time.perf_counter() - self.t0
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items())) or "starting"
        gbps = self.done_bytes / elapsed / 1e9 if elapsed > 0 else 0.0
        self.label.value = (f"{self.files.value} of {self.total_files} inputs ({counts}); "
                            f"{self.done_bytes / 2**30:.2f} of {self.total_bytes / 2**30:.2f} GiB, {gbps:.2f} GB/s")

    def close(self) -> None:
        self.files.bar_style = "danger" if self.counts.get(FAILED) else "success"


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where a widget can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def make_view(progress) -> ProgressView:
    """The view for ``batch(progress=...)``: a :class:`ProgressView` as given; True or
    "auto": the widget in a notebook, else the bars; False or None: none."""
    if isinstance(progress, ProgressView):
        return progress
    if progress in (False, None):
        return ProgressView()
    return WidgetProgress() if in_notebook() else BarProgress()
