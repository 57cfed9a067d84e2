"""Small Relax models built op by op for the tests (weights as named parameters)."""
from __future__ import annotations

import numpy as np
from tvm import relax


def _param(name, shape):
    return relax.Var(name, relax.TensorType(shape, "float32"))


def tiny_resnet(seed: int = 0, batch: int = 1, channels: int = 8, classes: int = 10):
    """stem conv+BN+relu, max pool, one residual block, global avg pool, dense.

    Returns (mod, params). The stem's BatchNorm is a real relax batch_norm (folded by prepare).
    """
    rng = np.random.default_rng(seed)
    c = channels
    shapes = {
        "stem.weight": (c, 3, 3, 3), "bn.gamma": (c,), "bn.beta": (c,), "bn.mean": (c,),
        "bn.var": (c,), "block.conv1.weight": (c, c, 3, 3), "block.conv1.bias": (c,),
        "block.conv2.weight": (c, c, 3, 3), "block.conv2.bias": (c,),
        "fc.weight": (classes, c), "fc.bias": (classes,),
    }
    params = {}
    for name, shape in shapes.items():
        if name == "bn.var":
            params[name] = rng.uniform(0.5, 2.0, shape).astype("float32")
        elif name == "bn.gamma":
            params[name] = rng.uniform(0.5, 1.5, shape).astype("float32")
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 4
            params[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")
    data = _param("data", (batch, 3, 16, 16))
    pv = {name: _param(name, shape) for name, shape in shapes.items()}
    bb = relax.BlockBuilder()
    op = relax.op
    with bb.function("main", [data] + list(pv.values())):
        with bb.dataflow():
            x = bb.emit(op.nn.conv2d(data, pv["stem.weight"], padding=[1, 1, 1, 1]))
            bn = bb.emit(op.nn.batch_norm(x, pv["bn.gamma"], pv["bn.beta"], pv["bn.mean"],
                                          pv["bn.var"], axis=1, training=False))
            x = bb.emit(relax.TupleGetItem(bn, 0))
            x = bb.emit(op.nn.relu(x))
            x = bb.emit(op.nn.max_pool2d(x, pool_size=[2, 2], strides=[2, 2]))
            y = bb.emit(op.nn.conv2d(x, pv["block.conv1.weight"], padding=[1, 1, 1, 1]))
            y = bb.emit(op.add(y, op.reshape(pv["block.conv1.bias"], [1, c, 1, 1])))
            y = bb.emit(op.nn.relu(y))
            y = bb.emit(op.nn.conv2d(y, pv["block.conv2.weight"], padding=[1, 1, 1, 1]))
            y = bb.emit(op.add(y, op.reshape(pv["block.conv2.bias"], [1, c, 1, 1])))
            x = bb.emit(op.add(x, y))
            x = bb.emit(op.nn.relu(x))
            x = bb.emit(op.mean(x, axis=[2, 3]))
            x = bb.emit(op.matmul(x, op.permute_dims(pv["fc.weight"])))
            x = bb.emit(op.add(x, pv["fc.bias"]))
            out = bb.emit_output(x)
        bb.emit_func_output(out)
    return bb.get(), params


def single_conv(weight: np.ndarray, bias: np.ndarray, in_shape, groups: int = 1, padding=(0, 0, 0, 0)):
    """One conv2d + bias add; weights as parameters "conv.weight"/"conv.bias"."""
    data = _param("data", tuple(in_shape))
    w = _param("conv.weight", weight.shape)
    b = _param("conv.bias", bias.shape)
    bb = relax.BlockBuilder()
    with bb.function("main", [data, w, b]):
        with bb.dataflow():
            x = bb.emit(relax.op.nn.conv2d(data, w, groups=groups, padding=list(padding)))
            x = bb.emit(relax.op.add(x, relax.op.reshape(b, [1, weight.shape[0], 1, 1])))
            out = bb.emit_output(x)
        bb.emit_func_output(out)
    return bb.get(), {"conv.weight": weight.astype("float32"), "conv.bias": bias.astype("float32")}


def mixed_ops(seed: int = 0):
    """Every annotate rule at least once: grouped/strided/dilated conv with asymmetric padding,
    ReLU6 clip, avg pool, concat, global average pool, flatten, dense."""
    rng = np.random.default_rng(seed)
    shapes = {"a.weight": (8, 3, 3, 3), "a.bias": (8,), "dw.weight": (8, 1, 3, 3),
              "b.weight": (4, 8, 1, 1), "fc.weight": (5, 12), "fc.bias": (5,)}
    params = {k: (rng.standard_normal(s) * 0.3).astype("float32") for k, s in shapes.items()}
    data = _param("data", (1, 3, 17, 17))
    pv = {name: _param(name, shape) for name, shape in shapes.items()}
    bb = relax.BlockBuilder()
    op = relax.op
    with bb.function("main", [data] + list(pv.values())):
        with bb.dataflow():
            x = bb.emit(op.nn.conv2d(data, pv["a.weight"], strides=[2, 2], padding=[0, 0, 1, 1]))
            x = bb.emit(op.add(x, op.reshape(pv["a.bias"], [1, 8, 1, 1])))
            x = bb.emit(op.clip(x, 0.0, 6.0))
            d = bb.emit(op.nn.conv2d(x, pv["dw.weight"], groups=8, padding=[2, 2, 2, 2], dilation=[2, 2]))
            d = bb.emit(op.nn.relu(d))
            p = bb.emit(op.nn.avg_pool2d(d, pool_size=[3, 3], strides=[1, 1], padding=[1, 1, 1, 1]))
            b = bb.emit(op.nn.conv2d(p, pv["b.weight"]))
            c = bb.emit(op.concat([x, b], axis=1))
            g = bb.emit(op.nn.adaptive_avg_pool2d(c, output_size=[1, 1]))
            f = bb.emit(op.reshape(g, [1, 12]))
            y = bb.emit(op.matmul(f, op.permute_dims(pv["fc.weight"])))
            y = bb.emit(op.add(y, pv["fc.bias"]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), params


def depthwise_block(seed: int = 0, channels: int = 4, size: int = 9):
    """Depthwise 3x3 stride-2 conv with TF "same" (asymmetric) padding + bias, ReLU, then a
    1x1 conv + bias: the EfficientNet pattern on which zero points meet padding."""
    rng = np.random.default_rng(seed)
    c = channels
    shapes = {"dw.weight": (c, 1, 3, 3), "dw.bias": (c,), "pw.weight": (2 * c, c, 1, 1),
              "pw.bias": (2 * c,)}
    params = {k: (rng.standard_normal(s) * 0.5).astype("float32") for k, s in shapes.items()}
    data = _param("data", (1, c, size, size))
    pv = {name: _param(name, shape) for name, shape in shapes.items()}
    bb = relax.BlockBuilder()
    op = relax.op
    with bb.function("main", [data] + list(pv.values())):
        with bb.dataflow():
            x = bb.emit(op.nn.conv2d(data, pv["dw.weight"], strides=[2, 2], padding=[0, 0, 1, 1],
                                     groups=c))
            x = bb.emit(op.add(x, op.reshape(pv["dw.bias"], [1, c, 1, 1])))
            x = bb.emit(op.nn.relu(x))
            y = bb.emit(op.nn.conv2d(x, pv["pw.weight"]))
            y = bb.emit(op.add(y, op.reshape(pv["pw.bias"], [1, 2 * c, 1, 1])))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), params


def dense_op_dense(op):
    """matmul -> op -> matmul on a (1, 4) input, identity weights: for ops with no rule."""
    data = relax.Var("data", relax.TensorType((1, 4), "float32"))
    w = relax.Var("fc.weight", relax.TensorType((4, 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [data, w]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(data, w))
            y = bb.emit(op(y))
            y = bb.emit(relax.op.matmul(y, w))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), {"fc.weight": np.eye(4, dtype="float32")}


def conv_dw_conv(seed: int = 0, channels: int = 6, spread: float = 3.0, relu6: bool = True,
                 size: int = 10, first_relu6: bool = False):
    """1x1 conv + bias -> ReLU (or ReLU6: ``first_relu6``) -> depthwise 3x3 + bias -> ReLU6 (or
    ReLU) -> 1x1 conv + bias: the MobileNet pattern, with the first conv's output channels
    scaled by 10^(0..spread) so per-channel weight ranges differ by orders of magnitude (what
    equalization repairs)."""
    rng = np.random.default_rng(seed)
    c = channels
    shapes = {"expand.weight": (c, 3, 1, 1), "expand.bias": (c,), "dw.weight": (c, 1, 3, 3),
              "dw.bias": (c,), "project.weight": (4, c, 1, 1), "project.bias": (4,)}
    params = {k: (rng.standard_normal(s) * 0.5).astype("float32") for k, s in shapes.items()}
    gains = 10.0 ** np.linspace(0, spread, c)
    params["expand.weight"] *= gains.reshape(-1, 1, 1, 1).astype("float32")
    params["expand.bias"] *= gains.astype("float32")
    params["dw.weight"] /= gains.reshape(-1, 1, 1, 1).astype("float32")
    data = _param("data", (1, 3, size, size))
    pv = {name: _param(name, shape) for name, shape in shapes.items()}
    bb = relax.BlockBuilder()
    op = relax.op
    with bb.function("main", [data] + list(pv.values())):
        with bb.dataflow():
            x = bb.emit(op.nn.conv2d(data, pv["expand.weight"]))
            x = bb.emit(op.add(x, op.reshape(pv["expand.bias"], [1, c, 1, 1])))
            x = bb.emit(op.clip(x, 0.0, 6.0) if first_relu6 else op.nn.relu(x))
            x = bb.emit(op.nn.conv2d(x, pv["dw.weight"], groups=c, padding=[1, 1, 1, 1]))
            x = bb.emit(op.add(x, op.reshape(pv["dw.bias"], [1, c, 1, 1])))
            x = bb.emit(op.clip(x, 0.0, 6.0) if relu6 else op.nn.relu(x))
            y = bb.emit(op.nn.conv2d(x, pv["project.weight"]))
            y = bb.emit(op.add(y, op.reshape(pv["project.bias"], [1, 4, 1, 1])))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), params


def residual_stack(seed: int = 0, channels: int = 20, size: int = 12, classes: int = 5):
    """stem 3x3 conv -> an identity residual block (3x3 conv -> 1x1 conv, + its input) -> a
    projection block (3x3 stride-2 conv -> 1x1 conv, + a 1x1 stride-2 conv of its input) ->
    global average pool -> dense. Each block's input is read by a padded 3x3 conv and by the
    add (or the projection), the case where one blocked tensor has a border and two readers;
    20 channels leave a partial 16-channel block."""
    rng = np.random.default_rng(seed)
    c = channels
    shapes = {"stem.weight": (c, 3, 3, 3), "stem.bias": (c,),
              "a.conv1.weight": (c, c, 3, 3), "a.conv1.bias": (c,),
              "a.conv2.weight": (c, c, 1, 1), "a.conv2.bias": (c,),
              "b.conv1.weight": (2 * c, c, 3, 3), "b.conv1.bias": (2 * c,),
              "b.conv2.weight": (2 * c, 2 * c, 1, 1), "b.conv2.bias": (2 * c,),
              "b.proj.weight": (2 * c, c, 1, 1), "b.proj.bias": (2 * c,),
              "fc.weight": (classes, 2 * c), "fc.bias": (classes,)}
    params = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 4
        params[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")
    data = _param("data", (1, 3, size, size))
    pv = {name: _param(name, shape) for name, shape in shapes.items()}
    bb = relax.BlockBuilder()
    op = relax.op

    def conv(x, name, stride=1, padding=0):
        out = int(shapes[name + ".weight"][0])
        y = bb.emit(op.nn.conv2d(x, pv[name + ".weight"], strides=[stride, stride],
                                 padding=[padding] * 4))
        return bb.emit(op.add(y, op.reshape(pv[name + ".bias"], [1, out, 1, 1])))

    with bb.function("main", [data] + list(pv.values())):
        with bb.dataflow():
            x = bb.emit(op.nn.relu(conv(data, "stem", padding=1)))
            y = conv(bb.emit(op.nn.relu(conv(x, "a.conv1", padding=1))), "a.conv2")
            x = bb.emit(op.nn.relu(bb.emit(op.add(x, y))))
            y = conv(bb.emit(op.nn.relu(conv(x, "b.conv1", stride=2, padding=1))), "b.conv2")
            x = bb.emit(op.nn.relu(bb.emit(op.add(y, conv(x, "b.proj", stride=2)))))
            x = bb.emit(op.mean(x, axis=[2, 3]))
            x = bb.emit(op.matmul(x, op.permute_dims(pv["fc.weight"])))
            out = bb.emit_output(bb.emit(op.add(x, pv["fc.bias"])))
        bb.emit_func_output(out)
    return bb.get(), params
