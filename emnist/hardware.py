"""What the CPU computes natively, for choosing arithmetic (training and serving alike).

bfloat16 dot products run in hardware on CPUs with Intel's AMX (`amx_bf16`, Sapphire Rapids and
later) or AVX-512 BF16 (`avx512_bf16`: Cooper Lake, AMD Zen 4 and later); oneDNN uses them for
convolutions and matrix products. Elsewhere bf16 is emulated and slower than float32.
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (AMX or AVX-512 BF16)."""
    flags = cpu_flags()
    return any(flag in flags for flag in BF16_CPU_FLAGS)
