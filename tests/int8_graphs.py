"""Hand-written integer-only Relax graphs (what the integer realize emits) for build tests."""
from __future__ import annotations

import numpy as np
from tvm import relax


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
