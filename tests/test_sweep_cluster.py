"""The sweep on a Dask cluster: a 2-worker LocalCluster gives the serial run's CSV (all but
the seconds) even when a worker dies mid-cell; an interrupted run resumes without recomputing
finished cells; paths are checked before any work; range counts add up exactly."""
import csv
import os

import numpy as np
import pytest

from tvm_quant_ext import cli, qmath, sweep
from tvm_quant_ext.sweep import cells as sweep_cells
from tvm_quant_ext.sweep import grid

# MNIST CNN, 4 cells (auto's second pass included), 40 images in ranges of 10, 8 calibration images
GRID = ["--model", "mnist_cnn", "--nbit-bias", "8", "32", "--calibrators", "max", "auto",
        "--granularity", "per-channel", "--num-images", "40", "--calib-images", "8", "--no-progress"]
CELLS = 4


def _sweep(out, *extra, cache):
    assert cli.main(["sweep", *GRID, "--out", str(out), "--calib-cache", str(cache), *extra]) == 0
    return _read(str(out) + ".csv")


def _read(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in sweep.TIME_COLUMNS} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    # a nested output folder that does not exist yet: created before the first cell
    return _sweep(root / "not" / "yet" / "there" / "sweep", cache=root / "calib")


def test_serial_rows(serial):
    assert len(serial) == CELLS and len({r["cell"] for r in serial}) == CELLS
    assert {r["calibrate_mode"] for r in serial} == {"max", "auto"}
    assert all(r["n_images"] == "40" and float(r["snr_db"]) > 20 for r in serial)


def test_two_workers_one_killed_mid_cell_give_the_serial_csv(serial, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "crashed"
    # the workers inherit this: the first evaluation task to start exits its process mid-cell
    monkeypatch.setenv(sweep.CRASH_ONCE_ENV, str(marker))
    rows = _sweep(tmp_path / "cluster", "--workers", "2", "--shard-images", "10", cache=tmp_path / "calib")
    assert marker.exists()  # a worker did die
    assert "Dask scheduler tcp://" in capsys.readouterr().out
    assert rows == serial  # nothing lost, nothing counted twice, same order
    # the sharded calibrations went to the cache: a second grid calibrates nothing
    assert len(os.listdir(tmp_path / "calib")) == 2


def test_interrupted_run_resumes_without_recomputing(serial, tmp_path, monkeypatch, capsys):
    out = tmp_path / "resume"
    log = sweep.RowLog(str(out) + ".csv")

    def stop_after_two(row):
        log.append(row)
        if len(log.done) == 2:
            raise KeyboardInterrupt  # as ^C after the second cell

    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(["mnist_cnn"], [8, 32], ["max", "auto"], [True], num_images=40, calib_images=8,
                    progress=False, on_row=stop_after_two)
    assert len(_read(str(out) + ".csv")) == 2
    computed = []
    real = grid.eval_task

    def counting(cell, *args, **kwargs):
        computed.append(cell.key)
        return real(cell, *args, **kwargs)

    monkeypatch.setattr(grid, "eval_task", counting)
    assert _sweep(out, cache=tmp_path / "calib") == serial
    assert "2 cell(s) already measured" in capsys.readouterr().out
    assert sorted(set(computed)) == sorted(r["cell"] for r in serial[2:])


def test_paths_checked_before_any_work(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr(sweep.worker, "load_model", no_model)
    missing = tmp_path / "nope" / "val.rec"
    assert cli.main(["sweep", "--model", "resnet18_v2", "--params", str(tmp_path / "r18.params"),
                     "--out", str(tmp_path / "o")]) == 2
    assert f"--params {tmp_path / 'r18.params'} does not exist" in capsys.readouterr().err
    assert cli.main(["sweep", *GRID, "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"--data {missing} does not exist" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["sweep", *GRID, "--out", str(blocker / "sub" / "o")]) == 2
    assert f"cannot create the folder {blocker / 'sub'}" in capsys.readouterr().err
    stale = tmp_path / "old.csv"
    stale.write_text("model,dataset,nbit_bias\nm,d,8\n")  # a CSV of an older version
    assert cli.main(["sweep", *GRID, "--out", str(tmp_path / "old"), "--no-calib-cache"]) == 2
    assert f"{stale} exists with other columns" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_unreadable_data_is_named(tmp_path, capsys):
    data = tmp_path / "images"
    data.mkdir()
    data.chmod(0)
    assert cli.main(["sweep", *GRID, "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert f"--data {data} is not readable" in capsys.readouterr().err


def test_range_counts_add_exactly():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((37, 10)).astype("float32")
    logits = reference + 0.05 * rng.standard_normal((37, 10)).astype("float32")
    labels = rng.integers(0, 10, 37)
    whole = sweep_cells.count(logits, reference, labels)
    parts = [sweep_cells.count(logits[a:b], reference[a:b], labels[a:b])
             for a, b in sweep_cells.ranges(37, 8, 1)]
    total = sweep_cells.Counts()
    for part in parts[::-1]:  # in any order
        total = total + part
    assert (total.n, total.quant_top1, total.quant_top5, total.agree, total.signal, total.noise) == \
        (whole.n, whole.quant_top1, whole.quant_top5, whole.agree, whole.signal, whole.noise)
    assert total.snr_db() == whole.snr_db()
    assert abs(whole.snr_db() - qmath.snr_db(reference, logits)) < 1e-9
    assert sweep_cells.ranges(10, 4, 3) == [(0, 3), (3, 6), (6, 9)]  # batch 3: 9 images, as one pass


def test_a_line_cut_by_a_kill_is_dropped(tmp_path):
    path = str(tmp_path / "s.csv")
    log = sweep.RowLog(path)
    full = {k: "1" for k in sweep.CSV_COLUMNS}
    log.append({**full, "cell": "a"})
    with open(path, "a") as f:
        f.write("b,mnist")  # half a row: the process died while writing it
    assert list(sweep.RowLog(path).done) == ["a"]
    assert len(_read(path)) == 1
