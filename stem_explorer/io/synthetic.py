"""Writers of synthetic detector files, headers included, each following its format's
description; the reader tests and the detector-format benchmark
(``python -m benchmarks --formats``) both write their files with them.

Every writer takes the frames as an array ``nav_shape + sig_shape`` or as
:class:`FrameBlocks`, which hands them out block by block (a memory map of a file
larger than memory, converted to the file's dtype one block at a time), so memory
stays bounded whatever the file size.

Specifications followed:

* Merlin ``.mib`` (:func:`write_mib`): the frame header of the Quantum Detectors
  Merlin manual ("MQ1" acquisition header: MQ1, sequence number, data offset, number
  of chips, width, height, pixel depth, sensor layout, chip select, time stamp,
  shutter time, counter, colour mode, gain mode, 8 thresholds, per-chip DACs, then the
  "MQ1A" extension: time stamp, shutter time in ns, counter depth; padded with NULs to
  the data offset), 12-bit pixels as big-endian uint16 and 24-bit as big-endian
  uint32, and the ``.hdr`` ``Key (unit):<TAB>value`` lines. ``U01`` packs eight
  pixels to a byte, first pixel in the most significant bit (this project's reader
  convention; Merlin's own 1-bit files store ``U08``).
* NanoMegas blockfile (:func:`write_blockfile`): the ASTAR layout documented by
  RosettaSciIO: ``IMGBLO``, uint16 magic 0x0102, offsets of the virtual bright-field
  image and of the frames, flags, DP_SZ, rotation, NX, NY, scan rotation, SX, SY, beam
  energy, SDP, camera length, acquisition time, 8 centring + 14 distortion float64;
  then the NX*NY VBF bytes; then per frame ``0x55 0xAA`` + uint32 index + DP_SZ^2 uint8.
* zarr (:func:`write_zarr`): v2 / v3 directory stores written by the zarr package (the
  format's reference implementation), the frames inside a group beside another array.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

__all__ = ["FrameBlocks", "mib_header", "write_blockfile", "write_mib", "write_zarr"]

#: Bytes of frames per block while writing.
BLOCK_BYTES = 64 * 2**20


class FrameBlocks:
    """Frames of ``data`` (an array ``nav_shape + sig_shape``, a :class:`numpy.memmap`
    say) handed out as blocks of consecutive frames in scan order, each converted to
    ``dtype`` (after ``transform``, e.g. clipping to a counter's range) when read."""

    def __init__(self, data, *, dtype=None, transform: Optional[Callable] = None,
                 block_bytes: int = BLOCK_BYTES):
        if data.ndim < 3:
            raise ValueError(f"frames need at least 3 dimensions, got shape {data.shape}")
        self.data = data
        self.nav_shape = tuple(int(n) for n in data.shape[:-2])
        self.sig_shape = tuple(int(n) for n in data.shape[-2:])
        self.dtype = np.dtype(dtype if dtype is not None else data.dtype)
        self.transform = transform
        self.block_bytes = int(block_bytes)

    @classmethod
    def of(cls, frames) -> "FrameBlocks":
        """``frames`` itself when it already is one, else its array wrapped."""
        return frames if isinstance(frames, cls) else cls(np.asarray(frames))

    @property
    def shape(self) -> tuple:
        return self.nav_shape + self.sig_shape

    @property
    def n_frames(self) -> int:
        return math.prod(self.nav_shape)

    def blocks(self, multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """``(first frame, frames (k, sy, sx))`` blocks; every block but the last holds a
        multiple of ``multiple`` frames (whole scan rows or whole chunks)."""
        frame_bytes = math.prod(self.sig_shape) * self.dtype.itemsize
        step = max(multiple, self.block_bytes // frame_bytes // multiple * multiple)
        flat = self.data.reshape((-1,) + self.sig_shape)
        for start in range(0, self.n_frames, step):
            block = np.asarray(flat[start:start + step])
            if self.transform is not None:
                block = self.transform(block)
            yield start, np.ascontiguousarray(block, dtype=self.dtype)


# -- Quantum Detectors Merlin .mib --------------------------------------------------------------
#: pixel depth -> dtype of the stored pixels (``U01`` is bit-packed uint8)
_MIB_DTYPES = {"U01": "u1", "U08": "u1", "U16": ">u2", "U32": ">u4"}


def mib_header(seq: int, *, width: int, height: int, pixel_depth: str, counter_depth: int,
               chips: int = 1, header_bytes: Optional[int] = None, timestamp=None) -> bytes:
    """One frame header as the Merlin software writes it (see the module notes).
    ``timestamp`` (a ``numpy.datetime64``) is the frame's time; by default frames come
    one second apart (``seq`` seconds past the minute)."""
    header_bytes = header_bytes or (384 if chips == 1 else 768)
    dacs = (["3RX"] + ["100"] * 27) * chips
    if timestamp is None:
        timestamp = np.datetime64(f"2024-01-01T00:00:{seq % 60:02d}", "ns")
    # the first time stamp to the microsecond (space-separated), the extension's to the ns
    micro, nano = (np.datetime_as_string(np.datetime64(timestamp, unit)) for unit in ("us", "ns"))
    fields = (
        ["MQ1", f"{seq:06d}", f"{header_bytes:05d}", f"{chips:02d}", f"{width:04d}", f"{height:04d}",
         pixel_depth, "   1x1" if chips == 1 else "   2x2", "01" if chips == 1 else "0F",
         micro.replace("T", " "), "0.002000", "0", "0", "0"]
        + ["0.000000E+0"] * 8 + dacs
        + ["MQ1A", nano + "Z", "2000000ns", str(counter_depth)]
    )
    return (",".join(fields) + ",").encode().ljust(header_bytes, b"\0")


def write_mib(path, frames, *, pixel_depth: str, counter_depth: int, hdr: Optional[dict] = None,
              headers: Optional[Sequence[bytes]] = None):
    """Frames ``(n, h, w)`` (or :class:`FrameBlocks`), each after its header; ``headers``
    replaces the generated ones, ``hdr`` writes those keys to a ``.hdr`` beside."""
    frames = FrameBlocks.of(frames)
    height, width = frames.sig_shape
    stored = np.dtype(_MIB_DTYPES.get(pixel_depth, frames.dtype))
    with open(path, "wb") as f:
        for start, block in frames.blocks():
            for i, frame in enumerate(block, start):
                f.write(headers[i] if headers else mib_header(
                    i + 1, width=width, height=height, pixel_depth=pixel_depth, counter_depth=counter_depth))
                if pixel_depth == "U01":
                    f.write(np.packbits(frame, axis=-1).tobytes())
                else:
                    f.write(np.asarray(frame, stored).tobytes())
    if hdr is not None:
        lines = ["HDR,\t"] + [f"{k}:\t{v}" for k, v in hdr.items()] + ["End\t"]
        Path(path).with_suffix(".hdr").write_text("\n".join(lines) + "\n")
    return path


# -- NanoMegas blockfile ---------------------------------------------------------------------
def write_blockfile(path, frames, *, version: int = 0x0102) -> str:
    """A blockfile of the 4-D uint8 frames ``(ny, nx, size, size)`` (square detector);
    the virtual bright-field image is the mean of each frame."""
    frames = FrameBlocks.of(frames)
    (ny, nx), (size, _) = frames.nav_shape, frames.sig_shape
    vbf_at = 0x1000
    frames_at = vbf_at + nx * ny
    head = struct.pack(
        "<6sHIIIHHHHHddIHId", b"IMGBLO", version, vbf_at, frames_at, 0, size, 0, nx, ny,
        1500, 1.5, 2.5, 200000, 100, 1200, 44000.25,
    ) + bytes(22 * 8)
    vbf = np.zeros(nx * ny, np.uint8)
    with open(path, "wb") as f:
        f.write(head.ljust(frames_at, b"\0"))  # the VBF bytes are filled in at the end
        for start, block in frames.blocks():
            vbf[start:start + len(block)] = block.reshape(len(block), -1).mean(axis=1)
            for i, frame in enumerate(block.astype(np.uint8, copy=False), start):
                f.write(b"\x55\xaa" + struct.pack("<I", i) + frame.tobytes())
        f.seek(vbf_at)
        f.write(vbf.tobytes())
    return str(path)


# -- zarr ------------------------------------------------------------------------------------
def write_zarr(path, frames, *, zarr_format: int, chunks: Sequence[int], codec=None,
               array: str = "entry/frames") -> str:
    """The frames as ``array`` of a zarr v2/v3 group (beside a ``meta/sum`` array),
    with ``chunks`` and the compressor ``codec`` (None: uncompressed)."""
    import zarr

    frames = FrameBlocks.of(frames)
    group = zarr.open_group(os.fspath(path), mode="w", zarr_format=zarr_format)
    group.create_array("meta/sum", shape=frames.sig_shape, dtype="f8")
    arr = group.create_array(array, shape=frames.shape, chunks=tuple(chunks), dtype=frames.dtype,
                             compressors=codec)
    per_row = math.prod(frames.nav_shape[1:])  # frames per first-axis index
    for start, block in frames.blocks(multiple=per_row * int(chunks[0])):
        first = start // per_row
        arr[first:first + len(block) // per_row] = block.reshape((-1,) + frames.shape[1:])
    return os.fspath(path)

