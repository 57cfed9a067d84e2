"""tvm-quant quantize / eval on a user's files: an ONNX file exported from a torch
MobileNet-style net with ReLU6 and a folder of JPEGs in; a library that plain TVM loads in a
second process, a report and a saved module out."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import tvm_quant_ext
from tvm_quant_ext import cli
from tvm_quant_ext.artifacts import load_quantized

from corpus import MobileNetReLU6, _randomize_batchnorm

LOAD_WITH_PLAIN_TVM = """
import sys, numpy as np, tvm
from tvm import relax
lib = tvm.runtime.load_module(sys.argv[1])
vm = relax.VirtualMachine(lib, tvm.cpu())
x = np.load(sys.argv[2])
np.save(sys.argv[3], vm["main"](tvm.runtime.tensor(x)).numpy())
"""


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    net = _randomize_batchnorm(MobileNetReLU6())
    onnx_path = str(root / "mobilenet.onnx")
    torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), onnx_path, opset_version=17, dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(photos / f"{i}.jpg")
    return root, onnx_path, str(photos)


def test_quantize_writes_library_report_module_and_plain_tvm_loads_it(user_files, tmp_path, capsys):
    root, onnx_path, photos = user_files
    out = str(tmp_path / "new_folder" / "net")
    assert cli.main(["quantize", onnx_path, "--input-shape", "input=2,3,64,64", "--calib", photos,
                     "--mode", "integer", "-o", out]) == 0
    summary = capsys.readouterr().out
    assert "points: ACTIVATION" in summary and "ops left in float: 0" in summary
    for suffix in (".so", ".json", ".relax.json"):
        assert os.path.getsize(out + suffix) > 0
    report = json.load(open(out + ".json"))
    assert report["config"]["mode"] == "integer"
    kinds = {p["kind"] for p in report["points"]}
    assert kinds == {"INPUT", "WEIGHT", "BIAS", "ACTIVATION"}
    for point in report["points"]:
        assert point["id"] and point["bits"] and "scale" in point
    assert report["calibration"]["images"] == 8 and report["calibration"]["output_snr_db"] > 20
    assert set(report["calibration"]["layer_snr_db"]) <= {p["id"] for p in report["points"]}

    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", LOAD_WITH_PLAIN_TVM, out + ".so", str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True)
    second_process = np.load(tmp_path / "y.npy")
    saved = load_quantized(out + ".relax.json")  # the saved module rebuilds to the same outputs
    assert tvm_quant_ext.get_report(saved).config["mode"] == "integer"
    np.testing.assert_array_equal(second_process, tvm_quant_ext.build(saved)(x))


def test_eval_a_model_file_on_a_labeled_folder(user_files, tmp_path, capsys):
    root, onnx_path, photos = user_files
    labeled = tmp_path / "val"
    for label in ("0", "3"):
        (labeled / label).mkdir(parents=True)
        for i in range(2):
            Image.open(os.path.join(photos, f"{i}.jpg")).save(labeled / label / f"{label}_{i}.jpg")
    assert cli.main(["eval", onnx_path, "--input-shape", "input=2,3,64,64", "--calib", photos,
                     "--data", str(labeled), "--mode", "both", "--json"]) == 0
    simulate, integer = json.loads(capsys.readouterr().out)
    assert simulate["n_labeled"] == 4 and simulate["n_images"] == 4
    assert integer["lsb_vs_simulate"] <= 1 + 1e-9 and integer["snr_db"] > 20


def test_config_file_and_flags(user_files, tmp_path, capsys):
    root, onnx_path, photos = user_files
    config = tmp_path / "q.toml"
    config.write_text('nbit_bias = 16\ncalibrate_mode = "percentile"\nper_channel = false\n')
    out = str(tmp_path / "net")
    assert cli.main(["quantize", onnx_path, "--input-shape", "input=1,3,64,64", "--calib", photos,
                     "--config", str(config), "--calibrate-mode", "l2", "-o", out]) == 0
    saved = json.load(open(out + ".json"))["config"]
    assert (saved["nbit_bias"], saved["calibrate_mode"], saved["per_channel"]) == (16, "l2", False)
    config.write_text('nbit_bais = 16\n')
    assert cli.main(["quantize", onnx_path, "--input-shape", "input=1,3,64,64", "--calib", photos,
                     "--config", str(config), "-o", out]) == 2
    assert "unknown QConfig key(s) ['nbit_bais']" in capsys.readouterr().err


def test_quantize_a_torch_export_program_and_an_mxnet_symbol(user_files, tmp_path, capsys):
    import mxnet as mx
    from mxnet.gluon import nn as gnn

    root, onnx_path, photos = user_files
    torch.manual_seed(0)
    net = _randomize_batchnorm(MobileNetReLU6())
    program = str(tmp_path / "net.pt2")
    torch.export.save(torch.export.export(net, (torch.randn(1, 3, 64, 64),)), program)
    assert cli.main(["quantize", program, "--calib", photos, "-o", str(tmp_path / "pt2")]) == 0
    report = json.load(open(tmp_path / "pt2.json"))
    # torch's module names ("stem.0"), spelled as Relax binding names
    assert "stem_0.weight" in {p["id"] for p in report["points"]}
    assert cli.main(["quantize", program, "--input-shape", "x=2,3,64,64", "--calib", photos,
                     "-o", str(tmp_path / "pt2")]) == 2
    assert "shapes are fixed when it is exported" in capsys.readouterr().err

    gluon = gnn.HybridSequential(prefix="net_")
    with gluon.name_scope():
        gluon.add(gnn.Conv2D(8, 3, in_channels=3), gnn.BatchNorm(in_channels=8),
                  gnn.Activation("relu"), gnn.GlobalAvgPool2D(), gnn.Dense(4, in_units=8))
    gluon.initialize()
    gluon.hybridize()
    gluon(mx.nd.ones((1, 3, 64, 64)))
    gluon.export(str(tmp_path / "gluon"))
    assert cli.main(["quantize", str(tmp_path / "gluon-symbol.json"), "--params",
                     str(tmp_path / "gluon-0000.params"), "--input-shape", "data=1,3,64,64",
                     "--calib", photos, "--preprocess", "inception", "--mode", "integer",
                     "-o", str(tmp_path / "gluon_q")]) == 0
    assert os.path.getsize(tmp_path / "gluon_q.so") > 0
