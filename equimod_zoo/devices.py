"""Which torch device a `device` argument names, checked before any work starts."""
from __future__ import annotations

import torch

from equimod_zoo.errors import DeviceError



def resolve_device(device: str | torch.device | None = None, *, argument: str = "--device") -> torch.device:
    """`device` as a torch.device, CUDA when available for None; refuses one this machine does not have."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise DeviceError(f"{argument} {device!r}: not a device ({str(error).splitlines()[0]}); "
                          f"use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"{argument} {device!r}: no CUDA GPU is available here; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"{argument} {device!r}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{argument} {device!r}: MPS is not available here; use --device cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{argument} {device!r}: equimod-zoo runs on cpu, cuda or mps")
    return resolved


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
