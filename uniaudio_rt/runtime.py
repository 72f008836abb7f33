"""Inference preparation of an encoder: pruning, fused projections, reduced precision."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .checkpoint import prune_for_tokens
from .models.encoder import WhisperVQEncoder

PRECISIONS = ("fp32", "bf16", "int8")


@torch.no_grad()
def prepare_for_inference(model: WhisperVQEncoder, precision: str = "fp32") -> WhisperVQEncoder:
    """Turn a (loaded) encoder into the tokenization runtime, in place.

    * drop every module the tokens cannot depend on (layers after the quantizer, a dead SAE branch);
    * fuse the q/k/v projections of each layer into one GEMM;
    * use the native fused SAE-gate + LayerNorm + nearest-code kernel (uniaudio_rt.ops) on the CPU;
    * ``bf16``: transformer layers compute in bfloat16 (AVX-512 BF16 / AMX where the CPU has them);
      the conv front end, residual stream between layers, SAE and codebook search stay fp32;
    * ``int8``: dynamic int8 quantization of the layers' linear projections (VNNI), activations
      quantized per batch at run time; everything else fp32.
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
        for layer in model.layers:
            layer.to(torch.bfloat16)
            layer.compute_dtype = torch.bfloat16
    elif precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
            model.layers = quantize_dynamic(model.layers, {nn.Linear}, dtype=torch.qint8)
    return model
