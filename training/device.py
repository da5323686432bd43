"""Where training runs: the GPU Ray assigned, else CUDA if present, else CPU."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("lobsweep.training")


def pick_device(requested: str | None = None) -> torch.device:
    """The training device.

    Inside a Ray trial that was given a GPU, Ray sets ``CUDA_VISIBLE_DEVICES``
    to the assigned id, so that device is ``cuda:0`` here. Where CUDA is absent
    (a CPU machine declaring logical GPUs, for instance) training falls back to
    the CPU and says so once in the log.
    """
    if requested and requested != "auto":
        return torch.device(requested)
    assigned = _ray_gpu_ids()
    if torch.cuda.is_available():
        return torch.device("cuda:0")
    if assigned:
        log.warning("Ray assigned GPU %s but CUDA is not available here; training on CPU", assigned)
    return torch.device("cpu")


def _ray_gpu_ids() -> list:
    try:
        import ray
        if ray.is_initialized():
            return list(ray.get_gpu_ids())
    except Exception:          # outside Ray, or Ray not installed on a worker
        pass
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [c for c in cvd.split(",") if c]


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Autocast dtype for ``amp`` in {"auto", "off", "bf16", "fp16"}; None means full precision."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16 if amp == "auto" else None
