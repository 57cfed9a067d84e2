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


def test_mnist_int8_per_channel_within_0p3_points_of_fp32():
    model = zoo.load("mnist_cnn", batch_size=100)
    (row,) = evaluate(model, [QConfig(nbit_bias=32, per_channel=True)], eval_sets=["mnist_5k"],
                      progress=False, log=lambda *a: None)
    assert row.n_labeled == 5000 and row.fp32_top1 == 4985  # 99.70%, the published fp32 figure
    assert row.fp32_top1 - row.quant_top1 <= 15  # 0.3 points of 5000
