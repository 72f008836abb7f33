"""Native ops and their plain PyTorch twins.

Every op ``foo`` sits next to ``foo_ref`` (the definition) and is tested against it:

* ``vq_argmin(x, codebook)``: nearest code per row (L2; lowest index wins ties).
* ``gate_ln_vq(x_deep, gate_logits, adapter_out, ln, codebook)``: the SAE epilogue after the gate's
  and the adapter's GEMMs, ``y = LayerNorm(x_deep + sigmoid(gate_logits) * adapter_out)``, fused
  with the nearest-code search.
* ``fused_gate_vq(x_deep, x_shallow, encoder)``: the whole quantizer hot path of a WhisperVQEncoder
  (gate MLP and adapter GEMMs in BLAS, then ``gate_ln_vq``).

``backend``: ``"auto"`` picks the C++ kernel for CPU tensors when the extension is built, the CUDA
kernel (extension built with CUDA) or else Triton for CUDA tensors, the PyTorch reference otherwise;
``"cpp"`` / ``"cuda"`` / ``"triton"`` / ``"ref"`` force one. Triton runs on the CPU only under
``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.quantizer import vector_quantize_ref

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError:  # built without native ops (UNIAUDIO_RT_NO_EXT=1, or no compiler)
    _C = None

BACKENDS = ("auto", "cpp", "cuda", "triton", "ref")


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def _triton_usable() -> bool:
    if not _triton_installed():
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def available_backends() -> list[str]:
    out = ["ref"]
    if _C is not None:
        out.append("cpp")
        if getattr(_C, "with_cuda", False) and torch.cuda.is_available():
            out.append("cuda")
    if _triton_usable():
        out.append("triton")
    return out


def _pick(backend: str, x: Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if x.device.type == "cpu":
            return "cpp" if _C is not None else "ref"
        if x.is_cuda and "cuda" in available_backends():
            return "cuda"
        return "triton" if "triton" in available_backends() else "ref"
    if backend not in available_backends():
        raise ValueError(f"backend={backend!r} is not available here (available: {available_backends()}); "
                         f"'cpp' needs the native extension (pip install --no-build-isolation -e .)")
    return backend


@dataclass
class Codebook:
    """A codebook with what the kernels precompute once: squared norms, norms, bf16 and int16 copies."""

    codes: Tensor              # (K, D) float32 contiguous
    sq_norms: Tensor           # (K,)
    norms: Tensor              # (K,)
    codes_bf16: Tensor         # (K, D padded to 32) int16 bits, or empty
    bf16_err: Tensor           # (K,) ||c - bf16(c)|| (the bf16 screens' error bound), or empty
    codes_i16: Tensor          # int16 screen copy (K padded to 24, D padded to 32), interleaved; or empty
    i16_meta: Tensor           # (5, K padded) scale, quantization error, quantized norm, ||c||^2, ||c||

    @classmethod
    def from_tensor(cls, codebook: Tensor) -> "Codebook":
        if codebook.dim() != 2 or codebook.shape[0] == 0:
            raise ValueError(f"codebook must be (K > 0, D), got {tuple(codebook.shape)}")
        c = codebook.detach().float().contiguous()
        sq = (c.double() ** 2).sum(1)
        empty = torch.empty(0, dtype=torch.int16)
        packed, err, q, meta = empty, torch.empty(0), empty, torch.empty(0)
        if _C is not None and c.device.type == "cpu":
            packed, err = _C.pack_bf16(c)
            q, meta = _C.pack_i16(c)
        return cls(c, sq.float(), sq.sqrt().float(), packed, err, q, meta)


def _as_codebook(codebook) -> Codebook:
    return codebook if isinstance(codebook, Codebook) else Codebook.from_tensor(codebook)


def _rows(x: Tensor, d: int, name: str) -> Tensor:
    if x.shape[-1] != d:
        raise ValueError(f"{name} has feature size {x.shape[-1]}, codebook dim is {d}")
    return x.detach().reshape(-1, d).float().contiguous()


# ---------------------------------------------------------------- vq_argmin
def vq_argmin_ref(x: Tensor, codebook: Tensor) -> Tensor:
    """(..., D) -> (...) int64: the public WhisperVQ formula (addmm, then argmin)."""
    cb = codebook.codes if isinstance(codebook, Codebook) else codebook
    return vector_quantize_ref(x.float(), cb.float())[1]


def vq_argmin(x: Tensor, codebook, backend: str = "auto") -> Tensor:
    cb = _as_codebook(codebook)
    which = _pick(backend, x)
    if which == "ref":
        return vq_argmin_ref(x, cb.codes)
    flat = _rows(x, cb.codes.shape[1], "x")
    if which == "triton":
        from uniaudio_rt.triton_kernels.vq_argmin import vq_argmin_triton

        return vq_argmin_triton(flat, cb.codes.to(flat.device), cb.sq_norms.to(flat.device)).view(x.shape[:-1])
    if which == "cuda":
        return _C.vq_argmin_gpu(flat, cb.codes.to(flat.device), cb.sq_norms.to(flat.device)).view(x.shape[:-1])
    return _C.vq_argmin(flat, cb.codes, cb.sq_norms, cb.norms, cb.codes_bf16, cb.bf16_err, cb.codes_i16,
                        cb.i16_meta).view(x.shape[:-1])


# ---------------------------------------------------------------- gate_ln_vq
@dataclass
class LayerNormParams:
    weight: Tensor
    bias: Tensor
    eps: float


def gate_ln_ref(x_deep: Tensor, gate_logits: Optional[Tensor], adapter_out: Tensor, ln: LayerNormParams) -> Tensor:
    a = adapter_out if gate_logits is None else torch.sigmoid(gate_logits) * adapter_out
    return F.layer_norm(x_deep + a, (x_deep.shape[-1],), ln.weight, ln.bias, ln.eps)


def gate_ln_vq_ref(x_deep, gate_logits, adapter_out, ln: LayerNormParams, codebook, return_y=False):
    y = gate_ln_ref(x_deep.float(), None if gate_logits is None else gate_logits.float(), adapter_out.float(), ln)
    tokens = vq_argmin_ref(y, codebook)
    return (tokens, y) if return_y else tokens


def gate_ln_vq(x_deep: Tensor, gate_logits: Optional[Tensor], adapter_out: Tensor, ln: LayerNormParams,
               codebook, return_y: bool = False, backend: str = "auto"):
    cb = _as_codebook(codebook)
    which = _pick(backend, x_deep)
    if which == "ref":
        return gate_ln_vq_ref(x_deep, gate_logits, adapter_out, ln, cb.codes, return_y)
    d = cb.codes.shape[1]
    shape = x_deep.shape[:-1]
    deep = _rows(x_deep, d, "x_deep")
    gl = _rows(gate_logits, d, "gate_logits") if gate_logits is not None else torch.empty(0)
    a = _rows(adapter_out, d, "adapter_out")
    if a.shape[0] != deep.shape[0] or (gate_logits is not None and gl.shape[0] != deep.shape[0]):
        raise ValueError(f"row counts differ: x_deep {deep.shape[0]}, adapter_out {a.shape[0]}, "
                         f"gate_logits {gl.shape[0] if gate_logits is not None else '-'}")
    dev = deep.device
    w, b = ln.weight.detach().float().contiguous().to(dev), ln.bias.detach().float().contiguous().to(dev)
    if which == "triton":  # one fused kernel: epilogue + LayerNorm + blocked search
        from uniaudio_rt.triton_kernels.gate_ln import gate_ln_vq_triton

        tokens, y = gate_ln_vq_triton(deep, gl if gate_logits is not None else None, a, w, b, float(ln.eps),
                                      cb.codes.to(dev), cb.sq_norms.to(dev))
    elif which == "cuda":  # one fused CUDA kernel (rows staged in shared memory)
        tokens, y = _C.gate_ln_vq_gpu(deep, gl.to(dev), a, w, b, float(ln.eps), cb.codes.to(dev),
                                      cb.sq_norms.to(dev), return_y)
    else:
        tokens, y = _C.gate_ln_vq(deep, gl, a, w, b, float(ln.eps), cb.codes, cb.sq_norms, cb.norms, cb.codes_bf16,
                                  cb.bf16_err, cb.codes_i16, cb.i16_meta, return_y)
    tokens = tokens.view(shape)
    return (tokens, y.view(*shape, d)) if return_y else tokens


# ---------------------------------------------------------------- the encoder's quantizer hot path
def sae_inputs(encoder, x_deep: Tensor, x_shallow: Tensor) -> tuple[Optional[Tensor], Tensor, LayerNormParams]:
    """Gate logits (before the sigmoid) and adapter output by BLAS GEMMs, and the output LayerNorm."""
    a = encoder.residual_adapter(x_shallow) if encoder.residual_adapter is not None else x_shallow
    gl = None
    if encoder.residual_gate is not None:
        g = encoder.residual_gate
        gl = g[2](g[1](g[0](torch.cat([x_deep, x_shallow], dim=-1))))  # Linear, Tanh, Linear; no Sigmoid
    n = encoder.residual_output_norm
    return gl, a, LayerNormParams(n.weight, n.bias, n.eps)


def fused_gate_vq_ref(x_deep: Tensor, x_shallow: Tensor, encoder) -> Tensor:
    """Tokens as the training-parity encoder computes them: sae() then vector_quantize_ref."""
    return vector_quantize_ref(encoder.sae(x_deep, x_shallow), encoder.codebook.weight)[1]


def fused_gate_vq(x_deep: Tensor, x_shallow: Tensor, encoder, codebook: Optional[Codebook] = None,
                  backend: str = "auto") -> Tensor:
    gl, a, ln = sae_inputs(encoder, x_deep, x_shallow)
    return gate_ln_vq(x_deep, gl, a, ln, codebook if codebook is not None else encoder.codebook.weight,
                      backend=backend)
