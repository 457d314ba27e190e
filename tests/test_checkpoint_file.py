"""The checkpoint file alone: every accumulator type round-trips bit for bit, and a
damaged file of any kind is the package's error (never a crash, a hang or a giant
allocation), told apart from a file that is not a checkpoint at all."""

import hashlib
import json
import struct

import numpy as np
import pytest

from stem_explorer.engine.checkpoint_file import (
    MAGIC,
    CheckpointDamaged,
    CheckpointState,
    is_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from stem_explorer.errors import CheckpointError

ACCUMULATORS = [
    np.array([[1.5, np.nan], [-np.inf, 2.0**-1074]]),  # a per-frame accumulator, NaN where not computed
    (7, np.arange(5, dtype=">f8"), np.zeros(5)),  # the std frame's moments (count, mean, M2)
    None,  # a maximum before any partition
    {3: np.arange(4, dtype=np.uint16).reshape(2, 2), (1, 2): [np.int64(5), np.float32(0.1)]},  # picked frames
    [0.1, float("nan"), True, "label", 2**70, np.bool_(True), np.complex64(1 + 2j)],
    np.zeros((0, 3), np.int32),
]


def _state(accumulators=ACCUMULATORS):
    return CheckpointState({"dataset": {"path": "/x", "files": [["x", 10, 5]]}}, [(0, 4), (4, 9)], [1], accumulators)


def _assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b)
    else:
        assert a == b


def test_every_accumulator_type_round_trips_bit_for_bit(tmp_path):
    write_checkpoint(tmp_path / "ck", _state())
    state = read_checkpoint(tmp_path / "ck")
    assert state.identity == _state().identity and state.layout == [(0, 4), (4, 9)] and state.done == [1]
    _assert_same(state.accumulators, ACCUMULATORS)
    assert state.accumulators[0].flags.writeable  # merges go on in place


def test_state_a_checkpoint_cannot_store_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(CheckpointError, match="cannot store an accumulator holding object values"):
        write_checkpoint(tmp_path / "ck", _state([object()]))
    with pytest.raises(CheckpointError, match="holding ndarray values"):
        write_checkpoint(tmp_path / "ck", _state([np.array([object()])]))
    assert list(tmp_path.iterdir()) == []


def test_a_file_without_the_marker_is_not_a_checkpoint(tmp_path):
    for content in [b"", b"STEM", b"PK\x03\x04 a zip", b"\x89HDF\r\n\x1a\n" + bytes(100)]:
        (tmp_path / "f").write_bytes(content)
        assert not is_checkpoint(tmp_path / "f")
        with pytest.raises(CheckpointError, match="is not a checkpoint of stem_explorer") as caught:
            read_checkpoint(tmp_path / "f")
        assert not isinstance(caught.value, CheckpointDamaged)


def test_truncated_or_altered_checkpoints_are_damaged(tmp_path):
    write_checkpoint(tmp_path / "ck", _state())
    blob = (tmp_path / "ck").read_bytes()
    rng = np.random.default_rng(0)
    cuts = sorted(set(rng.integers(len(MAGIC), len(blob), 60).tolist()) | {len(MAGIC), len(blob) - 1})
    flips = rng.integers(len(MAGIC), len(blob), 60).tolist()
    damaged = [blob[:cut] for cut in cuts] + [_flip(blob, at) for at in flips] + [blob + b"\0"]
    for i, content in enumerate(damaged):
        (tmp_path / "bad").write_bytes(content)
        with pytest.raises(CheckpointDamaged, match="is damaged"):
            read_checkpoint(tmp_path / "bad")


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


def _signed(header, arrays: bytes = b"") -> bytes:
    """A checkpoint whose digest is right around any header: the parser's own checks
    must catch what is wrong."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = MAGIC + struct.pack("<Q", len(text)) + text + arrays
    return body + hashlib.blake2b(body, digest_size=32).digest()


GOOD = {"version": 1, "identity": {}, "layout": [[0, 4]], "done": [0], "accumulators": [{"a": 0}],
        "arrays": [{"dtype": "<f8", "shape": [2], "nbytes": 16}]}
BAD_HEADERS = [
    b"not json", b"[]", b'{"version": 1}', b"\xff\xfe", b"[" * 100000 + b"]" * 100000,
    {**GOOD, "version": 2},
    {**GOOD, "identity": []},
    {**GOOD, "layout": "0-4"}, {**GOOD, "layout": [[0, 4, 8]]}, {**GOOD, "layout": [[-1, 4]]}, {**GOOD, "layout": [[0.5, 4]]},
    {**GOOD, "done": [True]}, {**GOOD, "done": None},
    {**GOOD, "accumulators": [{"a": 1}]}, {**GOOD, "accumulators": [{"a": -1}]}, {**GOOD, "accumulators": [{"x": 0}]},
    {**GOOD, "accumulators": [{"a": 0, "s": 0}]}, {**GOOD, "accumulators": [{"f": "zz"}]}, {**GOOD, "accumulators": [{"f": 3}]},
    {**GOOD, "accumulators": [{"d": [[{"l": []}, 1]]}]}, {**GOOD, "accumulators": [{"d": [[1]]}]}, {**GOOD, "accumulators": {"a": 0}},
    {**GOOD, "arrays": [{"dtype": "|O", "shape": [2], "nbytes": 16}]},
    {**GOOD, "arrays": [{"dtype": "<U4", "shape": [1], "nbytes": 16}]},
    {**GOOD, "arrays": [{"dtype": "<f8", "shape": [10**30], "nbytes": 8 * 10**30}]},
    {**GOOD, "arrays": [{"dtype": "<f8", "shape": [3], "nbytes": 24}]},
    {**GOOD, "arrays": [{"dtype": "<f8", "shape": [1], "nbytes": 8}]},
    {**GOOD, "arrays": [{"dtype": [["a", "<f8"]], "shape": [2], "nbytes": 16}]},
    {**GOOD, "arrays": [{"dtype": "(2,)<f8", "shape": [1], "nbytes": 16}]},
    {**GOOD, "arrays": [{"dtype": "<f8", "shape": [2]}]},
]


@pytest.mark.parametrize("header", BAD_HEADERS, ids=range(len(BAD_HEADERS)))
def test_a_checkpoint_whose_header_is_wrong_is_damaged(tmp_path, header):
    (tmp_path / "ck").write_bytes(_signed(header, bytes(16)))
    with pytest.raises(CheckpointDamaged, match="is damaged"):
        read_checkpoint(tmp_path / "ck")


def test_the_well_formed_header_above_reads(tmp_path):
    (tmp_path / "ck").write_bytes(_signed(GOOD, np.array([1.0, 2.0]).tobytes()))
    assert read_checkpoint(tmp_path / "ck").accumulators[0].tolist() == [1.0, 2.0]


def test_a_header_length_past_the_end_is_damaged(tmp_path):
    body = MAGIC + struct.pack("<Q", 2**63) + b"{}"
    (tmp_path / "ck").write_bytes(body + hashlib.blake2b(body, digest_size=32).digest())
    with pytest.raises(CheckpointDamaged, match="header runs past the end"):
        read_checkpoint(tmp_path / "ck")
