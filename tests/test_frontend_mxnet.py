"""from_mxnet against MXNet itself on the Gluon model zoo (random weights, random BN statistics).

TVM compiles untuned, so the default set runs the models on small inputs (32x32; the
architectures end in a global pool).  ResNet-50/101/152 v1/v2 are `slow` (excluded by default:
the bottleneck ResNets cost 2 min each to compile on 2 busy cores; ResNet-50 v1/v2 passed here;
run them with ``pytest -m slow tests/test_frontend_mxnet.py``).
"""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.model_zoo import vision
from tvm import relax

import tvm_quant_ext
from tvm_quant_ext import QConfig, get_report, zoo
from tvm_quant_ext.frontend import UnsupportedMXNetOpError, from_mxnet


def _initialized(block, input_shape, seed=0):
    """Xavier weights and random BN statistics/affine, so no BatchNorm is an identity."""
    mx.random.seed(seed)
    block.initialize(mx.init.Xavier(magnitude=2.0))
    block(mx.nd.zeros(input_shape))  # finishes deferred shape inference
    rng = np.random.RandomState(seed)
    for param in block.collect_params().values():
        name = param.name
        if name.endswith(("running_var", "gamma")):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, param.shape)))
        elif name.endswith(("running_mean", "beta")):
            param.set_data(mx.nd.array(rng.normal(0.0, 0.2, param.shape)))
    return block


def _assert_matches_mxnet(block, input_shape, seed=0):
    x = np.random.RandomState(seed + 1).normal(size=input_shape).astype("float32")
    expected = block(mx.nd.array(x)).asnumpy()
    mod, params = from_mxnet(block, shape={"data": input_shape})
    assert {p.name for p in mod["main"].params[1:]} == set(params)
    compiled = tvm_quant_ext.build(relax.transform.BindParams("main", params)(mod))
    got = compiled(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    return mod, params


@pytest.mark.parametrize("name", ["resnet18_v1", "resnet18_v2", "mobilenet1.0", "mobilenetv2_1.0"])
def test_gluon_zoo_matches_mxnet(name):
    shape = (1, 3, 32, 32)
    mod, params = _assert_matches_mxnet(_initialized(vision.get_model(name, pretrained=False), shape),
                                        shape)
    assert all(isinstance(v, np.ndarray) for v in params.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50_v1", "resnet50_v2", "resnet101_v1", "resnet101_v2",
                                  "resnet152_v1", "resnet152_v2"])
def test_deep_gluon_resnets_match_mxnet(name):
    shape = (1, 3, 32, 32)
    _assert_matches_mxnet(_initialized(vision.get_model(name, pretrained=False), shape), shape)


def test_symbol_json_with_checkpoint_params_and_fix_gamma():
    """The Symbol JSON + arg/aux params path, on ops the zoo tests do not reach: fix_gamma
    ignores a stored gamma != 1, 'full' pooling, count_include_pad=False, Concat, Dropout,
    tanh, clip, softmax."""
    data = mx.sym.var("data")
    net = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv0")
    net = mx.sym.BatchNorm(net, fix_gamma=True, eps=1e-3, name="bn0")
    net = mx.sym.clip(net, a_min=0.0, a_max=6.0)
    full = mx.sym.Pooling(net, kernel=(3, 3), stride=(2, 2), pool_type="avg", pooling_convention="full")
    no_pad = mx.sym.Pooling(mx.sym.Activation(net, act_type="tanh"), kernel=(3, 3), stride=(2, 2),
                            pad=(1, 1), pool_type="avg", count_include_pad=False)
    net = mx.sym.Concat(full, no_pad, dim=1)
    net = mx.sym.FullyConnected(mx.sym.Dropout(net, p=0.5), num_hidden=5, name="fc0")
    net = mx.sym.softmax(net)
    rng = np.random.RandomState(0)
    shape = (2, 3, 8, 8)
    arg_shapes, _, aux_shapes = net.infer_shape(data=shape)
    arg_params = {n: mx.nd.array(rng.normal(size=s)) for n, s in zip(net.list_arguments(), arg_shapes)
                  if n != "data"}
    arg_params["bn0_gamma"] = mx.nd.array(rng.uniform(2, 3, arg_params["bn0_gamma"].shape))
    aux_params = {n: mx.nd.array(rng.uniform(0.5, 1.5, s))
                  for n, s in zip(net.list_auxiliary_states(), aux_shapes)}
    x = rng.normal(size=shape).astype("float32")
    exe = net.bind(mx.cpu(), {"data": mx.nd.array(x), **arg_params}, aux_states=aux_params)
    expected = exe.forward(is_train=False)[0].asnumpy()
    mod, params = from_mxnet(net.tojson(), {"data": shape}, arg_params=arg_params, aux_params=aux_params)
    assert "bn0_gamma" not in params  # fix_gamma: the stored gamma is not read
    got = tvm_quant_ext.build(relax.transform.BindParams("main", params)(mod))(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_unsupported_op_names_op_and_node():
    net = mx.sym.SwapAxis(mx.sym.var("data"), dim1=1, dim2=2, name="my_swap")
    with pytest.raises(UnsupportedMXNetOpError, match=r"'SwapAxis' \(node 'my_swap'\)"):
        from_mxnet(net, {"data": (1, 2, 3)})


def test_unsupported_option_names_op_and_node():
    net = mx.sym.Pooling(mx.sym.var("data"), kernel=(2, 2), pool_type="lp", name="lp_pool")
    with pytest.raises(UnsupportedMXNetOpError, match=r"'Pooling' \(node 'lp_pool'\).*pool_type='lp'"):
        from_mxnet(net, {"data": (1, 2, 4, 4)})


def test_resnet_v2_goes_through_quantize():
    """The Fashion-MNIST ResNet v2 architecture (random weights): a BN after a conv folds into
    it; a pre-activation BN (after a residual add, or whose input feeds the shortcut too) becomes
    a 1x1 depthwise layer of its own, so its shift is a BIAS point like every other bias and
    nothing stays float; every conv/dense is a layer named after its weight."""
    shape = (1, 1, 28, 28)
    block = _initialized(zoo.fashion_resnet_v2_block(), shape)
    mod, params = from_mxnet(block, {"data": shape})
    rng = np.random.RandomState(2)
    calib = [rng.normal(size=shape).astype("float32") for _ in range(2)]
    qmod = tvm_quant_ext.quantize(mod, params, calib, QConfig(nbit_bias=32, calibrate_mode="power2",
                                                              weight_scale="power2"))
    report = get_report(qmod)
    convs = [n for n in params if n.endswith("_weight") and params[n].ndim == 4]
    dense = [n for n in params if n.endswith("_weight") and params[n].ndim == 2]
    weight_layers = {p["layer"] for p in report.points if p["kind"] == "WEIGHT"}
    named = {n[: -len("_weight")] for n in convs + dense}
    n_pre_bn = _pre_activation_bns(block)
    assert named <= weight_layers and len(weight_layers - named) == n_pre_bn
    bias_layers = {p["layer"] for p in report.points if p["kind"] == "BIAS"}
    n_bn = len([n for n in params if n.endswith("_running_mean")])
    # every conv with a folded BN, the dense bias, and every pre-activation BN: one bias each
    assert len(bias_layers) == len([n for n in params if n.endswith("_bias")]) + n_bn
    assert report.float_ops == []
    x = rng.normal(size=shape).astype("float32")
    expected = block(mx.nd.array(x)).asnumpy()
    got = tvm_quant_ext.build(qmod)(x)
    assert got.shape == expected.shape and np.isfinite(got).all()


def _pre_activation_bns(block) -> int:
    """BatchNorms that cannot fold into a conv: not right after one, or after a conv whose
    output also feeds something else (a residual shortcut)."""
    sym = block(mx.sym.var("data"))
    nodes = json.loads(sym.tojson())["nodes"]
    readers = {}
    for node in nodes:
        for src, *_ in node["inputs"]:
            readers[src] = readers.get(src, 0) + 1
    return sum(1 for n in nodes if n["op"] == "BatchNorm" and (
        nodes[n["inputs"][0][0]]["op"] != "Convolution" or readers[n["inputs"][0][0]] > 1))


fashion_data = pytest.mark.skipif(
    not os.path.exists(os.path.join(zoo.FASHION_DIR, "t10k-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST missing: `apt-get install dataset-fashion-mnist` (as root; `make setup` does it)")


@fashion_data
@pytest.mark.parametrize("name", zoo.FASHION_MODELS)
def test_fashion_resnet_v2_zoo_model_is_the_committed_one(name):
    """The committed weights give the committed fp32 accuracy (MXNet, all 10k test images),
    and the zoo's Relax module predicts what MXNet predicts."""
    meta = zoo.fashion_model_info(name)
    model = zoo.load(name, batch_size=100)
    (test_set,) = model.eval_sets
    assert test_set.images.shape == (10000, 1, 28, 28) and len(model.calib) == 500
    net = zoo.fashion_resnet_v2_block(meta)
    net.load_parameters(os.path.join(zoo.MODELS_DIR, name + ".params"))
    mx_logits = np.concatenate([net(mx.nd.array(test_set.images[i:i + 1000])).asnumpy()
                                for i in range(0, 10000, 1000)])
    accuracy = float(np.mean(mx_logits.argmax(1) == test_set.labels))
    assert accuracy == pytest.approx(meta["fp32_test_accuracy"], abs=1e-9) and accuracy >= 0.88
    compiled = tvm_quant_ext.build(relax.transform.BindParams("main", model.params)(model.mod))
    got = np.concatenate([compiled(test_set.images[i:i + 100]) for i in (0, 100)])
    np.testing.assert_allclose(got, mx_logits[:200], rtol=1e-4, atol=1e-4 * float(np.abs(mx_logits).max()))
