"""EqualizeLayers: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization").

For consecutive layers A -> [bias] -> [ReLU | ReLU6] -> B, where each tensor between them is
read only by the next, A's output channel i can be divided by s_i > 0 and B's input channel i
multiplied by s_i without changing the function: a positive scale commutes with ReLU, and with
a clip once the clip bound moves with it (clip(x, 0, 6) / s = clip(x / s, 0, 6 / s)). ReLU6 is
rewritten as ``minimum(relu(x), 6 / s)`` with a per-channel bound, which annotate and both
realize modes carry (the bound is applied to the codes at the next requantize); through a clip
s is kept >= 1, so a bound only moves down (see CLIPPED_MIN_SCALE). Choosing
``s_i = sqrt(r_A[i] * r_B[i]) / r_B[i]`` (r_A: range of A's output-channel filter, r_B: range
of B's input-channel weights) gives both layers the same per-channel range, so one per-tensor
weight scale fits every channel.

A depthwise layer in a chain (conv -> depthwise -> conv) is the B of one pair and the A of the
next; its filter i is both its input and its output channel. The pairs are equalized in
turn, repeatedly, until the scales stop moving. Pairs are skipped (and listed) when the layers
are not NCHW/OIHW convs with groups 1 or depthwise, or the clip's lower bound is not 0 (a
negative bound moves too, but would need a second per-channel op).

High-bias absorption (the paper's section 4.2), after the scales settle: where A's
pre-activation x_i is provably >= c_i > 0, c_i leaves A's bias and enters B's (B's bias +=
sum_k W_B[:, i, k] * c_i), since relu(x) = relu(x - c) + c when x >= c, and likewise
min(relu(x), u) = min(relu(x - c), u - c) + c (the ReLU6 bound moves down by c). That shrinks
the channel's activation range without changing the float function. The paper takes
c = max(0, beta - 3 gamma) from the BatchNorm, which holds for most, not all, inputs and needs
the BatchNorm the folded graph no longer has; here c is a bound that holds for every input:
A's input is the output of a ReLU6 (or a moved bound), so in [0, U], and
x_i >= b_i + sum_{j,k} min(0, W_A[i, j, k]) * U_j. Skipped (and listed) when A's input has no
upper bound (plain ReLU or no activation), when A has no bias, or when B pads its input (the
zeros at the border would not carry the absorbed constant) or has no bias of its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax

from ...graph import (BindingRewriter, bindings, const_value, is_const, make_const, op_name,
                      var_uses)

EQUALIZE_ATTR = "tvm_quant_ext.equalize"
# Pairs share layers (conv -> depthwise -> conv, and chains through linear bottlenecks), so
# equalizing one pair moves its neighbours: repeat until no scale moves by more than TOLERANCE
# (in log) in a round. On EfficientNet-Lite0 the largest move shrinks ~0.75x per round.
ROUNDS = 100
TOLERANCE = 1e-3
# A channel whose filter range is below this fraction of its layer's largest is dead (BatchNorm
# gamma ~ 0: weights 1e-10 next to 1): its output is its bias, and 1/s would make that constant
# the largest value of the tensor. Such channels keep s = 1. (On Lite0 without this rule
# equalization took per-tensor SNR from 7.0 to only 9.5 dB and per-channel from 17.9 to 9.1.)
NEGLIGIBLE = 1e-3
# Through ReLU6 the bound moves to 6 / s. s < 1 would raise it above 6 and widen the
# per-tensor activation range that all channels share; s >= 1 only ever lowers it. (Lite0,
# per-channel weights: 16.7 dB with this floor, 12.1 without; per-tensor: 12.1 vs 12.6.)
CLIPPED_MIN_SCALE = 1.0
# High-bias absorption after the scales (exact: see the module docstring); False turns it off
# (equalization as it was before, kept to measure what absorption adds).
ABSORB_HIGH_BIAS = True


def equalize_scales(range_a: np.ndarray, range_b: np.ndarray, negligible: float = 0.0,
                    min_scale: float = 0.0) -> np.ndarray:
    """Per-channel s with range_a / s == range_b * s == sqrt(range_a * range_b); 1 where a
    channel's range on either side is at most ``negligible`` times that layer's largest (a
    dead channel: its output is its bias, which 1/s would blow up), and at least ``min_scale``."""
    range_a, range_b = np.asarray(range_a, np.float64), np.asarray(range_b, np.float64)
    ok = (range_a > negligible * range_a.max(initial=0)) & (range_b > negligible * range_b.max(initial=0))
    ok &= (range_a > 0) & (range_b > 0)
    s = np.where(ok, np.sqrt(np.where(ok, range_a / np.where(ok, range_b, 1), 1)), 1.0)
    return np.maximum(s, min_scale)


def _is_depthwise(call) -> bool:
    weight = const_value(call.args[1])
    return int(call.attrs.groups) == weight.shape[0] and weight.shape[1] == 1


def _conv_kind(call) -> Optional[str]:
    """'conv' (groups 1) or 'depthwise' for an NCHW/OIHW conv2d with a constant weight."""
    if op_name(call) != "relax.nn.conv2d" or not is_const(call.args[1]):
        return None
    attrs = call.attrs
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout)) \
            != ("NCHW", "OIHW", "NCHW"):
        return None
    if int(attrs.groups) == 1:
        return "conv"
    return "depthwise" if _is_depthwise(call) else None


@dataclass
class _Pair:
    a: relax.Var
    bias: Optional[relax.Var]
    act: Optional[relax.Var]
    act_op: Optional[str]
    b: relax.Var
    upper: Optional[np.ndarray] = None  # ReLU6: the per-channel clip bound


class _Equalizer(BindingRewriter):
    def __init__(self):
        super().__init__()
        self.weights: Dict[relax.Var, np.ndarray] = {}
        self.biases: Dict[relax.Var, np.ndarray] = {}
        self.pairs: List[_Pair] = []
        self.skipped: List[Dict[str, str]] = []
        self.absorbed: List[Dict[str, object]] = []
        self.rounds = 0

    # -- analysis ---------------------------------------------------------------------
    def _pair_into(self, b_var, defs, uses) -> Optional[_Pair]:
        x = defs[b_var].args[0]
        act = act_op = None
        if isinstance(x, relax.Var) and op_name(defs.get(x)) in ("relax.nn.relu", "relax.clip"):
            act, act_op, x = x, op_name(defs[x]), defs[x].args[0]
        bias = None
        if isinstance(x, relax.Var) and op_name(defs.get(x)) == "relax.add" and is_const(defs[x].args[1]):
            bias, x = x, defs[x].args[0]
        if not isinstance(x, relax.Var) or _conv_kind(defs.get(x)) is None:
            return None
        chain = [v for v in (x, bias, act) if v is not None]
        if any(uses.get(v, 0) != 1 for v in chain):
            return None  # a tensor between them is read elsewhere: scaling it would show
        names = f"{x.name} -> {b_var.name}"
        if act_op == "relax.clip":
            lo, hi = (float(a.value) for a in defs[act].args[1:3])
            if lo != 0.0:
                self.skipped.append({"pair": names, "reason": f"clip lower bound {lo} is not 0"})
                return None
        channels = const_value(defs[x].args[1]).shape[0]
        if bias is not None and const_value(defs[bias].args[1]).size != channels:
            self.skipped.append({"pair": names, "reason": "bias is not per channel"})
            return None
        pair = _Pair(x, bias, act, act_op, b_var)
        if act_op == "relax.clip":
            pair.upper = np.full(channels, hi)
        return pair

    def analyse(self, func):
        defs = {b.var: b.value for b in bindings(func)}
        uses = var_uses(func)
        for var, value in defs.items():
            kind = _conv_kind(value)
            if kind is None:
                continue
            self.weights[var] = const_value(value.args[1]).astype(np.float64)
            pair = self._pair_into(var, defs, uses)
            if pair is not None:
                self.pairs.append(pair)
                if pair.bias is not None:
                    self.biases[pair.bias] = const_value(defs[pair.bias].args[1]).astype(np.float64)
        self.kinds = {var: _conv_kind(defs[var]) for var in self.weights}
        for _ in range(ROUNDS):
            self.rounds += 1
            moved = max((self._equalize(p) for p in self.pairs), default=0.0)
            if moved < TOLERANCE:
                break
        if ABSORB_HIGH_BIAS:
            for pair in self.pairs:  # graph order: a pair's input bound is already final
                self._absorb(pair, defs, uses)

    def _input_bound(self, pair: _Pair, defs) -> Optional[np.ndarray]:
        """Per input channel of A, an upper bound of A's input (which is >= 0), or None."""
        x = defs[pair.a].args[0]
        channels = self.weights[pair.a].shape[0 if self.kinds[pair.a] == "depthwise" else 1]
        before = next((p for p in self.pairs if p.act is not None and p.act == x), None)
        if before is not None:
            return None if before.upper is None else before.upper
        value = defs.get(x) if isinstance(x, relax.Var) else None
        if op_name(value) == "relax.clip" and float(value.args[1].value) == 0.0:
            return np.full(channels, float(value.args[2].value))
        return None

    def _absorb(self, pair: _Pair, defs, uses) -> None:
        if pair.act is None:
            return  # a linear pair: nothing is clipped, nothing to absorb through
        names = f"{pair.a.name} -> {pair.b.name}"

        def skip(reason):
            self.skipped.append({"pair": names, "reason": f"high-bias absorption: {reason}"})

        b_call = defs[pair.b]
        b_bias = next((v for v, value in defs.items() if op_name(value) == "relax.add"
                       and value.args[0] == pair.b and is_const(value.args[1])), None)
        if pair.bias is None:
            return skip("A has no bias")
        if any(int(p) != 0 for p in b_call.attrs.padding):
            return skip("B pads its input (the border would lose the absorbed constant)")
        if b_bias is None or uses.get(pair.b, 0) != 1:
            return skip("B has no bias of its own")
        bound = self._input_bound(pair, defs)
        if bound is None:
            return skip("A's input has no upper bound (not a ReLU6 output)")
        wa, bias = self.weights[pair.a], self.biases[pair.bias].reshape(-1)
        negative = np.minimum(wa, 0.0)
        if self.kinds[pair.a] == "depthwise":
            lower = bias + negative.reshape(wa.shape[0], -1).sum(axis=1) * bound
        else:
            lower = bias + np.einsum("ijhw,j->i", negative, bound)
        c = np.maximum(lower, 0.0)
        if pair.upper is not None:
            c = np.minimum(c, pair.upper)
        if not np.any(c > 0):
            return
        wb = self.weights[pair.b]
        if self.kinds[pair.b] == "depthwise":
            shift = wb.reshape(wb.shape[0], -1).sum(axis=1) * c
        else:
            shift = wb.sum(axis=(2, 3)) @ c
        if b_bias not in self.biases:
            self.biases[b_bias] = const_value(defs[b_bias].args[1]).astype(np.float64)
        b_shape = self.biases[b_bias].shape
        self.biases[pair.bias] = (bias - c).reshape(self.biases[pair.bias].shape)
        self.biases[b_bias] = self.biases[b_bias] + shift.reshape(b_shape)
        if pair.upper is not None:
            pair.upper = pair.upper - c
        self.absorbed.append({"pair": names, "channels": int(np.sum(c > 0)),
                              "max_absorbed": round(float(c.max()), 4)})

    def _equalize(self, pair: _Pair) -> float:
        wa, wb = self.weights[pair.a], self.weights[pair.b]
        range_a = np.abs(wa).reshape(wa.shape[0], -1).max(axis=1)
        if self.kinds[pair.b] == "depthwise":
            range_b = np.abs(wb).reshape(wb.shape[0], -1).max(axis=1)
            b_shape = (-1, 1, 1, 1)
        else:
            range_b = np.abs(wb).transpose(1, 0, 2, 3).reshape(wb.shape[1], -1).max(axis=1)
            b_shape = (1, -1, 1, 1)
        s = equalize_scales(range_a, range_b, NEGLIGIBLE,
                            CLIPPED_MIN_SCALE if pair.upper is not None else 0.0)
        self.weights[pair.a] = wa / s.reshape(-1, 1, 1, 1)
        self.weights[pair.b] = wb * s.reshape(b_shape)
        if pair.bias is not None:
            self.biases[pair.bias] = self.biases[pair.bias] / s.reshape(self.biases[pair.bias].shape)
        if pair.upper is not None:
            pair.upper = pair.upper / s
        return float(np.max(np.abs(np.log(s)), initial=0.0))

    # -- rewrite ----------------------------------------------------------------------
    def rewrite_function(self, func):
        self.analyse(func)
        self.acts = {p.act: p for p in self.pairs if p.upper is not None}
        self.touched = {v for p in self.pairs for v in (p.a, p.b)}
        return super().rewrite_function(func)

    def visit(self, var, value):
        if var in self.touched:
            weight = make_const(self.weights[var], value.args[1].ty.dtype)
            return relax.Call(value.op, [value.args[0], weight] + list(value.args[2:]),
                              value.attrs, list(value.ty_args))
        if var in self.biases:
            return relax.op.add(value.args[0], make_const(self.biases[var], value.args[1].ty.dtype))
        pair = self.acts.get(var)
        if pair is not None:  # ReLU6 with the bound moved: minimum(relu(x), 6 / s)
            relu = self.emit(relax.op.nn.relu(value.args[0]), f"{var.name}.relu")
            bound = make_const(pair.upper.reshape(1, -1, 1, 1), str(var.ty.dtype))
            return relax.op.minimum(relu, bound)
        return value

    def summary(self) -> dict:
        return {"pairs": [f"{p.a.name} -> {p.b.name}" + (" (ReLU6 bound moved)" if p.upper is not None else "")
                          for p in self.pairs],
                "skipped": self.skipped, "rounds": self.rounds, "absorbed": self.absorbed}


@tvm.transform.module_pass(opt_level=0, name="EqualizeLayers")
def EqualizeLayers(mod: tvm.IRModule, _ctx=None) -> tvm.IRModule:  # pylint: disable=invalid-name
    """Cross-layer equalization of main's conv pairs (run after CanonicalizeBias); what was
    equalized and skipped is in the module attribute ``EQUALIZE_ATTR`` (and the report)."""
    equalizer = _Equalizer()
    out = equalizer(mod)
    return out.with_attr(EQUALIZE_ATTR, json.dumps(equalizer.summary()))
