"""Where and in what precision a model runs, and what a measured second means (the hardware line)."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device) -> str:
    """`auto` -> bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp32.

    On a CPU without bf16 units autocast emulates bf16 and runs many times slower than fp32."""
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast(device, precision: str):
    """Mixed precision around one forward (never around the optimiser step: autocast caches its
    low-precision weight copies for the life of the context, so a context around the whole loop
    would keep serving the weights of the first step)."""
    device = torch.device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def hardware() -> str:
    """CPU model and thread count (or the GPU): what a measured second means."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU, {cpu}"
    return f"{cpu}, {torch.get_num_threads()} CPU threads, no GPU"


def versions() -> dict:
    """The libraries a run was made with (recorded in each fold's done.json and in results.json's run record)."""
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}
