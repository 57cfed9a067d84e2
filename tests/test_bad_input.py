"""Bad input gets a clear error naming the tensor, param, file or flag -- or a documented cast."""
import os

import numpy as np
import pytest
import tvm

import tvm_quant_ext as tq
from tvm_quant_ext import QConfig, cli
from tvm_quant_ext.backend.build import NoDeviceError
from tvm_quant_ext.datasets import DataError, load_data, make_preprocess, read_records
from tvm_quant_ext.frontend.model_file import ModelFileError, load_model_file
from tvm_quant_ext.graph import GraphError
from tvm_quant_ext.passes.calibration import iter_batches

from graphs import tiny_resnet

X = np.ones((1, 3, 16, 16), "float32")


def test_weight_of_the_wrong_shape_names_the_param():
    mod, params = tiny_resnet()
    name = next(k for k, v in params.items() if v.ndim == 4)
    params = dict(params, **{name: params[name][:, :, :1]})
    with pytest.raises(GraphError, match=f"param '{name}' has shape .* expects"):
        tq.quantize(mod, params, dataset=[X])


def test_float64_params_are_cast_to_the_parameters_float32():
    mod, params = tiny_resnet()
    wide = {k: v.astype(np.float64) for k, v in params.items()}
    want = tq.build(tq.quantize(mod, params, dataset=[X]))(X)
    np.testing.assert_array_equal(tq.build(tq.quantize(mod, wide, dataset=[X]))(X), want)


def test_quantizing_a_quantized_module_is_refused():
    mod, params = tiny_resnet()
    qmod = tq.quantize(mod, params, dataset=[X])
    with pytest.raises(GraphError, match="already quantized"):
        tq.quantize(qmod, None, dataset=[X])


def test_symbolic_batch_dimension_says_which_input_and_how_to_fix_it():
    from tvm import relax

    batch = tvm.tirx.Var("batch", "int64")
    x = relax.Var("images", relax.TensorType((batch, 4), "float32"))
    w = relax.Var("fc.weight", relax.TensorType((4, 2), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    with pytest.raises(GraphError, match="input 'images'.*symbolic.*--input-shape images="):
        tq.quantize(bb.get(), {"fc.weight": np.ones((4, 2), "float32")},
                    dataset=[np.ones((1, 4), "float32")])


def test_inputs_with_different_batch_counts_are_refused():
    item = {"a": np.zeros((4, 3)), "b": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="different numbers of model batches"):
        list(iter_batches([item], ["a", "b"], [(2, 3), (2, 3)]))


@pytest.mark.parametrize("kwargs, message", [
    ({"skip_layers": "stem"}, r"skip_layers='stem'.*write skip_layers=\['stem'\]"),
    ({"per_channel": "False"}, "per_channel='False': expected bool"),
    ({"nbit_bias": 16.0}, "nbit_bias=16.0: expected int"),
    ({"skip_layers": [0]}, "layers are named, never numbered"),
])
def test_qconfig_field_types(kwargs, message):
    with pytest.raises(TypeError, match=message):
        QConfig(**kwargs)


@pytest.mark.parametrize("limit, message", [("3", "no whole batch of 100"), ("-5", "--limit -5")])
def test_eval_limit_below_the_batch_or_negative(limit, message, capsys):
    assert cli.main(["eval", "--model", "mnist_cnn", "--limit", limit]) == 2
    assert message in capsys.readouterr().err


def _gluon_files(tmp_path, channels):
    import mxnet as mx
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix="net_")  # same weight names, whatever the width
    with net.name_scope():
        net.add(nn.Conv2D(channels, 3, in_channels=3), nn.Activation("relu"), nn.GlobalAvgPool2D(),
                nn.Dense(4, in_units=channels))
    net.initialize()
    net.hybridize()
    net(mx.nd.ones((1, 3, 8, 8)))
    prefix = str(tmp_path / f"net{channels}")
    net.export(prefix)
    return prefix + "-symbol.json", prefix + "-0000.params"


def test_mxnet_params_truncated_or_of_another_architecture(tmp_path):
    symbol, params = _gluon_files(tmp_path, 8)
    _, other_params = _gluon_files(tmp_path, 6)
    shapes = {"data": (1, 3, 8, 8)}
    mod, weights = load_model_file(symbol, params, shapes)
    assert len(weights) == 4
    with pytest.raises(ModelFileError, match=f"--params {other_params}: .* has shape .* the symbol needs"):
        load_model_file(symbol, other_params, shapes)
    truncated = str(tmp_path / "truncated.params")
    with open(params, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:100])
    with pytest.raises(ModelFileError, match=f"--params {truncated}: not a readable MXNet .params"):
        load_model_file(symbol, truncated, shapes)
    with pytest.raises(ModelFileError, match="has no input shapes; give --input-shape data="):
        load_model_file(symbol, params, None)


def test_model_file_kind_and_existence(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model_file(str(tmp_path / "missing.onnx"))
    other = tmp_path / "net.tflite"
    other.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model kind"):
        load_model_file(str(other))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError, match="broken.onnx: not a readable ONNX model"):
        load_model_file(str(broken))


def test_unreadable_jpeg_and_corrupt_rec_name_the_file(tmp_path):
    import mxnet as mx
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "good.jpg")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="bad.jpg: not a readable image"):
        load_data(str(folder), make_preprocess("imagenet", size=16))
    rec, idx = str(tmp_path / "val.rec"), str(tmp_path / "val.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    writer.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, 3.0, 0, 0), b"not an image"))
    writer.close()
    with pytest.raises(DataError, match="val.rec record 0: not a readable image"):
        read_records(rec, 1)
    with pytest.raises(FileNotFoundError, match="--calib .*nowhere: no such file"):
        load_data(str(tmp_path / "nowhere"), None)


def test_integer_arrays_are_cast_by_value_for_a_float_input(tmp_path, capsys):
    """The documented cast: uint8 arrays given to a float32 input keep their values."""
    from tvm_quant_ext.cli.model_commands import read_inputs

    np.save(tmp_path / "x.npy", np.full((2, 3, 8, 8), 7, np.uint8))

    class Args:
        size = resize = mean = std = layout = None
        bgr = False
        preprocess = "none"
    data = read_inputs(Args, str(tmp_path / "x.npy"), (1, 3, 8, 8), None, "--calib")
    assert data.images.dtype == np.float32 and np.all(data.images == 7)


@pytest.mark.skipif(tvm.cuda(0).exist, reason="a GPU is present: the model runs")
def test_cuda_build_without_a_gpu_exports_and_says_so_when_called(tmp_path):
    mod, params = tiny_resnet()
    model = tq.build(tq.quantize(mod, params, dataset=[X]), {"kind": "cuda", "arch": "sm_80"})
    model.export_library(str(tmp_path / "net.so"))
    assert os.path.getsize(tmp_path / "net.so") > 0
    with pytest.raises(NoDeviceError, match="no cuda device on this machine"):
        model(X)


def test_no_unpickling_fallback_anywhere():
    root = os.path.join(os.path.dirname(__file__), "..", "tvm_quant_ext")
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                source = open(os.path.join(folder, name), encoding="utf-8").read()
                assert "weights_only=False" not in source, name
                assert "allow_pickle=True" not in source, name


def test_sweep_gluon_params_of_another_architecture(tmp_path):
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision

    from tvm_quant_ext.sweep.data import load_model

    net = vision.get_model("resnet18_v2", pretrained=False)
    net.initialize()
    net(mx.nd.ones((1, 3, 32, 32)))
    path = str(tmp_path / "resnet18_v2.params")
    net.save_parameters(path)
    with pytest.raises(ValueError, match=f"--params {path}: not the weights of a Gluon resnet34_v2"):
        load_model("resnet34_v2", 1, path)
