"""The measured int8 peak: ``vnni_peak.c`` compiled with gcc (``-O3 -mavx512f -mavx512vl
-mavx512vnni``) into the bench's work folder in a few variants (zmm / ymm, 8 / 16 chains) and
run with the bench's thread count; on a CPU with AVX2 but no VNNI its ``vpmaddwd`` + ``vpaddd``
chains instead (``-mavx2 -DMADDWD``: the exact int8 path of the AVX2 kernels). The peak is
the best variant's best repeat (a peak is a maximum: a repeat slowed by another process says
nothing about the hardware). Never raises: without gcc or either instruction set the reason
comes back and the % column says n/a."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Optional, Tuple

VARIANTS = ((512, 8), (512, 16), (256, 8), (256, 16))  # (vector bits, independent chains)
AVX2_VARIANTS = ((256, 8), (256, 10))
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vnni_peak.c")


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_vnni() -> bool:
    return "avx512_vnni" in _cpu_flags()


def measure(work: str, threads: int, seconds: float = 0.5,
            repeats: int = 5) -> Tuple[Optional[float], str]:
    """(peak G int8 MAC/s or None, what was run or why not)."""
    flags = _cpu_flags()
    if "avx512_vnni" in flags:
        variants, instruction, tag = VARIANTS, "vpdpbusd", "vnni"
        options = ["-mavx512f", "-mavx512vl", "-mavx512vnni"]
    elif "avx2" in flags:
        variants, instruction, tag = AVX2_VARIANTS, "vpmaddwd + vpaddd (no VNNI)", "maddwd"
        options = ["-mavx2", "-DMADDWD"]
    else:
        return None, "this CPU has neither AVX-512 VNNI nor AVX2 (in /proc/cpuinfo)"
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, f"no gcc on PATH to build the {instruction} microkernel"
    best, lines = None, []
    for width, chains in variants:
        binary = os.path.join(work, f"{tag}_peak_{width}_{chains}")
        if not os.path.exists(binary) or os.path.getmtime(binary) < os.path.getmtime(SOURCE):
            cmd = [gcc, "-O3", *options, f"-DWIDTH={width}",
                   f"-DACC={chains}", "-pthread", SOURCE, "-o", binary]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                return None, f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
        done = subprocess.run([binary, str(threads), str(seconds), str(repeats)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return None, f"{binary} failed (rc {done.returncode}): {done.stderr.strip()[-300:]}"
        gmacs = max(json.loads(done.stdout)["gmacs"])
        name = f"{'zmm' if width == 512 else 'ymm'} x {chains} chains"
        lines.append(f"{name} {gmacs:.0f}")
        if best is None or gmacs > best[0]:
            best = (gmacs, name)
    return best[0], (f"{instruction} microkernel, {threads} threads, best of {repeats} x "
                     f"{seconds} s per variant: " + ", ".join(lines))
