"""The fused int8 layer kernels: which layer calls run on which kernel, and how each is called.

``LAYER_KERNELS`` holds one rule per layer op of ``layer_ops.LAYER_OPS`` (a second rule for an
op is an error). A rule takes the layer call, the epilogue that follows it (``epilogue.py``)
and the per-call ``FuseOptions`` (whether its input arrives and its output leaves in the
blocked layout of ``packed.py``), and returns the scheduled PrimFunc with its constant
arguments, or None when the call is not one its kernels take. ``fuse.py`` finds the chains
and rewrites the graph.

* conv2d groups=1 and dense (matmul with a constant 2-D weight), int8/uint8 x int8 -> int32:
  the VNNI kernel (``vnni.conv2d_kernel``), when the target has avx512vnni (or, on
  ``vpmaddwd``, avx2); a conv2d whose
  input comes in the blocked layout, or in NCHW with at most 4 channels (an image), on AMX
  (``amx.conv2d_kernel``) when the target has amx-tile and amx-int8;
* depthwise conv2d (groups == in channels == out channels): ``depthwise.py``;
* max pool on int8 / uint8 codes (``pool.py``): no quantizer layer (it has no weight), but a
  kernel with an epilogue all the same, filed with ``register_pool``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tvm
from tvm import relax

from ...graph import const_value, is_const, op_name, registrar
from ...layer_ops import LAYER_OPS
from . import amx, depthwise_vnni, packed, vnni
from .depthwise import (depthwise_blocked_kernel, depthwise_kernel, depthwise_shift_correction,
                        pack_depthwise_weight)
from .blocked_store import fold_store_shift
from .epilogue import Epilogue, fold_into_first_add
from .pool import max_pool_kernel
from .vnni import KERNEL_TAG, VNNI


@dataclass
class LayerKernel:
    """How to call one fused kernel: its PrimFunc, the constants it takes after the data, and
    the output it writes (``reshape_to``: the layer's own shape when the kernel's differs;
    ``out_dtype``: when it is not the epilogue's, e.g. a packed uint8 output)."""

    func: tvm.tirx.PrimFunc
    name: str
    consts: List[np.ndarray]
    out_shape: Tuple[int, ...]
    reshape_to: Optional[Tuple[int, ...]] = None
    out_dtype: Optional[str] = None
    epilogue: Optional[Epilogue] = None  # the one the kernel computes, where the rule changed it


# LAYER_KERNELS[op](call, epilogue, options) -> LayerKernel, or None when this call (dtypes,
# groups, layout, target features) is not one the op's kernels take
LayerRule = Callable[[relax.Call, Epilogue, "FuseOptions"], Optional[LayerKernel]]
LAYER_KERNELS: Dict[str, LayerRule] = {}
_register_kernel = registrar(LAYER_KERNELS, what="layer kernel")


def register_layer(op: str):
    """``@register_layer(op)``: the fused kernel rule of a layer op of ``LAYER_OPS``."""
    if op not in LAYER_OPS:
        raise ValueError(f"{op!r} is not a layer op (layer_ops.LAYER_OPS: {sorted(LAYER_OPS)}); "
                         "register it there first, so every pass treats it as a layer")
    return _register_kernel(op)


def register_pool(op: str):
    """``@register_pool(op)``: the fused kernel rule of a pool, an op with no weight that
    reads and writes codes (so it is no layer of ``LAYER_OPS``)."""
    if op in LAYER_OPS:
        raise ValueError(f"{op!r} is a layer op: register its kernel with register_layer")
    return _register_kernel(op)


@dataclass(frozen=True)
class FuseOptions:
    vnni: bool = True        # conv2d groups=1 / dense on the packed kernel of ``vnni.py``
    isa: str = VNNI          # its 16x4 block on vpdpbusd, or on AVX2's vpmaddwd (``avx2.py``)
    amx: bool = False        # such a conv2d with a blocked input on AMX tiles instead
    depthwise: bool = True   # depthwise conv2d kernel
    epilogue: bool = True    # fuse the elementwise chain (False: bare layers, int32 out)
    packed_links: bool = True  # VNNI / depthwise conv -> such a conv: the blocked layout between
    sides: bool = True       # a residual add's other branch read inside the kernel (``Side``)
    pools: bool = True       # max pools on codes, with their epilogue (``pool.py``)
    # per call, set by the rewrite: this layer's input comes packed / its output goes packed,
    # bordered with its readers' widest padding
    input_packed: bool = False
    input_border: Tuple[int, int, int, int] = (0, 0, 0, 0)  # the packed input's border
    output_packed: bool = False
    output_padding: Tuple[int, int, int, int] = (0, 0, 0, 0)  # the border it writes


def int8_operands(call) -> Optional[Tuple[str, np.ndarray]]:
    data, weight = call.args[0], call.args[1]
    data_dtype = str(data.ty.dtype)
    if data_dtype not in ("int8", "uint8") or not is_const(weight):
        return None
    if str(weight.ty.dtype) != "int8" or str(call.ty.dtype) != "int32":
        return None
    return data_dtype, const_value(weight)


def nchw_layouts(attrs) -> bool:
    return (str(attrs.data_layout) == "NCHW" and str(attrs.kernel_layout) == "OIHW"
            and str(attrs.out_layout or attrs.data_layout) == "NCHW")


def on_vnni_conv(call: relax.Call, options: FuseOptions) -> bool:
    """Whether ``call`` runs on the VNNI conv2d kernel."""
    return (options.vnni and op_name(call) == "relax.nn.conv2d"
            and int8_operands(call) is not None and nchw_layouts(call.attrs)
            and int(call.attrs.groups) == 1)


def on_depthwise(call: relax.Call, options: FuseOptions) -> bool:
    """Whether ``call`` runs on a depthwise kernel (groups == in channels == out channels)."""
    if not (options.depthwise and op_name(call) == "relax.nn.conv2d"):
        return False
    operands = int8_operands(call)
    if operands is None or not nchw_layouts(call.attrs):
        return False
    weight = operands[1]
    channels = int(call.args[0].ty.shape[1])
    return int(call.attrs.groups) == channels == weight.shape[0] and weight.shape[1] == 1


def on_max_pool(call: relax.Call, options: FuseOptions) -> bool:
    """Whether ``call`` runs on the max pool kernel (codes, NCHW, no ceil mode)."""
    if not (options.pools and op_name(call) == "relax.nn.max_pool2d"):
        return False
    a = call.attrs
    return (str(call.args[0].ty.dtype) in ("int8", "uint8") and str(a.layout) == "NCHW"
            and str(a.out_layout or a.layout) == "NCHW" and not bool(a.ceil_mode))


def links_packed(call: relax.Call, options: FuseOptions) -> bool:
    """Whether ``call``'s kernel reads and writes the blocked layout of ``packed.py``."""
    return on_vnni_conv(call, options) or on_depthwise(call, options) or on_max_pool(call, options)


def border_read(call: relax.Call) -> Tuple[int, int, int, int]:
    """The border ``call``'s kernel needs its blocked input to have: a conv's zero padding; none
    for a max pool, which pads with the smallest code by checking its taps itself."""
    if op_name(call) == "relax.nn.max_pool2d":
        return (0, 0, 0, 0)
    if int(call.attrs.groups) > 1:  # a depthwise conv (the only grouped conv that links)
        window = [int(s) for s in list(call.args[1].ty.shape)[2:]]
        return depthwise_vnni.border_needed(call.attrs.padding, window, call.attrs.dilation)
    return tuple(int(p) for p in call.attrs.padding)


def _with_shift_correction(epilogue: Epilogue, correction: np.ndarray, channels: int,
                           ndim: int):
    """(the epilogue, the kernel's correction constants): the shift correction of its first
    ``channels`` folded into the epilogue's bias add where it has one (no constant then), else
    the correction as it is."""
    folded = fold_into_first_add(epilogue, -correction[:channels].astype(np.int64), ndim)
    return (folded, []) if folded is not None else (epilogue, [correction])


@register_layer("relax.nn.conv2d")
def _conv2d_kernel(call, epilogue: Epilogue, options: FuseOptions) -> Optional[LayerKernel]:
    operands = int8_operands(call)
    if operands is None or not nchw_layouts(call.attrs):
        return None
    data_dtype, weight = operands
    a = call.attrs
    data_shape = [int(s) for s in call.args[0].ty.shape]
    out_shape = tuple(int(s) for s in call.ty.shape)
    if on_vnni_conv(call, options):
        epilogue, corrections = _with_shift_correction(
            epilogue, packed.shift_correction(weight, data_dtype), weight.shape[0], 4)
        if (options.amx and options.isa == VNNI
                and amx.takes(weight.shape[2:], a.dilation, data_shape[1], options.input_packed)):
            func = amx.conv2d_kernel(data_shape, weight.shape, data_dtype, a.strides, a.padding,
                                     epilogue=epilogue, input_border=options.input_border,
                                     output_packed=options.output_packed,
                                     output_padding=options.output_padding,
                                     shift_correction=bool(corrections),
                                     input_packed=options.input_packed)
            name = "conv2d_int8_amx"
            packed_weight = amx.pack_weight(weight, options.input_packed)
        else:
            stored = fold_store_shift(epilogue) if options.output_packed else None
            epilogue = stored or epilogue
            func = vnni.conv2d_kernel(data_shape, weight.shape, data_dtype, a.strides,
                                      a.padding, a.dilation, epilogue=epilogue,
                                      input_packed=options.input_packed,
                                      input_border=options.input_border,
                                      output_packed=options.output_packed,
                                      output_padding=options.output_padding,
                                      isa=options.isa, shift_correction=bool(corrections),
                                      stored_output=stored is not None)
            name = "conv2d_int8_" + KERNEL_TAG[options.isa]
            packed_weight = vnni.pack_weight(weight, options.input_packed, options.isa)
        consts = [packed_weight, *corrections]
        kernel = LayerKernel(func, name, consts, out_shape, epilogue=epilogue)
        return _maybe_packed(kernel, options, epilogue.dtype)
    if on_depthwise(call, options):
        if not (options.input_packed or options.output_packed):
            func = depthwise_kernel(data_shape, weight.shape, data_dtype, a.strides, a.padding,
                                    a.dilation, epilogue=epilogue)
            return LayerKernel(func, "depthwise_conv2d_int8", [weight], out_shape)
        if _on_depthwise_vnni(call, options):
            epilogue, corrections = _with_shift_correction(
                epilogue, depthwise_shift_correction(weight, data_dtype), weight.shape[0], 4)
            func = depthwise_vnni.depthwise_kernel(
                data_shape, weight.shape, data_dtype, a.strides, a.padding, epilogue=epilogue,
                input_packed=options.input_packed, input_border=options.input_border,
                output_packed=options.output_packed, shift_correction=bool(corrections))
            consts = [depthwise_vnni.pack_weight(weight), *corrections]
            kernel = LayerKernel(func, "depthwise_conv2d_int8_vnni", consts, out_shape,
                                 epilogue=epilogue)
            return _maybe_packed(kernel, options, epilogue.dtype)
        func = depthwise_blocked_kernel(data_shape, weight.shape, data_dtype, a.strides,
                                        a.padding, a.dilation, epilogue=epilogue,
                                        input_packed=options.input_packed,
                                        input_border=options.input_border,
                                        output_packed=options.output_packed,
                                        output_padding=options.output_padding)
        consts = [pack_depthwise_weight(weight), depthwise_shift_correction(weight, data_dtype)]
        kernel = LayerKernel(func, "depthwise_conv2d_int8_blocked", consts, out_shape)
        return _maybe_packed(kernel, options, epilogue.dtype)
    if options.input_packed or options.output_packed:
        raise AssertionError("only VNNI and depthwise kernels link packed")  # _packed_links' rule
    return None


def _on_depthwise_vnni(call: relax.Call, options: FuseOptions) -> bool:
    """Whether a depthwise conv runs on ``depthwise_vnni`` (VNNI target, dilation 1, an NCHW
    output of whole 16-channel blocks or a blocked one without a border)."""
    window = [int(s) for s in list(call.args[1].ty.shape)[2:]]
    if not (options.vnni and options.isa == VNNI
            and depthwise_vnni.takes(window, call.attrs.dilation)):
        return False
    if options.output_packed:
        return not any(options.output_padding)
    return int(call.ty.shape[1]) % depthwise_vnni.LANES == 0


def _maybe_packed(kernel: LayerKernel, options: FuseOptions, dtype: Optional[str]) -> LayerKernel:
    """A kernel that writes the blocked layout: its output has the packed shape, stored as
    ``packed.stored_dtype`` of the epilogue's (uint8 for int8 / uint8 codes)."""
    if not options.output_packed:
        return kernel
    return replace(kernel, name=kernel.name + "_packed",
                   out_dtype=packed.stored_dtype(dtype or "int32"),
                   out_shape=packed.packed_shape(kernel.out_shape, options.output_padding))


@register_layer("relax.matmul")
def _dense_kernel(call, epilogue: Epilogue, options: FuseOptions) -> Optional[LayerKernel]:
    operands = int8_operands(call)
    if operands is None or not options.vnni:
        return None
    data_dtype, weight = operands
    if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:  # (N, K) x (K, M) only
        return None
    rows, k = (int(s) for s in call.args[0].ty.shape)
    weight = np.ascontiguousarray(weight.T)[:, :, None, None]
    epilogue, corrections = _with_shift_correction(
        epilogue, packed.shift_correction(weight, data_dtype), weight.shape[0], 2)
    # the kernel computes (rows, M, 1, 1); the epilogue indexes the layer's (rows, M)
    func = vnni.conv2d_kernel((rows, k, 1, 1), weight.shape, data_dtype, epilogue=epilogue,
                              epilogue_index=lambda i, oc, y, x: (i, oc), isa=options.isa,
                              shift_correction=bool(corrections))
    consts = [vnni.pack_weight(weight, isa=options.isa), *corrections]
    return LayerKernel(func, "dense_int8_" + KERNEL_TAG[options.isa], consts,
                       (rows, weight.shape[0], 1, 1), reshape_to=(rows, weight.shape[0]),
                       epilogue=epilogue)


@register_pool("relax.nn.max_pool2d")
def _max_pool_kernel(call, epilogue: Epilogue, options: FuseOptions) -> Optional[LayerKernel]:
    if not on_max_pool(call, options):
        return None
    a = call.attrs
    out_shape = tuple(int(s) for s in call.ty.shape)
    func = max_pool_kernel([int(s) for s in call.args[0].ty.shape], out_shape,
                           str(call.args[0].ty.dtype), a.pool_size, a.strides, a.padding,
                           a.dilation, epilogue=epilogue, input_packed=options.input_packed,
                           input_border=options.input_border,
                           output_packed=options.output_packed,
                           output_padding=options.output_padding)
    dtype = epilogue.dtype or str(call.ty.dtype)  # no epilogue: the pooled codes
    kernel = LayerKernel(func, "max_pool2d_int8", [], out_shape, out_dtype=dtype)
    return _maybe_packed(kernel, options, dtype)


def layer_macs(call: relax.Call) -> int:
    """Multiply-accumulates of a conv2d (NCHW / OIHW, any groups) or (N, K) x (K, M) matmul;
    0 for an op with no weight (a pool)."""
    if len(call.args) < 2:
        return 0
    weight = [int(d) for d in call.args[1].ty.shape]
    outputs = int(np.prod([int(d) for d in call.ty.shape]))
    if op_name(call) == "relax.matmul":
        return outputs * weight[0]
    return outputs * weight[1] * weight[2] * weight[3]  # (O, C / groups, KH, KW)


def layer_window(call: relax.Call) -> str:
    """A conv2d's kernel window as "KHxKW"; "" for any other layer."""
    if op_name(call) != "relax.nn.conv2d":
        return ""
    kh, kw = (int(d) for d in list(call.args[1].ty.shape)[2:])
    return f"{kh}x{kw}"


def layer_output_range(call: relax.Call) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The range of an int8 conv2d's or matmul's int32 output per output channel (two
    arrays), from its constant weight and its input's code type: the sum of each weight times
    whichever end of the code range gives the smallest / largest product (zero padding lies
    within it). None when the call is not such a layer, or when the range leaves int32 (the
    output wraps)."""
    operands = int8_operands(call) if len(call.args) >= 2 else None
    if operands is None:
        return None
    data_dtype, weight = operands
    info = np.iinfo(data_dtype)
    w = weight.astype(np.int64)
    reduced = (0,) if op_name(call) == "relax.matmul" else tuple(range(1, w.ndim))
    ends = (w * int(info.min), w * int(info.max))
    lo, hi = np.minimum(*ends).sum(axis=reduced), np.maximum(*ends).sum(axis=reduced)
    return (lo, hi) if -2**31 <= lo.min() and hi.max() < 2**31 else None
