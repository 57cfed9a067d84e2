"""from_torch / from_onnx / name_initializers (tvm_quant_ext.frontend) on tiny models."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from tvm import relax

import tvm_quant_ext
from tvm_quant_ext.frontend import from_onnx, from_torch, name_initializers
from tvm_quant_ext.frontend.torch import export_onnx

SHAPE = (2, 3, 8, 8)


def _ops(func):
    ops = []
    relax.analysis.post_order_visit(
        func, lambda e: ops.append(e.op.name) if isinstance(e, relax.Call) and hasattr(e.op, "name") else None)
    return ops


@pytest.fixture(scope="module")
def tiny():
    """conv -> ReLU6 -> conv -> flatten -> linear, random weights; (net, input, torch output)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 4, 3, stride=2),
                        nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).eval()
    x = np.random.RandomState(0).normal(size=SHAPE).astype("float32") * 3  # some values past 6
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    return net, x, expected


def test_from_torch_names_weights_after_modules_and_matches_torch(tiny):
    net, x, expected = tiny
    mod, params = from_torch(net, x)
    names = [str(p.name) for p in mod["main"].params]
    assert names == ["input", "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert list(params) == names[1:]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in params.values())
    np.testing.assert_array_equal(params["0.weight"], net[0].weight.detach().numpy())  # no BN: unchanged
    ops = _ops(mod["main"])
    assert "relax.clip" in ops and "relax.call_tir" not in ops  # ReLU6 is R.clip, not max/min
    compiled = tvm_quant_ext.build(relax.transform.BindParams("main", params)(mod), "llvm")
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-5)


def test_from_onnx_takes_a_path_or_a_modelproto(tiny, tmp_path):
    net, x, _ = tiny
    path = str(tmp_path / "tiny.onnx")
    export_onnx(net, x, path)
    proto = onnx.load(path)
    before = proto.SerializeToString()
    mod_p, params_p = from_onnx(path)
    mod_m, params_m = from_onnx(proto)
    assert proto.SerializeToString() == before  # the caller's ModelProto is not modified
    assert mod_p.script() == mod_m.script()
    assert list(params_p) == list(params_m)
    assert all(np.array_equal(params_p[k], params_m[k]) for k in params_p)
    # the file is already named: from_onnx without module names keeps the torch names
    mod_t, params_t = from_torch(net, x)
    assert mod_t.script() == mod_p.script() and list(params_t) == list(params_p)


def _two_input_model():
    """(a + b) @ W -> Clip(0, 6), batch dimension "N" dynamic, node scope "/fc/"."""
    rng = np.random.RandomState(1)
    w = rng.normal(size=(3, 4)).astype("float32")
    inits = [numpy_helper.from_array(w, "onnx::MatMul_7"),
             numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
    nodes = [helper.make_node("Add", ["a", "b"], ["s"], name="/Add"),
             helper.make_node("MatMul", ["s", "onnx::MatMul_7"], ["m"], name="/fc/MatMul"),
             helper.make_node("Clip", ["m", "lo", "hi"], ["y"], name="/act/Clip")]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_name_initializers_names_by_scope_and_inlines_small_ones():
    model, w = _two_input_model()
    name_initializers(model)
    assert [t.name for t in model.graph.initializer] == ["fc.weight"]
    consts = [n for n in model.graph.node if n.op_type == "Constant"]
    assert sorted(c.output[0] for c in consts) == ["hi", "lo"]
    assert list(model.graph.node[-2].input) == ["s", "fc.weight"]
    name_initializers(model)  # a second time: nothing changes
    assert [t.name for t in model.graph.initializer] == ["fc.weight"]
    assert len([n for n in model.graph.node if n.op_type == "Constant"]) == 2


def test_from_onnx_two_data_inputs_and_shape():
    model, w = _two_input_model()
    mod, params = from_onnx(model, shape={"a": (4, 3), "b": (4, 3)})
    main = mod["main"]
    assert [str(p.name) for p in main.params] == ["a", "b", "fc.weight"]
    assert [int(d) for d in main.params[0].ty.shape] == [4, 3]
    assert list(params) == ["fc.weight"] and np.array_equal(params["fc.weight"], w)
    assert "relax.clip" in _ops(main)
    compiled = tvm_quant_ext.build(relax.transform.BindParams("main", params)(mod), "llvm")
    a, b = (np.random.RandomState(s).normal(size=(4, 3)).astype("float32") * 4 for s in (2, 3))
    np.testing.assert_allclose(compiled(a, b), np.clip((a + b) @ w, 0, 6), rtol=1e-5, atol=1e-5)


def test_shape_computed_padding_is_folded_before_import(tmp_path):
    """TorchScript exports "same" padding computed from the input shape as Shape -> ... -> Pad,
    which TVM's importer refuses; from_onnx folds it with ONNX Runtime first."""
    import onnxruntime as ort
    from tvm.relax.frontend.onnx import from_onnx as stock_from_onnx

    from tvm_quant_ext.frontend.onnx_fold import needs_folding

    class SamePad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x):
            pad = max((x.shape[-1] + 1) // 2 * 2 - x.shape[-1] + 1, 0)  # from the shape
            return self.conv(torch.nn.functional.pad(x, [pad // 2, pad - pad // 2] * 2))

    x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
    path = str(tmp_path / "same.onnx")
    torch.onnx.export(SamePad().eval(), (torch.from_numpy(x),), path, opset_version=17, dynamo=False,
                      input_names=["input"])
    model = onnx.load(path)
    assert needs_folding(model)
    with pytest.raises(ValueError, match="Dynamic pads"):
        stock_from_onnx(model)
    mod, params = from_onnx(path)
    got = tvm_quant_ext.build(relax.transform.BindParams("main", params)(mod))(x)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


class _PreActivationBlock(nn.Module):
    """ResNet v2's pre-activation: BN on the residual sum, then ReLU, then the next conv."""

    def __init__(self, channels=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, 4, 1)

    def forward(self, x):
        x = self.conv1(x)
        x = x + self.conv2(torch.relu(x))
        return self.conv3(torch.relu(self.bn(x)))


def test_pre_activation_batchnorm_from_onnx_stays_integer():
    # TVM's importer decomposes the BN as (x - mean) * s + beta: the subtract belongs to the
    # BN's own 1x1 depthwise layer, not a float op with a requantize on either side
    torch.manual_seed(0)
    model = _PreActivationBlock().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    mod, params = from_torch(model, x)
    calib = [np.random.default_rng(i).standard_normal(x.shape).astype("float32") for i in range(3)]
    for mode in ("simulate", "integer"):
        qmod = tvm_quant_ext.quantize(mod, params, calib, tvm_quant_ext.QConfig(mode=mode))
        assert tvm_quant_ext.get_report(qmod).float_ops == []
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = tvm_quant_ext.build(qmod)(x)
        snr = 10 * np.log10((expected ** 2).sum() / ((expected - got) ** 2).sum())
        assert snr > 25, snr
