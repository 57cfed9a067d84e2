"""Calibration in shards of the data (what a cluster's workers do) equals one serial pass bit
for bit, for every calibrator and for auto's second pass; and survives a trip through arrays."""
import numpy as np
import pytest

from calibrate import CalibrationError
from graphs import tiny_resnet
from tvm_quant_ext import passes
from tvm_quant_ext.backend.build import build
from tvm_quant_ext.config import QConfig
from tvm_quant_ext.passes.calibration_shards import (auto_shard, finish_auto, merge_shards,
                                                     needs_auto_pass, observe_shard, result_arrays,
                                                     result_from_arrays)


@pytest.fixture(scope="module")
def prepared():
    mod, params = tiny_resnet(seed=3)
    return passes.prepare(mod, params)


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    # varied ranges, so histograms grow (re-bin) at different batches in different shards
    return [(rng.standard_normal((1, 3, 16, 16)) * (1 + 3 * rng.random())).astype("float32")
            for _ in range(n)]


def _sharded(annotated, data, config, bounds):
    model = build(annotated, "llvm")
    shards = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    result = merge_shards([observe_shard(model, annotated, shard, config) for shard in shards])
    states = needs_auto_pass(result)
    if states:
        finish_auto(result, config, [auto_shard(model, shard, config, states) for shard in shards])
    return result


def _qparams(result, config):
    return {pid: tuple(np.asarray(v).tolist() for v in obs.compute_qparams(config.nbit_input,
                                                                           config.activation_symmetric))
            for pid, obs in result.observers.items()}


@pytest.mark.parametrize("mode,symmetric", [("max", True), ("power2", True), ("percentile", True),
                                            ("kl", True), ("l2", False), ("auto", True)])
def test_merged_shards_equal_serial_calibration(prepared, mode, symmetric):
    config = QConfig(calibrate_mode=mode, activation_symmetric=symmetric)
    annotated = passes.annotate(prepared, config)
    data = _batches(7)
    serial = passes.run_calibration(annotated, data, config)
    sharded = _sharded(annotated, data, config, [0, 2, 3, 7])
    assert sharded.batches == serial.batches == 7
    assert sharded.calibrators == serial.calibrators
    assert sharded.auto_errors == serial.auto_errors  # exact floats, not approximately
    assert _qparams(sharded, config) == _qparams(serial, config)
    if mode == "auto":
        assert serial.auto_errors and set(serial.calibrators.values()) - {"auto"}


def test_result_survives_arrays(prepared, tmp_path):
    config = QConfig(calibrate_mode="auto")
    annotated = passes.annotate(prepared, config)
    result = passes.run_calibration(annotated, _batches(3, seed=1), config)
    np.savez(tmp_path / "c.npz", **result_arrays(result))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:  # no pickled objects in the file
        back = result_from_arrays(f)
    assert back.calibrators == result.calibrators and back.auto_errors == result.auto_errors
    assert back.batches == result.batches
    assert _qparams(back, config) == _qparams(result, config)


def test_shards_of_other_models_do_not_merge(prepared):
    config = QConfig(calibrate_mode="max")
    annotated = passes.annotate(prepared, config)
    other = passes.annotate(passes.prepare(*tiny_resnet(seed=3, channels=4)), QConfig(calibrate_mode="kl"))
    one = observe_shard(build(annotated, "llvm"), annotated, _batches(1), config)
    two = observe_shard(build(other, "llvm"), other, _batches(1), QConfig(calibrate_mode="kl"))
    with pytest.raises(CalibrationError, match="shard 1 observed other points or calibrators"):
        merge_shards([one, two])
