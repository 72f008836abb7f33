"""Single-codebook nearest-neighbour quantisation (the plain PyTorch reference)."""

from __future__ import annotations

import torch
from torch import Tensor


def vector_quantize_ref(x: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest code under L2 distance, computed as the public WhisperVQ code does.

    x: (..., D); codebook: (K, D). Returns (codes (..., D), indices (...) int64).
    ``||x||^2 + ||c||^2 - 2 x.c`` via one ``addmm``, then ``min`` (lowest index wins ties).
    """
    if x.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"feature size {x.shape[-1]} does not match codebook dim {codebook.shape[-1]}")
    flat = x.reshape(-1, x.shape[-1])
    cb = codebook.to(flat.dtype)
    dist = torch.addmm((cb * cb).sum(1)[None, :] + (flat * flat).sum(1, keepdim=True), flat, cb.t(),
                       alpha=-2.0, beta=1.0)
    idx = dist.argmin(dim=1)
    codes = cb.index_select(0, idx).view_as(x)
    return codes, idx.view(x.shape[:-1])
