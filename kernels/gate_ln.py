"""SAE gate epilogue + LayerNorm: y = LayerNorm(deep + sigmoid(gate_logits) * adapter) per row."""

import torch
import triton
import triton.language as tl


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
