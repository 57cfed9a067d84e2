"""Real weights on real labeled data (offline packages; see tvm_quant_ext.zoo)."""
import dataclasses

import pytest

from tvm_quant_ext import QConfig, zoo
from tvm_quant_ext.evaluate import evaluate


@pytest.fixture(scope="module")
def lite0():
    return zoo.load("efficientnet_lite0", batch_size=1)


def test_8bit_bias_measurably_worse_than_32bit_on_efficientnet_lite0(lite0):
    small = dataclasses.replace(lite0, calib=lite0.calib[:10])
    rows = evaluate(small, [QConfig(nbit_bias=8), QConfig(nbit_bias=32)],
                    eval_sets=["ai_benchmark_heldout_50"], limit=10, progress=False, log=lambda *a: None)
    eight, wide = rows
    assert eight.snr_db < wide.snr_db - 1.0, (eight.snr_db, wide.snr_db)
    assert eight.n_images == wide.n_images == 10
    # the stem has BatchNorm channels with gamma ~ 0: the bias rule must have fixed them
    assert any(a["layer"] == "_conv_stem" for a in wide.report.bias_adjustments)


def test_mnist_int8_per_channel_within_0p3_points_of_fp32_simulated_and_integer():
    model = zoo.load("mnist_cnn", batch_size=100)
    config = QConfig(nbit_bias=32, per_channel=True)
    rows = evaluate(model, [config, config.replace(mode="integer")], eval_sets=["mnist_5k"],
                    progress=False, log=lambda *a: None)
    for row in rows:
        assert row.n_labeled == 5000 and row.fp32_top1 == 4985  # 99.70%, the published fp32 figure
        assert row.fp32_top1 - row.quant_top1 <= 15, row.mode  # 0.3 points of 5000
    integer = rows[1]
    assert integer.mode == "integer" and integer.report.float_ops == []
    assert integer.lsb_vs_simulate <= 1.0 + 1e-9  # at every point, on all 5000 digits


def test_efficientnet_lite0_integer_keeps_accuracy_and_agrees_with_simulate(lite0):
    """20 labeled foolbox images and 10 held-out photos, calibration on photos 0-49."""
    labeled, heldout = lite0.eval_sets
    small = dataclasses.replace(lite0, eval_sets=[
        labeled, dataclasses.replace(heldout, images=heldout.images[:10])])
    config = QConfig(nbit_bias=32, per_channel=True)
    _, integer = evaluate(small, [config, config.replace(mode="integer")], progress=False,
                          log=lambda *a: None)
    assert integer.n_labeled == 20 and integer.quant_top1 >= 17
    assert integer.per_set[heldout.name]["agree"] >= 9  # >= 90% top-1 agreement with fp32
    assert integer.report.float_ops == []
    assert integer.lsb_vs_simulate <= 1.0 + 1e-9
