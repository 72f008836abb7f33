"""SAE gate epilogue + LayerNorm, alone and fused with the nearest-code search.

    y = LayerNorm(deep + sigmoid(gate_logits) * adapter)         (gate_logits may be absent: g = 1)
    token = argmin_k ||y - c_k||^2                               (lowest index wins ties)

``gate_ln_vq_triton`` is one kernel per block of rows: LayerNorm statistics over the row in D-chunks,
y written once (it is an output anyway), then the blocked distance + running argmin over the
codebook on those rows; the rows x codes distance matrix never exists.
"""

import torch
import triton
import triton.language as tl

from .vq_argmin import argmin_block_update


@triton.jit
def _gate_ln_kernel(deep_ptr, gl_ptr, a_ptr, w_ptr, b_ptr, y_ptr, d, eps,
                    HAS_GATE: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)
    dims = tl.arange(0, BLOCK_D)
    m = dims < d
    v = tl.load(deep_ptr + row * d + dims, mask=m, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + row * d + dims, mask=m, other=0.0).to(tl.float32)
    if HAS_GATE:
        g = tl.load(gl_ptr + row * d + dims, mask=m, other=0.0).to(tl.float32)
        a = a * tl.sigmoid(g)
    v = v + a
    mean = tl.sum(v, axis=0) / d
    diff = tl.where(m, v - mean, 0.0)
    var = tl.sum(diff * diff, axis=0) / d
    w = tl.load(w_ptr + dims, mask=m, other=0.0)
    b = tl.load(b_ptr + dims, mask=m, other=0.0)
    tl.store(y_ptr + row * d + dims, diff * tl.rsqrt(var + eps) * w + b, mask=m)


@triton.jit
def _combine(deep_ptr, gl_ptr, a_ptr, offs, m, HAS_GATE: tl.constexpr):
    """deep + sigmoid(gate_logits) * adapter on a (rows, dims) tile; 0 outside the mask."""
    v = tl.load(deep_ptr + offs, mask=m, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_GATE:
        a = a * tl.sigmoid(tl.load(gl_ptr + offs, mask=m, other=0.0).to(tl.float32))
    return tl.where(m, v + a, 0.0)


@triton.jit
def _gate_ln_vq_kernel(deep_ptr, gl_ptr, a_ptr, w_ptr, b_ptr, y_ptr, c_ptr, csq_ptr, out_ptr, n, k, d, eps,
                       stride_c, HAS_GATE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    # LayerNorm statistics, two passes over D-chunks (mean, then centred sum of squares)
    s = tl.zeros((BLOCK_N,), tl.float32)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (dims[None, :] < d)
        s += tl.sum(_combine(deep_ptr, gl_ptr, a_ptr, rows[:, None] * d + dims[None, :], m, HAS_GATE), axis=1)
    mean = s / d
    q = tl.zeros((BLOCK_N,), tl.float32)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (dims[None, :] < d)
        v = _combine(deep_ptr, gl_ptr, a_ptr, rows[:, None] * d + dims[None, :], m, HAS_GATE)
        diff = tl.where(m, v - mean[:, None], 0.0)
        q += tl.sum(diff * diff, axis=1)
    rstd = tl.rsqrt(q / d + eps)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        m = rmask[:, None] & (dims[None, :] < d)
        offs = rows[:, None] * d + dims[None, :]
        v = _combine(deep_ptr, gl_ptr, a_ptr, offs, m, HAS_GATE)
        w = tl.load(w_ptr + dims, mask=dims < d, other=0.0)
        b = tl.load(b_ptr + dims, mask=dims < d, other=0.0)
        tl.store(y_ptr + offs, (v - mean[:, None]) * rstd[:, None] * w[None, :] + b[None, :], mask=m)
    tl.debug_barrier()  # this program's y stores are visible to all of its threads
    best = tl.full((BLOCK_N,), float("inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int64)
    for k0 in range(0, k, BLOCK_K):
        best, best_idx = argmin_block_update(y_ptr, c_ptr, csq_ptr, rows, k0, n, k, d, d, stride_c, best, best_idx,
                                             BLOCK_K, BLOCK_D)
    tl.store(out_ptr + rows, best_idx, mask=rmask)


def gate_ln_triton(deep: torch.Tensor, gate_logits, adapter: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor, eps: float) -> torch.Tensor:
    """(N, D) rows -> (N, D) float32."""
    n, d = deep.shape
    y = torch.empty(n, d, dtype=torch.float32, device=deep.device)
    gl = gate_logits.contiguous() if gate_logits is not None else deep
    _gate_ln_kernel[(n,)](deep.contiguous(), gl, adapter.contiguous(), weight.float().contiguous(),
                          bias.float().contiguous(), y, d, eps, HAS_GATE=gate_logits is not None,
                          BLOCK_D=triton.next_power_of_2(d))
    return y


def gate_ln_vq_triton(deep: torch.Tensor, gate_logits, adapter: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, eps: float, codebook: torch.Tensor, sq_norms: torch.Tensor = None,
                      block_n: int = 16, block_k: int = 32, block_d: int = 32):
    """Fused epilogue + LayerNorm + nearest code: (N, D) rows -> (tokens (N,) int64, y (N, D) float32)."""
    n, d = deep.shape
    if codebook.dim() != 2 or codebook.shape[1] != d:
        raise ValueError(f"expected codebook (K, {d}), got {tuple(codebook.shape)}")
    codebook = codebook.contiguous()
    if sq_norms is None:
        sq_norms = (codebook.float() ** 2).sum(1)
    y = torch.empty(n, d, dtype=torch.float32, device=deep.device)
    tokens = torch.empty(n, dtype=torch.int64, device=deep.device)
    gl = gate_logits.contiguous() if gate_logits is not None else deep
    _gate_ln_vq_kernel[(triton.cdiv(n, block_n),)](
        deep.contiguous(), gl, adapter.contiguous(), weight.float().contiguous(), bias.float().contiguous(), y,
        codebook, sq_norms.float().contiguous(), tokens, n, codebook.shape[0], d, eps, codebook.stride(0),
        HAS_GATE=gate_logits is not None, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d)
    return tokens, y
