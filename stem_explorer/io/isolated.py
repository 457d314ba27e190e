"""Reading frames in a separate process, where a crashing decoder cannot take this
process down.

Compression filters are native code that trusts the bytes it is given: four corrupt
bytes in a bitshuffle-LZ4 chunk make hdf5plugin's filter read out of bounds and the
process dies of SIGSEGV, with no Python exception to catch. In a dask worker that
costs the worker (the nanny starts another); in a notebook it costs the user's
kernel. So this process never decodes such frames itself (sources that do say so:
:attr:`FrameSource.decodes`): :func:`read_isolated` reads them in a child Python
process, which announces each chunk-aligned range before decoding it, so when the
child dies the range that killed it is known and reported as a :class:`FormatError`.

The child is a fresh interpreter (``python -c``), never a fork (a fork of a process
running dask's threads can deadlock) nor ``multiprocessing``'s spawn (which re-imports
the caller's ``__main__``, i.e. a user's unguarded script).
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import DataSetError, FormatError
from .base import FrameSource

#: The child imports this very package: the directory holding it replaces the child's
#: first ``sys.path`` entry (the working directory, where a stray module could shadow
#: ours), so relative paths in the source still resolve from the caller's directory.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = (
    f"import sys; sys.path[0] = {_PACKAGE_PARENT!r}; "
    "from stem_explorer.io.isolated import serve; serve()"
)


def read_isolated(
    source: FrameSource,
    ranges: Sequence[tuple[int, int]],
    *,
    payload: Any = None,
    keep: bool = True,
    timeout: Optional[float] = None,
) -> list:
    """Read the frame ``ranges`` (``(start, stop)`` pairs, in order) of ``source`` in a
    separate process.

    Returns the frames of each range (copies) with ``keep``, else an empty list (a
    check that every range decodes). A range whose decoding kills the child raises a
    :class:`FormatError` naming its first frame and the file; an error the child's
    reader raises (a truncated file, a filter reporting damage) is raised here as
    itself. Make the ranges chunk-aligned and as short as the storage allows: they
    are what a crash is located to. ``timeout`` (seconds, None: none) bounds the
    child's run; a child past it is killed and :class:`TimeoutError` raised.
    """
    import cloudpickle  # sources of tests and notebooks may be pickled by value

    request = cloudpickle.dumps((source, payload, [(int(a), int(b)) for a, b in ranges], keep))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = child.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise TimeoutError(f"reading frames of {_where(source)} in a separate process took over {timeout:g} s") from None
    frames, reading, error = [], None, None
    for message in _messages(out):
        kind = message[0]
        if kind == "reading":
            reading = message[1:]
        elif kind == "frames":
            frames.append(message[1])
        elif kind == "error":
            error = message[1]
        elif kind == "done":
            return frames
    if error is not None:
        raise error
    if child.returncode < 0:
        how = _signal_name(-child.returncode)
        if reading is not None:
            raise _corrupt_chunk_error(source, *reading, how)
        raise FormatError(
            f"opening {_where(source)} crashed the process reading it ({how}); the file is "
            f"damaged: copy or export it again from the original"
        )
    detail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
    raise DataSetError(f"the process reading frames of {_where(source)} ended without an answer: {detail[0]}")


def chunk_ranges(source: FrameSource, start: int, stop: int) -> list[tuple[int, int]]:
    """Frames ``start:stop`` cut where the source's chunks (``frame_alignment`` frames)
    end: the finest ranges a crash can be located to."""
    align = max(1, source.frame_alignment)
    edges = [start, *range((start // align + 1) * align, stop, align), stop]
    return list(zip(edges[:-1], edges[1:]))


def _corrupt_chunk_error(source: FrameSource, start: int, stop: int, how: str) -> FormatError:
    """The error for frames ``start:stop`` of ``source`` whose decoding crashed a process."""
    frames = f"frame {start}" if stop - start == 1 else f"frames {start} to {stop - 1}"
    return FormatError(
        f"corrupt chunk at frame {start} of {_where(source)}: decoding {frames} crashed a "
        f"separate reading process ({how}); the file is damaged there: copy or export it "
        f"again from the original"
    )


def _signal_name(number: int) -> str:
    """``SIGSEGV`` for 11, say."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _where(source: FrameSource) -> str:
    """The file (and dataset inside it) a source reads, as an error names it."""
    path = getattr(source, "path", None)
    inner = getattr(source, "dataset", None) or getattr(source, "array", None)
    if path is None:
        return repr(source)
    return f"{path!r}" + (f" (dataset {inner!r})" if isinstance(inner, str) else "")


def _messages(out: bytes):
    """The child's messages, up to the first incomplete one (a crash mid-write)."""
    stream = io.BytesIO(out)
    while stream.tell() < len(out):
        try:
            yield pickle.load(stream)
        except Exception:  # cut short by the crash
            return


def serve() -> None:
    """The child's side: read the request from stdin, answer on stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def send(*message) -> None:
        pickle.dump(message, stdout, protocol=5)
        stdout.flush()  # a crash right after must not lose it

    source, payload, ranges, keep = pickle.load(stdin)
    try:
        with source.open(payload) as reader:
            for start, stop in ranges:
                send("reading", start, stop)
                frames = np.array(reader.read(start, stop), copy=True)  # every byte, even of a mapping
                if keep:
                    send("frames", frames)
    except Exception as exc:
        send("error", exc if _picklable(exc) else DataSetError(f"{type(exc).__name__}: {exc}"))
        return
    send("done")


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True
