"""The numeric precision a local LLM runs in: one rule for every frozen or fine-tuned LLM of ours.

bf16 is worth it only where the hardware runs it natively (AVX-512 BF16 / AMX on CPU, bf16 on a CUDA GPU):
there a 135M LLM's prompt costs 2.7x less than in fp32 with states that agree to >= 0.999 cosine
(benchmarks/results/profile/llm_state_precision.json); elsewhere it is emulated and slower than fp32, so
``auto`` picks fp32 there and an explicit ``bf16`` is refused.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from ..errors import SettingError

PRECISIONS = ("auto", "fp32", "bf16", "int8")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively (about 2x fp32 here); elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(setting: str | None, device: str | torch.device = "cpu", key: str = "llm_state_precision",
                      allowed: tuple[str, ...] = PRECISIONS) -> str:
    """``auto`` -> bf16 where the hardware runs it natively, else fp32. An explicit setting is kept; bf16 on a
    machine without it is refused (it would be slower than fp32 and give different numbers). ``key`` names the
    setting in the errors."""
    setting = (setting or "auto").lower()
    if setting not in allowed:
        raise SettingError(f"{key} must be one of {', '.join(allowed)}; got {setting!r}")
    on_cuda = str(device).startswith("cuda")
    native = (torch.cuda.is_bf16_supported(including_emulation=False) if on_cuda else cpu_has_native_bf16())
    if setting == "auto":
        return "bf16" if native else "fp32"
    if setting == "bf16" and not native:
        raise SettingError(f"{key}: bf16 needs a CPU with AVX-512 BF16 (see /proc/cpuinfo) or a CUDA "
                           "GPU with bf16; this machine has neither: use fp32 (or auto)")
    if setting == "int8" and on_cuda:
        raise SettingError(f"{key}: int8 is torch's CPU dynamic quantisation; use bf16 on a GPU")
    return setting


def precision_context(precision: str, device: str | torch.device = "cpu"):
    """Autocast for bf16 (weights stay fp32, so LoRA's master weights and optimizer stay fp32); nothing for fp32
    and int8 (int8 is in the weights)."""
    if precision == "bf16":
        return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def quantize_int8(llm):
    """torch's dynamic int8 quantisation of every Linear (weights int8, activations quantised per batch)."""
    return torch.ao.quantization.quantize_dynamic(llm, {torch.nn.Linear}, dtype=torch.qint8)
