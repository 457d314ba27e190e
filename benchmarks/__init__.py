"""Benchmark suite of stem_explorer (issue 4), not part of the test suite.

Run ``python -m benchmarks`` from the repository root, or ``stem-explorer bench``;
``--help`` lists the options. Method and measured figures: ``docs/performance.md``.

Modules: :mod:`.data` (data sets), :mod:`.workloads` (what is timed, targets),
:mod:`.plainread` (the plain-read limit on the workers), :mod:`.timing`,
:mod:`.coldstart`, :mod:`.libertem_ref` (optional LiberTEM column), :mod:`.report`
and :mod:`.runner` (the entry point :func:`main`); side benchmarks behind a flag:
:mod:`.hdfs` (``--hdfs``) and :mod:`.formats` (``--formats``, detector formats
against raw uint16).
"""


def main(argv=None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark (see :func:`benchmarks.runner.main`)."""
    from .runner import main as run

    return run(argv, prog)
