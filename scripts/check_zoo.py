"""Check tvm_quant_ext.zoo: fp32 Relax vs torch, accuracies, op counts, timing.

Usage: python scripts/check_zoo.py [MODEL ...]   (default: every zoo model; the torch ones
are compared with torch, the others loaded and built)
"""
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from tvm_quant_ext import zoo  # noqa: E402


def op_counts(mod):
    """Count Relax op calls in main after BindParams + FoldConstant."""
    cnt = collections.Counter()

    def visit(e):
        if isinstance(e, relax.Call):
            op = e.op
            if isinstance(op, tvm.ir.Op):
                cnt[op.name] += 1
            elif isinstance(op, relax.GlobalVar) or hasattr(op, "name_hint"):
                cnt["call:" + str(getattr(op, "name_hint", op))] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])))


def build(m):
    mod = relax.transform.BindParams("main", m.params)(m.mod)
    folded = relax.transform.FoldConstant()(mod)
    ops = op_counts(folded)
    t = time.time()
    mod = relax.get_pipeline("zero")(mod)
    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm, ops, time.time() - t


def run_batches(fn, images, bs):
    outs = []
    for i in range(0, len(images), bs):
        x = images[i : i + bs]
        n = len(x)
        if n < bs:
            x = np.concatenate([x, np.zeros((bs - n,) + x.shape[1:], x.dtype)])
        outs.append(fn(np.ascontiguousarray(x))[:n])
    return np.concatenate(outs)


def main(names):
    for name in names:
        bs = zoo.MODELS[name].default_batch
        t = time.time()
        m = zoo.load(name, batch_size=bs)
        t1 = time.time() - t
        t = time.time()
        m = zoo.load(name, batch_size=bs)
        t2 = time.time() - t
        pnames = [str(v.name) for v in m.mod["main"].params]
        assert pnames[0] == m.input_name and pnames[1:] == list(m.params), "param names mismatch"
        print(f"== {name}: load {t1:.2f}s / again {t2:.2f}s, input_name={m.input_name!r}, "
              f"batch={m.batch_size}, {len(m.params)} params, first 5: {list(m.params)[:5]}")
        print(f"   calib {m.calib.shape}; eval sets: "
              + ", ".join(f"{e.name} {e.images.shape} labels={'yes' if e.labels is not None else 'no'}" for e in m.eval_sets))
        vm, ops, tb = build(m)
        print(f"   build {tb:.1f}s; ops after BindParams+FoldConstant: {ops}")

        def tvm_fn(x):
            return vm["main"](tvm.runtime.tensor(x)).numpy()

        if m.torch_model is None:  # the Gluon models: tests/test_frontend_mxnet.py checks them
            print("   no torch reference: loaded and built only")
            continue

        def torch_fn(x):
            with torch.no_grad():
                return m.torch_model(torch.from_numpy(x)).numpy()

        for es in m.eval_sets:
            t = time.time()
            out = run_batches(tvm_fn, es.images, bs)
            tt = time.time() - t
            ref = run_batches(torch_fn, es.images, bs)
            diff = float(np.abs(out - ref).max())
            top_tvm, top_ref = out.argmax(1), ref.argmax(1)
            msg = f"   {es.name}: max|tvm-torch|={diff:.2e}, top1 agreement {int((top_tvm == top_ref).sum())}/{len(out)}"
            if es.labels is not None:
                acc = (top_tvm == es.labels).mean() * 100
                acc_t = (top_ref == es.labels).mean() * 100
                msg += f", acc tvm {int((top_tvm == es.labels).sum())}/{len(out)} = {acc:.2f}% (torch {acc_t:.2f}%)"
            msg += f", tvm time {tt:.1f}s ({tt / max(1, -(-len(out) // bs)) * 1000:.0f} ms/batch)"
            print(msg)

        # preprocess callable round trip on one file
        if name == "efficientnet_lite0":
            fdir = os.path.join(zoo.package_dir("foolbox"), "data")
            f = sorted(os.listdir(fdir))
            f = [x for x in f if x.startswith("imagenet_")][0]
            x = m.preprocess(os.path.join(fdir, f))
            print(f"   preprocess({f}) -> {x.shape} {x.dtype}, equals cached: {np.array_equal(x, m.eval_sets[0].images[0])}")
            x = m.eval_sets[0].images[:1]
            tvm_fn(x)
            ts = []
            for _ in range(3):
                t = time.time()
                tvm_fn(x)
                ts.append(time.time() - t)
            print(f"   one-image latency (untuned llvm, zero pipeline): {min(ts) * 1000:.0f} ms (min of 3)")


if __name__ == "__main__":
    main(sys.argv[1:] or list(zoo.MODELS))
