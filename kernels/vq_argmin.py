"""Nearest code per row: blocked distances with a running argmin, never materialising rows x codes."""

import torch
import triton
import triton.language as tl


@triton.jit
def argmin_block_update(x_ptr, c_ptr, csq_ptr, rows, k0, n, k, d, stride_x, stride_c, best, best_idx,
                        BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """Fold codes k0 .. k0 + BLOCK_K into the rows' running (distance, index) minimum."""
    codes = k0 + tl.arange(0, BLOCK_K)
    acc = tl.zeros((rows.shape[0], BLOCK_K), tl.float32)
    for d0 in range(0, d, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :],
                    mask=(rows[:, None] < n) & (dims[None, :] < d), other=0.0).to(tl.float32)
        c = tl.load(c_ptr + codes[:, None] * stride_c + dims[None, :],
                    mask=(codes[:, None] < k) & (dims[None, :] < d), other=0.0).to(tl.float32)
        acc += tl.dot(x, tl.trans(c), input_precision="ieee")
    csq = tl.load(csq_ptr + codes, mask=codes < k, other=0.0)
    dist = tl.where(codes[None, :] < k, csq[None, :] - 2.0 * acc, float("inf"))
    blk_min = tl.min(dist, axis=1)
    # lowest index among this block's minima (explicit, not relying on argmin's tie rule)
    is_min = dist == blk_min[:, None]
    blk_arg = tl.min(tl.where(is_min, codes[None, :], k + BLOCK_K), axis=1)
    better = blk_min < best  # strict: earlier blocks keep ties
    return tl.where(better, blk_min, best), tl.where(better, blk_arg.to(tl.int64), best_idx)


@triton.jit
def _vq_argmin_kernel(x_ptr, c_ptr, csq_ptr, out_ptr, n, k, d, stride_x, stride_c,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    best = tl.full((BLOCK_N,), float("inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int64)
    for k0 in range(0, k, BLOCK_K):
        best, best_idx = argmin_block_update(x_ptr, c_ptr, csq_ptr, rows, k0, n, k, d, stride_x, stride_c, best,
                                             best_idx, BLOCK_K, BLOCK_D)
    tl.store(out_ptr + rows, best_idx, mask=rows < n)


def vq_argmin_triton(x: torch.Tensor, codebook: torch.Tensor, sq_norms: torch.Tensor = None,
                     block_n: int = 16, block_k: int = 32, block_d: int = 32) -> torch.Tensor:
    """x (N, D), codebook (K, D) -> (N,) int64. fp32 accumulation (bf16 inputs are upcast)."""
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"expected x (N, D) and codebook (K, D), got {tuple(x.shape)} and {tuple(codebook.shape)}")
    x = x.contiguous()
    codebook = codebook.contiguous()
    if sq_norms is None:
        sq_norms = (codebook.float() ** 2).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    grid = (triton.cdiv(x.shape[0], block_n),)
    _vq_argmin_kernel[grid](x, codebook, sq_norms.float().contiguous(), out, x.shape[0], codebook.shape[0],
                            x.shape[1], x.stride(0), codebook.stride(0),
                            BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d)
    return out
