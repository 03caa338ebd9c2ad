"""Speed settings for training: CPU threads, memory, memory format, optional torch.compile.

What `benchmarks/train_throughput.py` measured on this project's 2-core CPU machine:
- channels-last memory lets oneDNN run the 3x3 convolutions at the cores' peak (about 230
  GFLOP/s in float32); the rest of the RCNN speed-up lives in the model (one feed-forward
  convolution per RCL, a fused ReLU+LRN);
- keeping freed memory in the process saves about 100k page faults per RCNN step;
- torch.compile works on CPU with gcc but did not train faster here (15-25 s to compile);
  it stays optional and falls back to eager execution when the compiler is missing or fails;
- on cores shared with other jobs, OpenMP's spinning barriers can cost 2x in training speed
  and 15x on small batches. `OMP_WAIT_POLICY=PASSIVE` avoids that for a few percent on idle
  cores, but libgomp reads it when torch is imported: set it in the environment, or with
  `os.environ.setdefault` before the first `import torch`. Nothing here can change it later.
"""

import ctypes
import ctypes.util
import functools
import logging
import os
import platform
import shutil
import subprocess

import torch
from torch import nn

log = logging.getLogger(__name__)


def available_cpus() -> int:
    """The CPUs this process may run on (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """One intra-op thread per available CPU (default) and a single inter-op thread.

    Training runs one op at a time, so an inter-op pool would only sit idle, and threads beyond
    the CPUs this process may use only contend with each other. Returns the count.
    """
    if num_threads is None:
        num_threads = available_cpus()
    assert num_threads >= 1, f"num_threads must be positive, got {num_threads}"
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        # Only possible before the first parallel op; later calls keep the existing pool.
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
    if num_threads > 1 and "OMP_WAIT_POLICY" not in os.environ:
        log.info("OMP_WAIT_POLICY is not set: on shared cores, PASSIVE can be 2x faster")
    return num_threads


@functools.cache
def keep_freed_memory() -> bool:
    """Stop glibc's malloc from handing freed activation memory back to the kernel.

    By default glibc serves large blocks with mmap and trims the heap after big frees, so each
    training step gets its hundreds of MB of activations as fresh pages and pays about 100k
    page faults (a fifth of an RCNN step on 2 cores). Raising the mmap and trim thresholds keeps
    those pages in the heap for the next step; peak memory is unchanged. Process-wide, so called
    only for training; a no-op (returning False) where the C library is not glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3
    # glibc may refuse a threshold above 32 MB (HEAP_MAX_SIZE / 2); then take the largest.
    mmap_ok = libc.mallopt(m_mmap_threshold, 1 << 30) or libc.mallopt(m_mmap_threshold, 32 << 20)
    trim_ok = libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    return bool(mmap_ok and trim_ok)


@functools.cache
def cpp_compiler_problem() -> str | None:
    """Why the C++ compiler inductor uses for CPU kernels does not work here, or None."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH for inductor's CPU kernels"
    # Being on PATH is not enough: a compiler driver without its cc1plus fails on first use.
    try:
        result = subprocess.run(
            [compiler, "-x", "c++", "-fsyntax-only", "-"],
            input="int main() { return 0; }",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{compiler} does not run: {error}"
    if result.returncode != 0:
        return f"{compiler} cannot compile C++: {result.stderr.strip()[:200]}"
    return None


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why torch.compile's default backend cannot run on `device` here, or None if it can."""
    if device.type == "cpu":
        return cpp_compiler_problem()
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed"
    return f"no inductor backend for device type {device.type!r}"


def maybe_compile(model: nn.Module, enabled: bool, *, mode: str | None = None) -> nn.Module:
    """`torch.compile(model, mode=mode)` when enabled and possible, else `model` unchanged.

    Compilation happens lazily at the first call; errors there fall back to eager execution
    (`suppress_errors`) instead of ending the run. The compiled wrapper shares the module's
    parameters; `emnist.checkpoint.unwrap` recovers the plain module for saving.
    """
    if not enabled:
        return model
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    reason = compile_unavailable_reason(device)
    if reason is not None:
        log.warning("torch.compile disabled: %s", reason)
        return model
    import torch._dynamo as dynamo

    dynamo.config.suppress_errors = True
    return torch.compile(model, mode=mode)


def prepare_for_training(
    model: nn.Module, device: torch.device | str, *, compile: bool = False
) -> nn.Module:
    """Move `model` to `device` in channels-last memory format, optionally compiled.

    Channels-last (NHWC) is what oneDNN's convolutions and the RCNN's fused LRN want; the
    (N, 1, 28, 28) input batches need no conversion, a one-channel image being NHWC already.
    On CPU it also keeps freed memory in the process (`keep_freed_memory`).
    """
    model = model.to(device=device, memory_format=torch.channels_last)
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    return maybe_compile(model, compile)
