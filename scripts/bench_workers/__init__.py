"""Helpers of scripts/bench_cpu.py: one worker process per runtime, the model preparation, the
OpenVINO venv, the int8 peak microkernel and the report. Stdlib and numpy only at import time:
the OpenVINO worker runs under another interpreter (the bench venv) that has no TVM."""
