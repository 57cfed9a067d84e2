"""backend: a quantized (or float) Relax module -> a compiled model for a target.

``build.py`` compiles and wraps the executable, ``target.py`` reads targets, ``tune.py``
applies or fills a MetaSchedule database, ``cuda.py`` schedules GPU kernels, and ``cpu/``
holds the hand-written CPU kernels: fused int8 layers (``fuse.py``: VNNI conv2d/dense in
``vnni.py``, on AVX2 without VNNI with the block of ``avx2.py``, depthwise in
``depthwise.py``, their integer ``epilogue.py``; 1x1 depthwise
convs become per-channel multiplies that fuse with their neighbours, ``pointwise.py``) and the
default schedule for everything else (``schedule.py``). ``threads.py`` gives TVM's CPU thread pool one
thread per physical core (TVM's own default is half the logical CPUs) unless
``TVM_NUM_THREADS`` is set.
"""
from .threads import use_physical_cores

use_physical_cores()  # before any compiled kernel runs: the pool reads it on first use

from .build import CompiledModel, build, compile_module, lower
from .target import TargetLike, make_target

__all__ = ["CompiledModel", "TargetLike", "build", "compile_module", "lower", "make_target"]
