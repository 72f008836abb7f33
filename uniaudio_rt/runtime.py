"""Inference preparation of an encoder: pruning, fused projections, reduced precision."""

from __future__ import annotations

import warnings

import torch

from .checkpoint import prune_for_tokens
from .models.encoder import WhisperVQEncoder

PRECISIONS = ("fp32", "bf16", "int8")


def cpu_has_native_bf16() -> bool:
    """True when this x86 CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return True  # not Linux: cannot tell, do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


@torch.no_grad()
def prepare_for_inference(model: WhisperVQEncoder, precision: str = "fp32") -> WhisperVQEncoder:
    """Turn a (loaded) encoder into the tokenization runtime, in place.

    * drop every module the tokens cannot depend on (layers after the quantizer, a dead SAE branch);
    * fuse the q/k/v projections of each layer into one GEMM;
    * use the native fused SAE-gate + LayerNorm + nearest-code kernel (uniaudio_rt.ops) on the CPU;
    * ``bf16``: transformer layers compute in bfloat16 (AVX-512 BF16 / AMX where the CPU has them);
      the conv front end, residual stream between layers, SAE and codebook search stay fp32;
    * ``int8``: dynamic int8 quantization (per-channel weights, activations quantized per batch at
      run time, VNNI) of the q/k/v and fc1 projections; everything else fp32.
    fp32 keeps tokens identical to the training-parity model.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    model = prune_for_tokens(model).eval()
    from . import ops

    if ops._C is not None and model.codebook is not None and model.codebook.weight.device.type == "cpu":
        model.fast_codebook = ops.Codebook.from_tensor(model.codebook.weight)
    for layer in model.layers:
        if layer.self_attn.qkv_proj is None:
            layer.self_attn.fuse_qkv()
    if precision == "bf16":
        if model.codebook is not None and model.codebook.weight.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("precision='bf16' on a CPU without AVX-512 BF16 or AMX: bfloat16 matmuls are emulated "
                          "and usually slower than fp32 here; use precision='int8' or 'fp32'", RuntimeWarning,
                          stacklevel=2)
        for layer in model.layers:
            layer.to(torch.bfloat16)
            layer.compute_dtype = torch.bfloat16
    elif precision == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # Only the projections that read a LayerNorm output (q/k/v and fc1) are quantized: their
        # inputs are well scaled. out_proj and fc2 read attention / GELU outputs with outliers and
        # stay fp32 (quantizing them too lost 4-5% of the default model's tokens on real speech).
        spec = {f"{i}.{name}": per_channel_dynamic_qconfig
                for i in range(len(model.layers)) for name in ("self_attn.qkv_proj", "fc1")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
            model.layers = quantize_dynamic(model.layers, spec, dtype=torch.qint8)
    return model
