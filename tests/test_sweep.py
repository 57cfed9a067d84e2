"""The bias-precision sweep end to end on an ImageNet-style RecordIO file made from the 20
labeled foolbox ImageNet images (EfficientNet-Lite0, one cell, a few images)."""
import glob
import os
import re

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from tvm_quant_ext import cli, qmath, sweep, zoo


@pytest.fixture(scope="module")
def foolbox_rec(tmp_path_factory):
    files = sorted(glob.glob(os.path.join(zoo.package_file("foolbox", "data"), "imagenet_*_*.jpg")))
    assert len(files) == 20
    labels = [int(re.search(r"_(\d+)\.jpg$", f).group(1)) for f in files]
    root = tmp_path_factory.mktemp("rec")
    rec, idx = str(root / "val.rec"), str(root / "val.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for i, (f, label) in enumerate(zip(files, labels)):
        # pack_img would re-encode through OpenCV (not installed); the JPEG bytes go in as they are
        with open(f, "rb") as fh:
            writer.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), i, 0), fh.read()))
    writer.close()
    return rec, files, labels


def test_records_read_back_with_labels(foolbox_rec):
    rec, files, labels = foolbox_rec
    pairs = sweep.read_records(rec, 25)
    assert [label for _, label in pairs] == labels
    np.testing.assert_array_equal(np.asarray(pairs[3][0].convert("RGB")),
                                  np.asarray(Image.open(files[3]).convert("RGB")))


def test_sweep_on_efficientnet_lite0_from_rec(foolbox_rec, tmp_path):
    rec, _, labels = foolbox_rec
    rows = sweep.sweep(["efficientnet_lite0"], [16], ["max"], [True], data=rec, num_images=3,
                       calib_images=2, batch_size=1, progress=False)
    (row,) = rows
    assert row["model"] == "efficientnet_lite0" and row["dataset"] == "val.rec"
    assert (row["nbit_bias"], row["calibrate_mode"], row["weight_scale"], row["per_channel"]) == (16, "max", "max", True)
    assert row["n_images"] == 3 and row["calib_images"] == 2
    # fp32 Lite0 gets 18 of the 20 right; the first three are among them
    assert row["fp32_top1"] == 1.0 and row["fp32_top5"] == 1.0
    assert 0.0 <= row["quant_top1"] <= row["quant_top5"] <= 1.0
    paths = sweep.write_outputs(rows, str(tmp_path / "lite0"))
    read = sweep.read_csv(paths[0])
    assert len(read) == 1 and set(read[0]) == set(sweep.CSV_COLUMNS)
    assert read[0]["nbit_bias"] == "16" and read[0]["fp32_top1"] == "1.0000"
    assert "| efficientnet_lite0 | val.rec (3) | max (max) | per-channel | 16 | 100.00 |" in open(paths[1]).read()
    assert os.path.getsize(paths[2]) > 1000  # the PNG


def test_sweep_validates_calibrators_and_params(capsys):
    assert cli.main(["sweep", "--model", "fashion_resnet_v2", "--calibrators", "nope"]) == 2
    assert "unknown calibrator(s) ['nope']" in capsys.readouterr().err
    assert cli.main(["sweep", "--model", "resnet18_v2", "--calibrators", "max"]) == 2
    assert "needs --params" in capsys.readouterr().err


def test_two_models_of_one_name_share_no_stage():
    """Each model's cells quantize that model: a cache keyed by the model's name alone (once a
    module-level memo) handed the first model's prepared graph and calibration to the second."""
    from graphs import tiny_resnet

    images = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype("float32")
    data = sweep.SweepData("random", images, np.zeros(4, np.int64), images[:2])
    config = sweep.make_config(32, "max", True)
    outputs = []
    for seed in (0, 1):
        mod, params = tiny_resnet(seed=seed)
        runner = sweep.make_runner(sweep.SweepModel("tiny", mod, params, 1, None), data)
        reference = sweep.fp32_logits(runner, data, 1)
        quantized = np.concatenate([runner.compiled(config)(x) for x in images[:, None]])
        outputs.append((reference, quantized))
    (ref0, q0), (ref1, q1) = outputs
    assert not np.allclose(ref0, ref1, atol=1e-3)  # two different models
    for ref, q in outputs:  # each quantized model is close to its own float model
        assert qmath.snr_db(ref, q) > 20
    assert qmath.snr_db(ref1, q0) < 10 and qmath.snr_db(ref0, q1) < 10
