"""The ``stem-explorer`` command: sample data, inspect files, run analyses, demo."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import analyses as an
from . import masks
from ._version import __version__
from ._options import seconds, whole_number
from .cli_analyses import add_analysis_options, analyses_from_args, describe_analyses
from .engine.checkpoint import DEFAULT_EVERY, MAX_EVERY, SUFFIX, checkpoint_path
from .engine.checkpoint_file import is_checkpoint
from .engine.cluster import check_n_workers
from .errors import OptionError, StemExplorerError
from .io.partitioned.codecs import CODECS


def _open_options(args) -> dict:
    options = {}
    for name in ("dataset", "dtype", "offset", "channel"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    for name in ("nav_shape", "sig_shape"):
        if getattr(args, name, None):
            options[name] = tuple(getattr(args, name))
    if getattr(args, "calibration", None):
        try:
            options["calibration"] = json.loads(args.calibration)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise StemExplorerError(
                f"--calibration {args.calibration[:200]!r} is not valid JSON ({exc}); pass e.g. "
                f"'{{\"scan_step\": \"0.5 nm\"}}'"
            ) from None
    return options


def _session(args, dataset):
    from .session import Session

    # no reduced copy: a command runs its analyses once, nothing previews from it
    return Session(dataset, address=args.address, n_workers=args.workers, kernel=args.kernel, dashboard=args.dashboard,
                   partition_bytes=getattr(args, "partition_bytes", None), reduced_copy_bytes=0)


def _run_with_progress(session, analyses_list, quiet=False, output=None, **run_options):
    """Run and wait, with a progress bar; with ``output`` the results are saved there
    (:meth:`Job.save`: then the job's checkpoint, if any, is removed)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=1, unit="partitions", disable=quiet, leave=False)

    def on_progress(progress):
        bar.total = progress.n_partitions
        bar.n = progress.partitions_done
        bar.set_postfix_str(f"{progress.gbps:.2f} GB/s", refresh=True)

    try:
        job = session.run(*analyses_list, on_progress=on_progress, **run_options)
        if job.stats.partitions_resumed:
            print(f"resuming from {job.checkpoint.path}: {job.stats.partitions_resumed} of "
                  f"{job.n_partitions} partitions done", file=sys.stderr)
        results = job.result()
        if output:
            job.save(output)
    finally:
        bar.close()
    return results, job.stats


def _summary(labels, dataset, stats, n_workers, target=None) -> str:
    where = f" -> {target}" if target else ""
    resumed = stats.partitions_resumed
    resumed = f" ({resumed} from the checkpoint, {stats.n_partitions - resumed} computed)" if resumed else ""
    return (
        f"{'+'.join(labels)} on {dataset.path or 'array'} ({dataset.nbytes / 2**30:.2f} GiB) in "
        f"{stats.elapsed:.2f} s: {stats.gbps:.2f} GB/s, {stats.n_partitions} partitions{resumed} on "
        f"{n_workers} workers{where}"
    )


def _checked(value, check):
    """``check(value)``, its OptionError as argparse's error (so usage is printed)."""
    try:
        return check(value)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _workers(text: str) -> int:
    """--workers of the embedded cluster."""
    return _checked(_number(text), lambda v: check_n_workers(v, "--workers"))


def _interval(text: str) -> float:
    """--checkpoint-every: seconds, 0 for never."""
    value = _number(text)
    if value == 0:
        return 0.0
    return _checked(value, lambda v: seconds("--checkpoint-every", v, MAX_EVERY, "between checkpoints; 0: none"))


def _whole(name: str, minimum: int, maximum: int, meaning: str):
    """An argparse type: a whole number from ``minimum`` to ``maximum``."""
    return lambda text: _checked(_number(text), lambda v: whole_number(name, v, minimum, maximum, meaning))


# -- commands ------------------------------------------------------------------------------
def cmd_sample(args) -> int:
    from tqdm.auto import tqdm

    from .sample import make_sample

    with tqdm(total=1, unit="frames", disable=args.quiet) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        path = make_sample(
            args.out, nav_shape=tuple(args.nav_shape), sig_shape=tuple(args.sig_shape),
            dtype=args.dtype, format=args.format, seed=args.seed, overwrite=args.overwrite, progress=progress,
        )
    print(f"wrote {path}")
    return 0


def cmd_info(args) -> int:
    from .io import open_dataset

    dataset = open_dataset(args.path, format=args.format, **_open_options(args))
    info = dataset.describe()
    parts = dataset.partitions(args.workers or 1)
    info["partitions"] = [{"start": p.start, "stop": p.stop, "locations": p.locations} for p in parts]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(repr(dataset))
        for key in ("format", "path", "nav_shape", "sig_shape", "dtype"):
            print(f"  {key:10s} {info[key]}")
        print(f"  {'size':10s} {dataset.nbytes / 2**20:.1f} MiB")
        print(f"  partitions {len(parts)} (frames per partition: {parts[0].n_frames if parts else 0})")
        print("  calibration")
        for line in dataset.calibration.describe():
            print(f"    {line}")
        for key, value in info["metadata"].items():
            if key != "calibration_warnings":  # printed with the calibration
                print(f"  {key:10s} {value}")
    return 0


def cmd_run(args) -> int:
    from ._atomic import check_writable, check_writable_folder
    from .io import open_dataset

    chosen = analyses_from_args(args)
    descan = _descan(args)
    if args.output:  # fail now, not after the computation
        check_writable(args.output)
    elif args.checkpoint_every:
        raise OptionError("--checkpoint-every needs -o OUT: the checkpoint is kept beside the results file, as OUT.checkpoint")
    if args.tiff:
        check_writable_folder(args.tiff)
    dataset = open_dataset(args.path, format=args.format, **_open_options(args))
    if descan is not None:
        descan.shifts_for(dataset.nav_shape)  # a map for another scan fails now, not after the cluster started
    every = args.checkpoint_every
    if every is None:  # by default only for data in local files (not HDFS): their size and time identify them
        every = DEFAULT_EVERY if dataset.path and os.path.exists(dataset.path) else 0
    checkpoint = {"checkpoint": checkpoint_path(args.output), "checkpoint_every": every} if args.output and every else {}
    with _session(args, dataset) as session:
        try:
            results, stats = _run_with_progress(session, chosen, args.quiet, args.output, descan=descan, **checkpoint)
        except StemExplorerError:
            if checkpoint and is_checkpoint(checkpoint["checkpoint"]):
                print(f"the progress so far is saved in {checkpoint['checkpoint']}: run the same command "
                      f"again to go on from it", file=sys.stderr)
            raise
        if args.tiff:
            results.to_tiff(args.tiff)
        print(_summary([a.label for a in chosen], dataset, stats, session.n_workers, args.output))
    return 0


def _descan(args):
    """The run's descan correction from ``--descan FILE`` or ``--descan-plane``, or None."""
    if args.descan and args.descan_plane:
        raise OptionError("give --descan FILE or --descan-plane, not both")
    if args.descan:
        return an.Descan.load(args.descan)
    if args.descan_plane:
        values = args.descan_plane
        return an.Descan.plane(offset=values[0:2], per_row=values[2:4], per_column=values[4:6])
    return None


def cmd_batch(args) -> int:
    """Run a recipe on many inputs: one results file each and a summary in OUT_DIR."""
    from .batch import batch, load_batch_recipe

    recipe = load_batch_recipe(args.recipe)
    client = None
    if args.address:
        from .engine.cluster import connect

        client = connect(args.address, 10.0)
    try:
        report = batch(
            args.inputs, recipe, args.output, client=client, n_workers=args.workers, concurrency=args.jobs,
            progress=not args.quiet, watch=args.watch, settle_s=args.settle, poll_s=args.poll,
            idle_timeout=args.idle_timeout, kernel=args.kernel,
        )
    except KeyboardInterrupt:
        print(f"stem-explorer: interrupted; the results saved so far are in {args.output}: run the same "
              f"command again to go on", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("done", "kept", "failed", "cancelled") if report.count(s))
    print(f"{len(report.rows)} inputs ({counts or 'none'}) -> {args.output}/summary.csv")
    if report.failed:
        print(f"stem-explorer: {len(report.failed)} of {len(report.rows)} inputs failed "
              f"(the reasons are in {args.output}/summary.csv); first: {report.failed[0]['input']}: "
              f"{report.failed[0]['error']}", file=sys.stderr)
        return 1
    return 0


def _sample(args) -> Path:
    """The sample data set of ``demo`` / ``lab``, generated with a progress bar if absent."""
    from .sample import ensure_sample, standard_sample_path

    path = standard_sample_path(args.dir, args.nav_shape, args.sig_shape)
    if not path.exists():
        size = math.prod(args.nav_shape) * math.prod(args.sig_shape) * 2 / 2**30
        print(f"generating {path} ({size:.2f} GiB; --nav-shape for a smaller scan) ...")
    return ensure_sample(args.dir, args.nav_shape, args.sig_shape)


def cmd_lab(args) -> int:
    """Start JupyterLab on 127.0.0.1 with the explorer notebook open on the sample,
    once everything it needs is checked (:mod:`stem_explorer.lab_setup`)."""
    from .lab import run_lab
    from .lab_setup import prepare_lab

    plan = prepare_lab(
        notebook_dir=args.notebook_dir, notebook=args.notebook, sample_dir=Path(args.dir),
        nav_shape=args.nav_shape, sig_shape=args.sig_shape, port=args.port,
    )
    return run_lab(_sample(args).resolve(), port=plan.port, notebooks=plan.notebook_dir, open_notebook=plan.notebook)


def cmd_demo(args) -> int:
    """The README's main job: sample data set, embedded cluster, all the usual images."""
    from .io import open_dataset
    from .sample import sample_truth
    from .session import Session

    nav, sig = tuple(args.nav_shape), tuple(args.sig_shape)
    path = _sample(args)
    truth = sample_truth(nav, sig)
    cy, cx = truth.centre
    r = truth.central_radius
    dataset = open_dataset(path)
    chosen = [
        an.VirtualDetector({"bf": masks.Disk(cy, cx, r * 1.2), "adf": masks.Ring(cy, cx, r * 1.5, min(sig) / 2 - 1)}),
        an.CenterOfMass(center=(cy, cx), radius=r * 1.5),
        an.SumFrame(),
        an.StdFrame(),
    ]
    with Session(dataset, n_workers=args.workers, dashboard=args.dashboard, reduced_copy_bytes=0) as session:
        if session.dashboard_link:
            print(f"cluster dashboard: {session.dashboard_link}")
        results, stats = _run_with_progress(session, chosen)
        out = path.parent / "demo_results.h5"
        results.save(out)
        print(_summary([a.label for a in chosen], dataset, stats, session.n_workers, out))
    err = abs(results["com/shift_y"].data - truth.shift_y).mean()
    print(f"CoM shift error vs the known beam-shift field: {err:.3f} px (mean absolute)")
    print(f"results: {', '.join(results)}")
    return 0


def cmd_bench(args) -> int:
    """Forward to the benchmark suite (``benchmarks/``, see docs/performance.md)."""
    from .bench import main as bench_main

    return bench_main(args.bench_args)


def _size(text: str) -> int:
    """Bytes from ``134217728``, ``128M``, ``128MiB``, ``1G`` (binary units)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1] if number and number[-1] in units else ""
    try:
        value = float(number[: len(number) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 134217728, 128M or 1G") from None
    whole = math.floor(value) if math.isfinite(value) else value  # 1.5K is 1536; 0.3K rounds down
    return _checked(whole, lambda v: whole_number("the size", v, 1, 2**50, "bytes"))


def cmd_ingest(args) -> int:
    """Write SRC as raw partitions + dataset.json at DEST (a folder or hdfs:// URL)."""
    from .engine.ingestion import ingest

    dataset = ingest(
        args.path, args.dest, format=args.format, partition_bytes=args.partition_bytes,
        blocks_per_partition=args.blocks_per_partition, replication=args.replication,
        address=args.address, n_workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet, webhdfs=args.webhdfs, codec=args.codec, **_open_options(args),
    )
    done = dataset.metadata["ingested"]
    print(
        f"ingested {args.path} -> {args.dest}: {dataset.metadata['n_files']} partition files "
        f"({done['written']} written, {done['skipped']} already complete), "
        f"{dataset.nbytes / 2**30:.2f} GiB in {done['seconds']:.1f} s"
    )
    return 0


def cmd_simulate_merlin(args) -> int:
    """Serve a .mib file as a Merlin detector until interrupted."""
    from .live import MerlinSimulator

    sim = MerlinSimulator(
        args.path, nav_shape=tuple(args.nav_shape) if args.nav_shape else None, fps=args.fps, host=args.host,
        control_port=args.control_port, data_port=args.data_port, start_on_connect=args.start_on_connect,
        drop_frames=args.drop_frames,
    )
    rate = f"{args.fps:g} frames/s" if args.fps else "as fast as the receiver reads"
    print(
        f"Merlin simulator: {args.path}, scan {sim.nav_shape} ({sim.n_file_frames} frames in the file), {rate}; "
        f"listening on {sim.host} control port {sim.control_port} data port {sim.data_port}",
        flush=True,
    )
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


def cmd_analyses(args) -> int:
    """List the registered analyses with their parameters (or their JSON Schemas)."""
    print(describe_analyses(names=args.names, as_json=args.json))
    return 0


def cmd_formats(args) -> int:
    from .io import readers

    for plugin in readers():
        print(f"{plugin.name:16s} {' '.join(plugin.suffixes):32s} {plugin.description}")
    return 0


# -- argument parsing ----------------------------------------------------------------------
def _add_open_options(p) -> None:
    p.add_argument("path", help="data file or directory")
    p.add_argument("--format", help="reader name (see `stem-explorer formats`); default: from the file")
    p.add_argument("--dataset", help="HDF5 dataset path inside the file")
    p.add_argument("--nav-shape", type=int, nargs="+", metavar="N", help="scan shape")
    p.add_argument("--sig-shape", type=int, nargs=2, metavar="N", help="detector shape (raw files)")
    p.add_argument("--dtype", help="dtype of raw files, e.g. uint16 or >u2")
    p.add_argument("--offset", type=int, help="header bytes before the first frame (raw files)")
    p.add_argument("--channel", type=int, help="frame per position to read of 5-D HDF5 data (fpd colour channels)")
    p.add_argument("--calibration", metavar="JSON",
                   help="""calibration parts to override, e.g. '{"scan_step": "0.5 nm", "detector_pixel": "0.8 mrad"}'""")


def _add_cluster_options(p) -> None:
    p.add_argument("--workers", type=_workers, help="worker processes of the embedded cluster (default: one per core)")
    p.add_argument("--address", help="scheduler address (tcp://host:port) of an existing dask cluster")
    _add_dashboard_option(p)
    p.add_argument("--kernel", default="auto", choices=["auto", "spans", "columns", "sparse", "dense"], help="mask product kernel (auto: by the cost model)")


def _add_dashboard_option(p) -> None:
    p.add_argument("--dashboard", action="store_true",
                   help="serve the embedded cluster's dask dashboard on 127.0.0.1 (readable by every local user)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stem-explorer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stem_explorer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="write a synthetic 4D-STEM data set with known answers")
    p.add_argument("out", help="output file (.h5) or directory (--format raw)")
    p.add_argument("--nav-shape", type=int, nargs="+", default=[256, 256])
    p.add_argument("--sig-shape", type=int, nargs=2, default=[128, 128])
    p.add_argument("--dtype", default="uint16")
    p.add_argument("--format", default="hdf5", choices=["hdf5", "raw"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="shape, dtype, format and partitions of a data set")
    _add_open_options(p)
    p.add_argument("--workers", type=_whole("--workers", 1, 2**16, "workers to plan partitions for"),
                   help="plan partitions for this many workers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("run", help="run analyses and save the results")
    _add_open_options(p)
    _add_cluster_options(p)
    p.add_argument("-o", "--output", help="results file (.h5) with provenance")
    p.add_argument("--checkpoint-every", type=_interval, metavar="S",
                   help=f"with -o OUT: save progress to OUT{SUFFIX} every S seconds (default {DEFAULT_EVERY:g}; "
                        f"0: never); running the same command again computes only what it lacks")
    p.add_argument("--partition-bytes", type=_size, metavar="SIZE",
                   help="data per task, e.g. 64M (default: sized by the reader); a checkpoint saves whole partitions")
    p.add_argument("--tiff", help="also write one TIFF per result into this folder")
    p.add_argument("--descan", metavar="FILE", help="descan correction: a .npy map of (dy, dx) detector pixels per "
                   "scan position, shape (ny, nx, 2), or a .json description (Descan.to_dict())")
    p.add_argument("--descan-plane", type=_number, nargs=6, metavar=("DY", "DX", "DY_ROW", "DX_ROW", "DY_COL", "DX_COL"),
                   help="descan correction linear in the scan position: offset, then the change per scan row, "
                   "then per scan column, each (dy, dx) in detector pixels")
    p.add_argument("-q", "--quiet", action="store_true")
    add_analysis_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("batch", help="run a recipe on many files, folders or patterns: a results file each + summary.csv")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="data files, folders (their data files) or glob patterns")
    p.add_argument("--recipe", required=True, metavar="RECIPE.json",
                   help='JSON: {"analyses": [<analysis descriptions>], "open": {<open_dataset options>}}')
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder of the results files and the summary")
    p.add_argument("--jobs", type=_whole("--jobs", 1, 1024, "tasks in flight at once"),
                   help="tasks in flight at once: an input, or a group of small files (default: twice the workers)")
    p.add_argument("--watch", action="store_true",
                   help="then keep processing the new files that land in the INPUT folders, until interrupted")
    p.add_argument("--settle", type=float, default=2.0, metavar="S",
                   help="--watch: seconds a new file's size must stay the same before it is read (default 2)")
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help="--watch: seconds between looks (default 0.5)")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="--watch: stop after S seconds without a new file")
    _add_cluster_options(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("analyses", help="list the analyses (built-in and plugins) and their parameters")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these analyses")
    p.add_argument("--json", action="store_true", help="print each analysis's JSON Schema")
    p.set_defaults(func=cmd_analyses)

    p = sub.add_parser("demo", help="generate the sample data set and run the usual analyses on it")
    p.add_argument("--dir", default="sample_data")
    p.add_argument("--nav-shape", type=int, nargs="+", default=[256, 256])
    p.add_argument("--sig-shape", type=int, nargs=2, default=[128, 128])
    p.add_argument("--workers", type=_workers, help="worker processes of the embedded cluster (default: one per core)")
    _add_dashboard_option(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="generate the sample and open the explorer notebook in JupyterLab (127.0.0.1)")
    p.add_argument("--dir", default="sample_data", help="folder of the sample data set (default: sample_data)")
    p.add_argument("--nav-shape", type=int, nargs="+", default=[256, 256],
                   help="scan shape of the sample (default 256 256: 2 GiB; 64 64 is 128 MiB)")
    p.add_argument("--sig-shape", type=int, nargs=2, default=[128, 128])
    p.add_argument("--port", type=_whole("--port", 0, 65535, "TCP port; 0: any free one"),
                   help="port on 127.0.0.1 (default: 8888, or a free one if that is taken; 0: any free one)")
    p.add_argument("--notebook-dir", type=Path,
                   help="folder the lab serves; the package's notebooks missing there are copied in "
                        "(default: ./notebooks in a source checkout, else ./stem_explorer_notebooks)")
    p.add_argument("--notebook", default="explorer.ipynb", help="notebook to open (explorer, quickstart or custom_masks .ipynb)")
    p.set_defaults(func=cmd_lab)

    from .bench import available as bench_available

    if bench_available():  # the suite is in the source checkout, not in a wheel
        # options are the suite's own (`stem-explorer bench --help`): passed on untouched
        p = sub.add_parser("bench", help="run the benchmark suite (docs/performance.md)", add_help=False, prefix_chars="+")
        p.add_argument("bench_args", nargs=argparse.REMAINDER)
        p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ingest", help="write a data set as raw partitions (+ dataset.json) to a folder or HDFS")
    _add_open_options(p)
    p.add_argument("dest", help="destination folder or hdfs://namenode:port/path")
    p.add_argument("--partition-bytes", type=_size, default=128 * 2**20, metavar="SIZE",
                   help="bytes per partition file, whole frames (default 128M, HDFS's block size)")
    p.add_argument("--blocks-per-partition", type=_whole("--blocks-per-partition", 1, 2**20, "HDFS blocks per file"),
                   default=1, metavar="N",
                   help="HDFS blocks per partition file (default 1)")
    p.add_argument("--codec", choices=list(CODECS), default="none",
                   help="compress each file in chunks: bslz4 (Blosc bit-shuffle + LZ4), zstd1/3/5 (Blosc bit-shuffle "
                   "+ zstd at Blosc level 1/3/5), none (default; docs/compression.md compares them)")
    p.add_argument("--replication", type=_whole("--replication", 1, 512, "HDFS replicas per block"),
                   help="HDFS replicas per block (default: the cluster's)")
    p.add_argument("--webhdfs", metavar="HOST:PORT", help="the NameNode's WebHDFS address, when the Hadoop configuration does not say")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the data set or unfinished ingestion DEST holds; other files stay (default: resume)")
    p.add_argument("--workers", type=_workers, help="worker processes of the embedded cluster (default: one per core)")
    p.add_argument("--address", help="scheduler address (tcp://host:port) of an existing dask cluster")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("simulate", help="serve a file as a detector does, over its network protocol (tests, demos)")
    detectors = p.add_subparsers(dest="detector", required=True)
    m = detectors.add_parser("merlin", help="a Quantum Detectors Merlin: .mib frames on the MerlinEM control and data ports")
    m.add_argument("path", help="the .mib file whose frames to serve")
    m.add_argument("--nav-shape", type=int, nargs="+", metavar="N",
                   help="scan of one acquisition (default: the file's; more frames than the file cycle through it)")
    m.add_argument("--fps", type=float, help="frames per second (default: as fast as the receiver reads)")
    m.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    m.add_argument("--control-port", type=int, default=6341, help="control port (default 6341; 0: a free one)")
    m.add_argument("--data-port", type=int, default=6342, help="data port (default 6342; 0: a free one)")
    m.add_argument("--drop-frames", type=int, nargs="+", default=(), metavar="K",
                   help="acquisition frames to leave out, as a detector losing frames does (tests)")
    m.add_argument("--start-on-connect", action="store_true",
                   help="start an acquisition whenever a data client connects (receivers without control)")
    m.set_defaults(func=cmd_simulate_merlin)

    p = sub.add_parser("formats", help="list the readers")
    p.set_defaults(func=cmd_formats)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``stem-explorer`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StemExplorerError, FileExistsError) as exc:
        print(f"stem-explorer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
