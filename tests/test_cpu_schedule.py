"""Default CPU schedule for unscheduled kernels: parallel + vectorized, results unchanged."""
import numpy as np
import tvm
from tvm import relax

import tvm_quant_ext
from tvm_quant_ext.backend.build import lower
from tvm_quant_ext.backend.cpu.schedule import default_cpu_schedule, is_scheduled

from graphs import tiny_resnet


def test_every_kernel_gets_parallel_loops_and_fp32_results_stay():
    mod, params = tiny_resnet(channels=16)
    fp32 = tvm_quant_ext.passes.prepare(mod, params)
    lowered = lower(fp32, tvm.target.Target({"kind": "llvm"}))
    scheduled = default_cpu_schedule(lowered)
    funcs = [f for _, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert funcs and all(is_scheduled(f) for f in funcs)
    scripts = [f.script() for f in funcs]
    assert all("T.parallel" in s for s in scripts), [s for s in scripts if "T.parallel" not in s]
    assert any("T.vectorized" in s for s in scripts)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    plain = relax.VirtualMachine(tvm.compile(lowered, "llvm"), tvm.cpu())
    fast = tvm_quant_ext.build(fp32, "llvm")
    np.testing.assert_allclose(fast(x), plain["main"](tvm.runtime.tensor(x)).numpy(),
                               rtol=1e-5, atol=1e-5)
