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


def saved_bytes(model: torch.nn.Module, xb: torch.Tensor, amp: torch.dtype | None = None) -> int:
    """Bytes of the tensors autograd keeps for backward in one training forward of ``xb``.

    Counted with ``saved_tensors_hooks``, each storage once, leaving out the storages that
    exist anyway: the parameters and the input's (``xb`` may be a view of the whole training
    array). On a GPU or a CPU this is what a batch holds from its forward until its backward
    ends (transients come and go), so it is what grows with batch size and sequence length.
    """
    owned = {p.untyped_storage().data_ptr() for p in model.parameters()} | {xb.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in owned:
            seen[s.data_ptr()] = s.nbytes()
        return t

    state = torch.random.get_rng_state()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast(xb.device.type, dtype=amp, enabled=amp is not None):
            model(xb)
    finally:
        torch.random.set_rng_state(state)            # the probe's dropout draws leave no trace
    return int(sum(seen.values()))


def micro_batch_size(model: torch.nn.Module, xb: torch.Tensor, batch_size: int, limit_mb: float,
                     amp: torch.dtype | None = None) -> int:
    """Sequences per forward/backward so that one pass keeps at most ``limit_mb`` for backward.

    ``xb`` is a sample of 1-2 training sequences at the training length. 0 = no limit.
    """
    if not limit_mb or batch_size <= 1:
        return batch_size
    per_seq = saved_bytes(model, xb, amp) / max(xb.shape[0], 1)
    fit = int(float(limit_mb) * 2**20 // max(per_seq, 1.0))
    return max(1, min(batch_size, fit))
