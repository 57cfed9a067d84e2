"""TVM's CPU thread pool gets one thread per physical core unless TVM_NUM_THREADS says."""
import os
import subprocess
import sys

import pytest

from tvm_quant_ext.backend import threads

PROBE = ("import tvm_quant_ext, tvm; "
         "print(tvm.get_global_func('runtime.NumThreads')())")


def _pool_size(env_value=None) -> int:
    env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    if env_value is not None:
        env[threads.ENV] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    return int(out.stdout.strip().splitlines()[-1])


def test_pool_uses_every_physical_core():
    # TVM alone would take hardware_concurrency / 2 on x86
    assert _pool_size() == threads.physical_cores()


def test_user_setting_is_kept():
    assert _pool_size("1") == 1


def test_physical_cores_counts_sibling_groups():
    assert threads.physical_cores([0]) == 1
    assert 1 <= threads.physical_cores() <= os.cpu_count()


@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_bad_thread_count_is_refused(monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    with pytest.raises(ValueError, match=threads.ENV):
        threads.default_thread_count()
