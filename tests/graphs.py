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


def int8_conv_block(seed: int = 0, batch: int = 1, in_ch: int = 8, out_ch: int = 16, size: int = 10,
                    data_dtype: str = "int8", padding=(1, 1, 1, 1), strides=(1, 1), classes: int = 0):
    """An integer-only layer as the integer realize emits it: int8/uint8 input, conv2d int8 x int8
    -> int32, int32 bias add, requantize by an int64 fixed-point multiply and rounding shift,
    clip and cast back to int8; optionally a flatten + int8 dense (-> int32 logits).

    Returns (mod, reference) where reference(x) computes the same in numpy.
    """
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (out_ch, in_ch, 3, 3)).astype("int8")
    bias = rng.integers(-2000, 2000, out_ch).astype("int32")
    mult = rng.integers(1 << 29, 1 << 30, out_ch).astype("int64")   # Q31 multiplier
    shift = 31 + 10                                                    # M = mult * 2^-41
    op = relax.op
    x_shape = (batch, in_ch, size, size)
    data = relax.Var("data", relax.TensorType(x_shape, data_dtype))
    bb = relax.BlockBuilder()
    fc_w = None
    with bb.function("main", [data]):
        with bb.dataflow():
            y = bb.emit(op.nn.conv2d(data, relax.const(w, "int8"), strides=list(strides),
                                     padding=list(padding), out_dtype="int32"))
            y = bb.emit(op.add(y, relax.const(bias.reshape(1, -1, 1, 1), "int32")))
            y = bb.emit(op.astype(y, "int64"))
            y = bb.emit(op.multiply(y, relax.const(mult.reshape(1, -1, 1, 1), "int64")))
            y = bb.emit(op.right_shift(op.add(y, relax.const(1 << (shift - 1), "int64")),
                                       relax.const(shift, "int64")))
            y = bb.emit(op.astype(op.clip(y, -128, 127), "int8"))
            if classes:
                flat = int(np.prod([int(d) for d in y.ty.shape][1:]))
                fc_w = rng.integers(-127, 128, (classes, flat)).astype("int8")
                y = bb.emit(op.reshape(y, [batch, flat]))
                y = bb.emit(op.matmul(y, op.permute_dims(relax.const(fc_w, "int8")), out_dtype="int32"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)

    def reference(x: np.ndarray) -> np.ndarray:
        pt, pl, pb, pr = padding
        xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        oh = (xp.shape[2] - 3) // strides[0] + 1
        ow = (xp.shape[3] - 3) // strides[1] + 1
        acc = np.zeros((batch, out_ch, oh, ow), np.int64)
        for ky in range(3):
            for kx in range(3):
                patch = xp[:, :, ky:ky + strides[0] * oh:strides[0], kx:kx + strides[1] * ow:strides[1]]
                acc += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx].astype(np.int64))
        acc += bias.reshape(1, -1, 1, 1)
        q = (acc * mult.reshape(1, -1, 1, 1) + (1 << (shift - 1))) >> shift
        q = np.clip(q, -128, 127).astype(np.int64)
        if classes:
            return (q.reshape(batch, -1) @ fc_w.T.astype(np.int64)).astype("int32")
        return q.astype("int8")

    return bb.get(), reference
