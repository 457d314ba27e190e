"""Numeric options are checked where they come in (Session, Session.run, the CLI):
a bad count or size is an OptionError naming the option, its range and the fix,
never a cluster of no workers that waits forever or a giant allocation."""

import math
import re

import numpy as np
import pytest

from stem_explorer import Session, SumFrame
from stem_explorer.cli import main
from stem_explorer.errors import OptionError

NOT_WHOLE = [True, False, 1.5, math.nan, math.inf, -math.inf, "2"]


@pytest.fixture(scope="module")
def data():
    return np.zeros((4, 4, 8, 8), np.uint16)


@pytest.fixture(scope="module")
def client():
    """A real cluster in this process: option checks come before any work is sent."""
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        yield c


@pytest.mark.parametrize("value", [-2, -1, 0, 10**6, *NOT_WHOLE])
def test_session_refuses_a_bad_worker_count(data, value):
    with pytest.raises(OptionError, match=r"n_workers must be a whole number from 1 to \d+ .* got .*one per core"):
        Session(data, n_workers=value)


@pytest.mark.parametrize("name, value", [
    ("partition_bytes", 0), ("partition_bytes", -1), ("partition_bytes", 2**60), ("partition_bytes", math.nan),
    ("partition_bytes", True), ("partition_bytes", "1M"), ("partition_bytes", 10.5),
    ("tile_bytes", 0), ("tile_bytes", -4096), ("tile_bytes", 2**31), ("tile_bytes", math.inf),
])
def test_session_refuses_bad_sizes(data, client, name, value):
    with pytest.raises(OptionError, match=rf"{name} must be a whole number from 1 to [\d,]+ \(bytes of .*\), got"):
        Session(data, client=client, **{name: value})


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, True, "10", 10**6])
def test_session_refuses_a_bad_timeout(data, value):
    with pytest.raises(OptionError, match="timeout must be a number of seconds above 0 and at most 86400"):
        Session(data, address="tcp://127.0.0.1:9", timeout=value)


def test_embedded_cluster_options_need_the_embedded_cluster(data, client):
    with pytest.raises(OptionError, match="n_workers and dashboard are options of the embedded cluster"):
        Session(data, client=client, n_workers=2)
    with pytest.raises(OptionError, match="n_workers and dashboard are options of the embedded cluster"):
        Session(data, address="tcp://127.0.0.1:9", dashboard=True)
    with pytest.raises(OptionError, match="dashboard must be True or False, got 'yes'"):
        Session(data, dashboard="yes")


def test_good_values_pass(data, client):
    with Session(data, client=client, partition_bytes=128e3, tile_bytes=np.int64(4096), timeout=5) as session:
        assert (session.partition_bytes, session.tile_bytes) == (128000, 4096)
        assert session.compute(SumFrame(), preview_stride=0)["sum/frame"].data.shape == (8, 8)


@pytest.mark.parametrize("value", [-1, 5, 2.5, math.nan, True])
def test_run_refuses_a_bad_preview_stride(data, client, value):
    with Session(data, client=client) as session:
        with pytest.raises(OptionError, match=r"preview_stride must be a whole number from 0 to 4 .*0 or 1 turns"):
            session.run(SumFrame(), preview_stride=value)


@pytest.mark.parametrize("args, message", [
    (["run", "x.h5", "--workers", "-1"], r"argument --workers: --workers must be a whole number from 1 to \d+"),
    (["run", "x.h5", "--workers", "0"], r"--workers must be a whole number from 1 to \d+"),
    (["run", "x.h5", "--workers", "nan"], r"--workers must be a whole number .* got nan"),
    (["run", "x.h5", "--workers", "two"], r"argument --workers: 'two' is not a number"),
    (["demo", "--workers", "100000"], r"--workers must be a whole number from 1 to \d+ .* got 100000"),
    (["info", "x.h5", "--workers", "0"], r"--workers must be a whole number from 1 to 65,536"),
    (["ingest", "x.h5", "out", "--workers", "-3"], r"--workers must be a whole number from 1 to"),
    (["ingest", "x.h5", "out", "--partition-bytes", "-5"], r"--partition-bytes: the size must be a whole number from 1"),
    (["ingest", "x.h5", "out", "--partition-bytes", "inf"], r"--partition-bytes: the size must be .* got inf"),
    (["ingest", "x.h5", "out", "--partition-bytes", "0.5"], r"--partition-bytes: the size must be .* got 0"),
    (["ingest", "x.h5", "out", "--blocks-per-partition", "0"], r"--blocks-per-partition must be a whole number"),
    (["ingest", "x.h5", "out", "--replication", "-1"], r"--replication must be a whole number from 1 to 512"),
    (["lab", "--port", "70000"], r"--port must be a whole number from 0 to 65,535"),
])
def test_cli_refuses_bad_numbers_before_doing_anything(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # nothing was started or written
