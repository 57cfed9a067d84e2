"""The model corpus: CNNs a user brings, with random weights (nothing downloaded), each through
a public importer. ``CASES``: name -> (frontend, builder); a builder returns (mod, params,
input batch). ``FAST`` runs in ``make test``; the rest is ``-m slow``."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from torch import nn

BATCH = 2


def _randomize_batchnorm(net: nn.Module) -> nn.Module:
    """Random BatchNorm statistics, so folding them is exercised (fresh ones are identities)."""
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
    return net.eval()


class MobileNetReLU6(nn.Module):
    """Depthwise-separable blocks with BatchNorm and ReLU6 (ONNX Clip), a linear bottleneck."""

    def __init__(self):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                                 nn.BatchNorm2d(cin), nn.ReLU6(), nn.Conv2d(cin, cout, 1, bias=False),
                                 nn.BatchNorm2d(cout))
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(block(16, 32, 1), nn.ReLU6(), block(32, 32, 2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class ModernOps(nn.Module):
    """SiLU, hardswish, squeeze-excite (sigmoid x tensor), resize, transposed conv, LayerNorm, GELU."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.se = SqueezeExcite(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 10)

    def forward(self, x):
        x = nn.functional.silu(self.bn(self.stem(x)))
        x = self.se(nn.functional.hardswish(self.dw(x)))
        x = nn.functional.interpolate(self.pw(x), scale_factor=2, mode="nearest")
        x = self.up(x).mean((2, 3))
        return self.fc(nn.functional.gelu(self.norm(x)))


def _example(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _exported_onnx(net_cls, size, batch, import_file):
    torch.manual_seed(0)
    net = _randomize_batchnorm(net_cls())
    x = _example((batch, 3, size, size))
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "net.onnx")
        torch.onnx.export(net, (torch.from_numpy(x),), path, opset_version=17, dynamo=False,
                          input_names=["input"])
        return import_file(path) + (x,)


def _stock_onnx_import(path):
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(path), keep_params_in_input=True)
    mod, detached = relax.frontend.detach_params(mod)
    weights = list(mod["main"].params)[1:]
    return mod, {v.name: a.numpy() for v, a in zip(weights, detached["main"])}


def torch_via_stock_onnx(net_cls, size=32, batch=BATCH):
    """torch.onnx.export, then TVM's own ONNX importer (no project fix applied)."""
    return _exported_onnx(net_cls, size, batch, _stock_onnx_import)


def torch_via_onnx(net_cls, size=32, batch=BATCH):
    """torch.onnx.export, then tvm_quant_ext.frontend.from_onnx (which folds the shape
    arithmetic TVM's importer refuses, e.g. EfficientNet-Lite's computed "same" padding)."""
    from tvm_quant_ext.frontend import from_onnx

    return _exported_onnx(net_cls, size, batch, lambda path: from_onnx(path))


def torch_via_export(net_cls, size=32, batch=BATCH):
    """torch.export, then tvm_quant_ext.frontend.from_exported_program."""
    from tvm_quant_ext.frontend import from_exported_program

    torch.manual_seed(0)
    net = _randomize_batchnorm(net_cls())
    x = _example((batch, 3, size, size))
    mod, params = from_exported_program(torch.export.export(net, (torch.from_numpy(x),)))
    return mod, params, x


def efficientnet_lite(index):
    """EfficientNet-Lite<index> (efficientnet-lite-pytorch, random init) and its input size."""
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-lite{index}"
    return (lambda: EfficientNet.from_name(name)), EfficientNet.get_image_size(name)


# MobileNetV3 (Howard et al. 2019), as GluonCV builds it: mxnet 1.9's own model zoo has no v3
# and GluonCV does not import beside torch 2. (kernel, expansion, out, squeeze-excite,
# activation, stride) per bottleneck; then the last 1x1 conv and the 1x1 head conv.
MOBILENET_V3 = {
    "small": ([(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
               (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hswish", 2),
               (5, 240, 40, True, "hswish", 1), (5, 120, 48, True, "hswish", 1),
               (5, 288, 96, True, "hswish", 2), (5, 576, 96, True, "hswish", 1)], 576, 1024),
    "large": ([(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2),
               (3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2),
               (5, 120, 40, True, "relu", 1), (3, 240, 80, False, "hswish", 2),
               (3, 184, 80, False, "hswish", 1), (3, 480, 112, True, "hswish", 1),
               (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1)], 960, 1280),
}


def mobilenet_v3(size: str, classes: int = 1000):
    from mxnet.gluon import nn as gnn

    def act(kind):
        return gnn.Activation("relu") if kind == "relu" else HardSwish()

    class HardSwish(gnn.HybridBlock):
        def hybrid_forward(self, F, x):
            return x * F.clip(x + 3.0, 0.0, 6.0) / 6.0

    class SqueezeExciteGluon(gnn.HybridBlock):
        def __init__(self, channels, **kwargs):
            super().__init__(**kwargs)
            with self.name_scope():
                self.reduce = gnn.Conv2D(channels // 4, 1, in_channels=channels)
                self.expand = gnn.Conv2D(channels, 1, in_channels=channels // 4)

        def hybrid_forward(self, F, x):
            w = self.expand(F.relu(self.reduce(F.contrib.AdaptiveAvgPooling2D(x, output_size=1))))
            return F.broadcast_mul(x, F.clip(w + 3.0, 0.0, 6.0) / 6.0)  # hard sigmoid

    class Bottleneck(gnn.HybridBlock):
        def __init__(self, cin, k, exp, cout, se, kind, stride, **kwargs):
            super().__init__(**kwargs)
            self.residual = stride == 1 and cin == cout
            with self.name_scope():
                self.body = gnn.HybridSequential()
                if exp != cin:
                    self.body.add(gnn.Conv2D(exp, 1, use_bias=False, in_channels=cin),
                                  gnn.BatchNorm(in_channels=exp), act(kind))
                self.body.add(gnn.Conv2D(exp, k, stride, k // 2, groups=exp, use_bias=False,
                                         in_channels=exp), gnn.BatchNorm(in_channels=exp), act(kind))
                if se:
                    self.body.add(SqueezeExciteGluon(exp))
                self.body.add(gnn.Conv2D(cout, 1, use_bias=False, in_channels=exp),
                              gnn.BatchNorm(in_channels=cout))

        def hybrid_forward(self, F, x):
            return x + self.body(x) if self.residual else self.body(x)

    blocks, last, head = MOBILENET_V3[size]
    net = gnn.HybridSequential(prefix=f"mobilenetv3_{size}_")
    with net.name_scope():
        net.add(gnn.Conv2D(16, 3, 2, 1, use_bias=False, in_channels=3), gnn.BatchNorm(in_channels=16),
                HardSwish())
        cin = 16
        for k, exp, cout, se, kind, stride in blocks:
            net.add(Bottleneck(cin, k, exp, cout, se, kind, stride))
            cin = cout
        net.add(gnn.Conv2D(last, 1, use_bias=False, in_channels=cin), gnn.BatchNorm(in_channels=last),
                HardSwish(), gnn.GlobalAvgPool2D(), gnn.Conv2D(head, 1, in_channels=last), HardSwish(),
                gnn.Flatten(), gnn.Dense(classes, in_units=head))
    return net


def gluon(name, size=224, **kwargs):
    """A Gluon model-zoo CNN with random weights through tvm_quant_ext.frontend.from_mxnet."""
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision

    from tvm_quant_ext.frontend import from_mxnet

    mx.random.seed(0)
    if name.startswith("mobilenetv3_"):
        net = mobilenet_v3(name.split("_")[1])
    else:
        net = vision.get_model(name, pretrained=False, **kwargs)
    net.initialize(mx.init.Xavier())
    x = _example((1, 3, size, size))
    net(mx.nd.array(x))
    mod, params = from_mxnet(net, {"data": x.shape})
    return mod, params, x


CASES = {
    "mobilenet_relu6/stock_onnx": lambda: torch_via_stock_onnx(MobileNetReLU6),
    "mobilenet_relu6/export": lambda: torch_via_export(MobileNetReLU6),
    "modern_ops/stock_onnx": lambda: torch_via_stock_onnx(ModernOps),
    "modern_ops/export": lambda: torch_via_export(ModernOps),
}
FAST = tuple(CASES)
GLUON = ["resnet18_v1", "resnet50_v1", "resnet18_v2", "resnet50_v2", "mobilenet1.0",
         "mobilenetv2_1.0", "mobilenetv3_small", "mobilenetv3_large", "squeezenet1.1",
         "densenet121", "vgg11_bn", "alexnet"]
CASES.update({f"{name}/mxnet": (lambda name=name: gluon(name)) for name in GLUON})
CASES["inceptionv3/mxnet"] = lambda: gluon("inceptionv3", size=299)
for _i in range(5):
    CASES[f"efficientnet_lite{_i}/onnx"] = lambda i=_i: torch_via_onnx(*efficientnet_lite(i), batch=1)
    CASES[f"efficientnet_lite{_i}/export"] = lambda i=_i: torch_via_export(*efficientnet_lite(i), batch=1)
