"""Compression survey (issue 17): each codec of ``stem-explorer ingest --codec`` on
the project's sample, on the real detector files and on synthetic counting data at
several doses, against the uncompressed files on the same disk in the same run.

``python -m benchmarks --compression`` (options: ``python -m benchmarks --compression --help``).

1. Data sets, written once into ``--dir`` and reused: the sample of ``stem-explorer
   sample`` (:func:`stem_explorer.sample.make_sample`, uint16, ``--sample-nav``); every
   data set of ``../shared/realdata/MANIFEST.json`` that opens (skipped when absent);
   and Poisson counting data of ``--frames`` frames of ``--sig`` pixels (uint16) at each
   dose of ``--doses`` (mean electrons per pixel; a bright-field disk holds half the
   electrons, the rest is spread over the detector). Each is written as raw partitions
   (``--partition-mib`` per file, uncompressed) and once per codec.
2. Per codec, on one core of this process: the compression ratio (uncompressed bytes
   over stored bytes); encoding (:class:`~stem_explorer.io.partitioned.chunks.ChunkEncoder`
   over frames in memory) and decoding (the workers' reader, page cache warm, one
   decode thread: read, CRC-32C check and decode) in GB/s of uncompressed data.
3. End to end, cold: before each pass the workers drop their mappings and every file
   of the data set leaves the page cache (``posix_fadvise(DONTNEED)`` per file, and
   ``echo 1 > /proc/sys/vm/drop_caches`` where pages stay and it is writable; the
   resident fraction left is recorded); a virtual bright-field disk through :class:`stem_explorer.Session` on an
   embedded LocalCluster (``--workers``), GB/s of uncompressed data. The disk's read
   rate is measured in the same run on the uncompressed files, cold: ``preadv`` into
   an 8 MiB buffer, the files shared among the workers (:mod:`benchmarks.plainread`).

Target (counting data, <= 1 electron per pixel): virtual image >= 3 x the disk's rate.
The machine's load average is recorded before and after: on a shared machine the
per-core figures fall with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import bigdata, data, plainread, priority, report
from .workloads import disk_mask

MiB = 2**20
#: Target of issue 17: a virtual image of counting data at this multiple of the disk's rate.
TARGET_VS_DISK = 3.0
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _log(message: str) -> None:
    print(f"[bench-compression] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    from stem_explorer.io.partitioned.codecs import CODECS

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    p.add_argument("--dir", default=str(root / "bench_data" / "compression"), help="folder of the data sets")
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes (default 2)")
    p.add_argument("--codecs", nargs="+", default=[c for c in CODECS if c != "none"], choices=list(CODECS),
                   help="codecs to survey (default: all)")
    p.add_argument("--sample-nav", type=int, nargs=2, default=[128, 128], metavar=("NY", "NX"),
                   help="scan of the sample (128 x 128 frames of 128 x 128 uint16, 512 MiB; 256 256 is the "
                   "2 GiB sample of stem-explorer sample)")
    p.add_argument("--doses", type=float, nargs="+", default=[0.05, 0.25, 1.0, 4.0],
                   help="mean electrons per pixel of the counting data sets")
    p.add_argument("--frames", type=data.at_least_one, default=4096, help="frames of each counting data set")
    p.add_argument("--sig", type=data.at_least_one, default=256, help="detector side of the counting data")
    p.add_argument("--partition-mib", type=data.at_least_one, default=128, help="uncompressed MiB per file")
    p.add_argument("--speed-mib", type=data.at_least_one, default=256,
                   help="uncompressed MiB timed for the per-core encode and decode figures")
    p.add_argument("--realdata", default=str(REALDATA), help="folder of the real detector files")
    p.add_argument("--no-realdata", action="store_true", help="skip the real detector files")
    p.add_argument("--no-sample", action="store_true", help="skip the sample")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout: table or JSON lines")
    return p


# -- data sets ---------------------------------------------------------------------------
def counting_frames(n_frames: int, sig: int, dose: float, seed: int) -> np.ndarray:
    """Poisson counts of ``n_frames`` frames, ``dose`` electrons per pixel on average:
    half the electrons in a bright-field disk (radius sig / 8), half spread evenly."""
    y, x = np.indices((sig, sig))
    disk = ((y - sig / 2) ** 2 + (x - sig / 2) ** 2 <= (sig / 8) ** 2).astype(np.float64)
    lam = dose * sig * sig * (0.5 * disk / disk.sum() + 0.5 / (sig * sig))
    return np.random.default_rng(seed).poisson(lam, size=(n_frames, sig, sig)).astype(np.uint16)


def _write_counting(path: Path, args, dose: float) -> None:
    from stem_explorer.io.partitioned import RawPartitionWriter

    sig, n = args.sig, args.frames
    block = max(1, 64 * MiB // (sig * sig * 2))
    metadata = {"electrons_per_pixel": dose, "electrons_per_frame": dose * sig * sig}
    with RawPartitionWriter(path, nav_shape=(n,), sig_shape=(sig, sig), dtype="uint16", metadata=metadata,
                            partition_bytes=args.partition_mib * MiB) as writer:
        for i, start in enumerate(range(0, n, block)):
            writer.write(counting_frames(min(block, n - start), sig, dose, seed=i))


def _sources(args) -> list:
    """``(name, kind, make)``: ``make(path)`` writes the uncompressed raw partitions."""
    from stem_explorer import open_dataset
    from stem_explorer.io.partitioned import write_raw_partitions

    out = []
    if not args.no_sample:
        ny, nx = args.sample_nav

        def sample(path, ny=ny, nx=nx):
            from stem_explorer.sample import make_sample

            make_sample(path, nav_shape=(ny, nx), sig_shape=data.SIG, dtype="uint16", format="raw",
                        partition_bytes=args.partition_mib * MiB)

        out.append((f"sample {ny}x{nx}x128x128 u16", "sample", sample))
    if not args.no_realdata:
        manifest = Path(args.realdata) / "MANIFEST.json"
        entries = json.loads(manifest.read_text()) if manifest.is_file() else []
        for entry in entries:
            def real(path, entry=entry):
                ds = open_dataset(Path(args.realdata) / entry["files"][0])
                write_raw_partitions(path, ds, partition_bytes=args.partition_mib * MiB)

            out.append((entry["key"], "real", real))
    for dose in args.doses:
        out.append((f"counting {dose:g} e/px", "counting", lambda path, dose=dose: _write_counting(path, args, dose)))
    return out


def _folder(root: Path, name: str, codec: str) -> Path:
    return root / (name.replace(" ", "_").replace("/", "-") + "." + codec)


def ensure_sets(args, name: str, make) -> dict:
    """The data set ``name`` uncompressed and in every codec: ``{codec: path}``."""
    from stem_explorer.io.partitioned import open_raw_partitions, write_raw_partitions

    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    raw = _folder(root, name, "none")
    if not (raw / "dataset.json").exists():
        _log(f"writing {raw.name}")
        make(raw)
    paths = {"none": raw}
    for codec in args.codecs:
        path = paths[codec] = _folder(root, name, codec)
        if not (path / "dataset.json").exists():
            _log(f"writing {path.name}")
            write_raw_partitions(path, open_raw_partitions(raw), partition_bytes=args.partition_mib * MiB,
                                 codec=codec, metadata={})
    return paths


# -- per-core figures --------------------------------------------------------------------
def _speed_frames(ds, limit: int) -> int:
    return max(1, min(ds.n_frames, limit // ds.frame_bytes))


def encode_gbps(ds, codec: str, limit: int) -> float:
    """One core: ChunkEncoder over the first ``limit`` bytes of frames (in memory)."""
    from stem_explorer.io.partitioned.chunks import ChunkEncoder
    from stem_explorer.io.partitioned.codecs import ChunkLayout

    frames = ds.read_frames(0, _speed_frames(ds, limit))
    layout = ChunkLayout.of(codec, ds.frame_bytes, len(frames))
    encoder = ChunkEncoder(layout, ds.dtype, ds.sig_shape, "benchmark")
    t0 = time.perf_counter()
    for _ in encoder.feed(frames):
        pass
    for _ in encoder.flush():
        pass
    return frames.nbytes / (time.perf_counter() - t0) / 1e9


def decode_gbps(ds, limit: int) -> float:
    """One core: the reader (one decode thread) over the first ``limit`` bytes, page
    cache warm (read once before timing)."""
    from stem_explorer.io.partitioned import chunks

    n = _speed_frames(ds, limit)
    step = max(ds.source.frame_alignment, 32 * MiB // ds.frame_bytes // ds.source.frame_alignment
               * ds.source.frame_alignment)
    saved = os.environ.get(chunks.DECODE_THREADS_ENV)
    os.environ[chunks.DECODE_THREADS_ENV] = "1"
    try:
        with ds.source.open() as reader:
            for a in range(0, n, step):
                reader.read(a, min(n, a + step))
            t0 = time.perf_counter()
            for a in range(0, n, step):
                reader.read(a, min(n, a + step))
            seconds = time.perf_counter() - t0
    finally:
        if saved is None:
            del os.environ[chunks.DECODE_THREADS_ENV]
        else:
            os.environ[chunks.DECODE_THREADS_ENV] = saved
    return n * ds.frame_bytes / seconds / 1e9


# -- cold passes -------------------------------------------------------------------------
def _files(path: Path) -> list[str]:
    return sorted(str(p) for p in path.iterdir() if p.name.startswith("part-"))


def make_cold(client, path: Path) -> dict:
    """Drop the data set's files from the page cache (the workers' mappings first):
    ``posix_fadvise(DONTNEED)`` per file, and ``drop_caches`` (root) only when pages
    stay resident, since it empties the cache of every process on the machine. How,
    and the resident fraction left."""
    client.run(bigdata._release_mappings)
    bigdata._release_mappings()  # this process read frames too (the per-core figures)
    files = _files(path)
    for name in files:
        bigdata.drop_cache(name)
    how = "fadvise"
    if _resident(files) > 0.05:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("1\n")
            how = "fadvise + drop_caches"
        except OSError:
            pass
    return {"cold_by": how, "resident_before": _resident(files)}


def _resident(files: list[str]) -> float:
    sizes = [os.path.getsize(f) for f in files]
    return sum(bigdata.resident_fraction(f) * s for f, s in zip(files, sizes)) / max(1, sum(sizes))


def _read_share(paths: list[str]):
    """On a worker: read whole files with preadv; ``(t0, t1, nbytes)``."""
    t0, total = time.monotonic(), 0
    for path in paths:
        total += plainread.preadv_share(path, 0, os.path.getsize(path))[2]
    return t0, time.monotonic(), total


def disk_read_gbps(client, path: Path) -> dict:
    """The files of ``path``, cold, shared among the workers: GB/s."""
    cold = make_cold(client, path)
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    files = _files(path)
    futures = [client.submit(_read_share, files[i::len(workers)], workers=[w], allow_other_workers=False, pure=False)
               for i, w in enumerate(workers)]
    stamps = client.gather(futures)
    span = max(s[1] for s in stamps) - min(s[0] for s in stamps)
    return {"disk_read_gbps": sum(s[2] for s in stamps) / span / 1e9, **cold}


def virtual_image_pass(client, path: Path) -> dict:
    """One cold pass of a virtual bright-field disk: GB/s of uncompressed data."""
    import stem_explorer as se

    ds = se.open_dataset(str(path))
    analysis = se.VirtualDetector({"bf": disk_mask(ds.sig_shape)})
    with se.Session(ds, client=client) as session:
        session.run(analysis).result()  # kernels compiled, codecs loaded on the workers
        cold = make_cold(client, path)
        t0 = time.perf_counter()
        session.run(analysis).result()
        seconds = time.perf_counter() - t0
    return {"vd_s": seconds, "vd_gbps": ds.nbytes / seconds / 1e9, **cold}


# -- the survey --------------------------------------------------------------------------
def _electrons_per_pixel(ds) -> float:
    frames = ds.read_frames(0, min(ds.n_frames, 64))
    return float(frames.mean()) if frames.dtype.kind in "iub" else float("nan")


def survey(client, args, name: str, kind: str, make) -> list[dict]:
    from stem_explorer.io.partitioned import open_raw_partitions

    paths = ensure_sets(args, name, make)
    raw = open_raw_partitions(paths["none"])
    limit = args.speed_mib * MiB
    base = {"kind": "compression", "data": name, "data_kind": kind, "nav_shape": list(raw.nav_shape),
            "sig_shape": list(raw.sig_shape), "dtype": raw.dtype.str, "nbytes": raw.nbytes,
            "mean_per_pixel": _electrons_per_pixel(raw)}
    disk = disk_read_gbps(client, paths["none"])
    _log(f"{name}: disk read {disk['disk_read_gbps']:.2f} GB/s (resident before {disk['resident_before']:.1%})")
    records = []
    for codec, path in paths.items():
        ds = open_raw_partitions(path)
        stored = sum(os.path.getsize(f) for f in _files(path))
        record = {**base, "codec": codec, "stored_bytes": stored, "ratio": raw.nbytes / stored,
                  "disk_read_gbps": disk["disk_read_gbps"]}
        if codec != "none":
            record["encode_gbps_core"] = encode_gbps(raw, codec, limit)
            record["decode_gbps_core"] = decode_gbps(ds, limit)
        record.update(virtual_image_pass(client, path))
        record["vs_disk"] = record["vd_gbps"] / disk["disk_read_gbps"]
        records.append(record)
        _log(f"{name} {codec}: ratio {record['ratio']:.2f}, virtual image {record['vd_gbps']:.2f} GB/s "
             f"({record['vs_disk']:.2f} x disk), resident before {record['resident_before']:.1%}")
    raw_vd = records[0]["vd_gbps"]
    for r in records:
        r["vs_raw"] = r["vd_gbps"] / raw_vd
        counting = kind == "counting" and r["mean_per_pixel"] <= 1.0
        r["target"] = f">= {TARGET_VS_DISK:g} x disk" if counting and r["codec"] != "none" else ""
        r["pass"] = (r["vs_disk"] >= TARGET_VS_DISK) if r["target"] else None
    return records


def _run_record(args) -> dict:
    import stem_explorer

    return {"kind": "compression_run", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": args.workers,
            "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg(),
            "python": platform.python_version(), "stem_explorer": stem_explorer.__version__}


def measure(args) -> list[dict]:
    from distributed import Client

    from stem_explorer.engine.cluster import start_local_cluster

    records = [_run_record(args)]
    _log(f"starting a LocalCluster with {args.workers} workers (normal priority)")
    with start_local_cluster(args.workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        records[0]["normal_priority"] = priority.normal_priority(client)
        for name, kind, make in _sources(args):
            try:
                records += survey(client, args, name, kind, make)
            except Exception as exc:  # noqa: BLE001 -- a real file that does not open: say so, go on
                _log(f"{name}: skipped ({type(exc).__name__}: {exc})")
                records.append({"kind": "compression_skipped", "data": name, "error": f"{type(exc).__name__}: {exc}"})
    records[0]["load_after"] = os.getloadavg()
    return records


def table(records: list[dict]) -> str:
    run = records[0]
    lines = [
        f"{run['workers']} workers on {run['cores']} cores; load average before {run['load_before'][0]:.1f}, "
        f"after {run['load_after'][0]:.1f}",
        "",
        "| data | mean/px | codec | ratio | encode GB/s/core | decode GB/s/core | virtual image GB/s (cold) | "
        "vs raw | disk GB/s | vs disk | resident before | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in records if r["kind"] == "compression"):
        enc = f"{r['encode_gbps_core']:.2f}" if "encode_gbps_core" in r else ""
        dec = f"{r['decode_gbps_core']:.2f}" if "decode_gbps_core" in r else ""
        verdict = "" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
        lines.append(
            f"| {r['data']} | {r['mean_per_pixel']:.3g} | {r['codec']} | {r['ratio']:.2f} | {enc} | {dec} | "
            f"{r['vd_gbps']:.3g} | {r['vs_raw']:.2f} | {r['disk_read_gbps']:.3g} | {r['vs_disk']:.2f} | "
            f"{r['resident_before']:.0%} | {r['target']} {verdict} |"
        )
    for r in (r for r in records if r["kind"] == "compression_skipped"):
        lines.append(f"\nskipped {r['data']}: {r['error']}")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --compression") -> int:
    """``python -m benchmarks --compression``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)
