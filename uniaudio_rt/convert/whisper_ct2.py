"""Whisper weights in CTranslate2 format -> our encoder and text decoder (HF key names).

CTranslate2's Whisper spec stores the encoder as ``encoder/conv{1,2}``, ``encoder/position_encodings``,
``encoder/layer_{i}/self_attention/{layer_norm, linear_0 (fused q|k|v), linear_1 (out)}``,
``encoder/layer_{i}/ffn/{layer_norm, linear_0, linear_1}`` and ``encoder/layer_norm``; the fused
projection has a zero bias for k (Whisper's key projection has none).

The decoder is ``decoder/embeddings`` (the output projection ``decoder/projection`` is an alias of
it), learned ``decoder/position_encodings``, ``decoder/layer_{i}/self_attention/{layer_norm,
linear_0 (fused q|k|v), linear_1 (out)}``, ``decoder/layer_{i}/attention/{layer_norm, linear_0 (q),
linear_1 (fused k|v, zero k bias), linear_2 (out)}``, ``decoder/layer_{i}/ffn/{layer_norm, linear_0,
linear_1}`` and ``decoder/layer_norm``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..models.config import WhisperVQConfig
from ..models.whisper_decoder import WhisperDecoderConfig, WhisperTextDecoder
from .ctranslate2_format import CT2Model, read_ct2_model


def ct2_whisper_dims(ct2: CT2Model) -> dict:
    """Encoder dimensions read off the tensors."""
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.spec!r}")
    conv1 = ct2.get("encoder/conv1/weight")
    n_layers = 0
    while f"encoder/layer_{n_layers}/ffn/linear_0/weight" in ct2.variables:
        n_layers += 1
    return dict(num_mel_bins=int(conv1.shape[1]), d_model=int(conv1.shape[0]), encoder_layers=n_layers,
                encoder_attention_heads=int(ct2.get("encoder/num_heads")),
                encoder_ffn_dim=int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
                max_source_positions=int(ct2.get("encoder/position_encodings/encodings").shape[0]))


def ct2_encoder_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """Encoder tensors under HF Whisper names (conv1, ..., layers.N.self_attn.q_proj, ..., layer_norm)."""
    dims = ct2_whisper_dims(ct2)
    d = dims["d_model"]

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ct2.get(name), dtype=np.float32))

    sd = {"conv1.weight": t("encoder/conv1/weight"), "conv1.bias": t("encoder/conv1/bias"),
          "conv2.weight": t("encoder/conv2/weight"), "conv2.bias": t("encoder/conv2/bias"),
          "embed_positions.weight": t("encoder/position_encodings/encodings"),
          "layer_norm.weight": t("encoder/layer_norm/gamma"), "layer_norm.bias": t("encoder/layer_norm/beta")}
    for i in range(dims["encoder_layers"]):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = t(f"{src}/self_attention/linear_0/weight"), t(f"{src}/self_attention/linear_0/bias")
        if qkv_w.shape != (3 * d, d):
            raise ValueError(f"{src}/self_attention/linear_0/weight: expected fused qkv {(3 * d, d)}, "
                             f"got {tuple(qkv_w.shape)}")
        sd[f"{dst}.self_attn.q_proj.weight"], sd[f"{dst}.self_attn.k_proj.weight"], \
            sd[f"{dst}.self_attn.v_proj.weight"] = qkv_w.split(d)
        sd[f"{dst}.self_attn.q_proj.bias"], k_bias, sd[f"{dst}.self_attn.v_proj.bias"] = qkv_b.split(d)
        if k_bias.abs().max() > 0:
            raise ValueError(f"{src}: the key projection has a non-zero bias; not a Whisper encoder")
        for ours, theirs in (("self_attn.out_proj", "self_attention/linear_1"), ("fc1", "ffn/linear_0"),
                             ("fc2", "ffn/linear_1")):
            sd[f"{dst}.{ours}.weight"] = t(f"{src}/{theirs}/weight")
            sd[f"{dst}.{ours}.bias"] = t(f"{src}/{theirs}/bias")
        for ours, theirs in (("self_attn_layer_norm", "self_attention/layer_norm"),
                             ("final_layer_norm", "ffn/layer_norm")):
            sd[f"{dst}.{ours}.weight"] = t(f"{src}/{theirs}/gamma")
            sd[f"{dst}.{ours}.bias"] = t(f"{src}/{theirs}/beta")
    return {k: v.contiguous() for k, v in sd.items()}


def load_ct2_whisper_encoder(path: str | os.PathLike, **config_overrides):
    """A WhisperVQEncoder with the CT2 model's encoder weights (other modules keep their init)."""
    from ..models.encoder import WhisperVQEncoder

    ct2 = read_ct2_model(path)
    cfg = WhisperVQConfig(**{**ct2_whisper_dims(ct2), **config_overrides})
    model = WhisperVQEncoder(cfg)
    sd = ct2_encoder_state_dict(ct2)
    own = model.state_dict()
    missing = [k for k in sd if k not in own]
    if missing:
        raise ValueError(f"converted keys not in the model: {missing[:5]}")
    with torch.no_grad():
        for k, v in sd.items():
            if own[k].shape != v.shape:
                raise ValueError(f"{k}: converted {tuple(v.shape)} vs model {tuple(own[k].shape)}")
            own[k].copy_(v)
        if model.codebook is not None:
            model.embed_positions2.weight.copy_(model.embed_positions.weight[: model.embed_positions2.num_embeddings])
    return model, ct2


# CTranslate2's ActivationType enum value for exact (erf) GELU, which Whisper uses.
_CT2_GELU = 3


def _f32(ct2: CT2Model, name: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(ct2.get(name), dtype=np.float32))


def ct2_decoder_config(ct2: CT2Model) -> WhisperDecoderConfig:
    """Text decoder dimensions read off the tensors; ValueError if it is not a Whisper decoder."""
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.spec!r}")
    try:
        emb = ct2.get("decoder/embeddings/weight")
        pos = ct2.get("decoder/position_encodings/encodings")
        n_heads = int(ct2.get("decoder/num_heads"))
        ffn = ct2.get("decoder/layer_0/ffn/linear_0/weight")
    except KeyError as e:
        raise ValueError(f"not a Whisper model with a text decoder: {e.args[0]}") from None
    n_layers = 0
    while f"decoder/layer_{n_layers}/ffn/linear_0/weight" in ct2.variables:
        n_layers += 1
    if emb.ndim != 2 or pos.ndim != 2 or pos.shape[1] != emb.shape[1]:
        raise ValueError(f"decoder/embeddings/weight {emb.shape} and decoder/position_encodings/encodings "
                         f"{pos.shape} do not look like a Whisper decoder")
    for flag, expected in (("pre_norm", 1), ("scale_embeddings", 0), ("alibi", 0), ("activation", _CT2_GELU)):
        name = f"decoder/{flag}"
        if name in ct2.variables and int(ct2.get(name)) != expected:
            raise ValueError(f"{name}={int(ct2.get(name))}: a Whisper decoder has {expected}")
    return WhisperDecoderConfig(vocab_size=int(emb.shape[0]), d_model=int(emb.shape[1]),
                                decoder_attention_heads=n_heads, decoder_layers=n_layers,
                                decoder_ffn_dim=int(ffn.shape[0]), max_target_positions=int(pos.shape[0]))


def ct2_decoder_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """Decoder tensors (float32) under HF Whisper names (embed_tokens, ..., layers.N.encoder_attn.q_proj, ...)."""
    cfg = ct2_decoder_config(ct2)
    d = cfg.d_model

    def split_fused(name: str, parts: tuple[str, ...], key_index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        w, b = _f32(ct2, f"{name}/weight"), _f32(ct2, f"{name}/bias")
        n = len(parts)
        if w.shape != (n * d, d) or b.shape != (n * d,):
            raise ValueError(f"{name}: expected a fused {'|'.join(parts)} projection {(n * d, d)}, "
                             f"got weight {tuple(w.shape)} and bias {tuple(b.shape)}")
        if b[key_index * d: (key_index + 1) * d].abs().max() > 0:
            raise ValueError(f"{name}: the key projection has a non-zero bias; not a Whisper decoder")
        return list(zip(w.split(d), b.split(d)))

    sd = {"embed_tokens.weight": _f32(ct2, "decoder/embeddings/weight"),
          "embed_positions.weight": _f32(ct2, "decoder/position_encodings/encodings"),
          "layer_norm.weight": _f32(ct2, "decoder/layer_norm/gamma"),
          "layer_norm.bias": _f32(ct2, "decoder/layer_norm/beta")}
    for i in range(cfg.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"layers.{i}"
        linears = [("self_attn.out_proj", "self_attention/linear_1"), ("encoder_attn.q_proj", "attention/linear_0"),
                   ("encoder_attn.out_proj", "attention/linear_2"), ("fc1", "ffn/linear_0"), ("fc2", "ffn/linear_1")]
        for ours, theirs in linears:
            sd[f"{dst}.{ours}.weight"] = _f32(ct2, f"{src}/{theirs}/weight")
            sd[f"{dst}.{ours}.bias"] = _f32(ct2, f"{src}/{theirs}/bias")
        (qw, qb), (kw, _), (vw, vb) = split_fused(f"{src}/self_attention/linear_0", ("q", "k", "v"), 1)
        sd.update({f"{dst}.self_attn.q_proj.weight": qw, f"{dst}.self_attn.q_proj.bias": qb,
                   f"{dst}.self_attn.k_proj.weight": kw,
                   f"{dst}.self_attn.v_proj.weight": vw, f"{dst}.self_attn.v_proj.bias": vb})
        (kw, _), (vw, vb) = split_fused(f"{src}/attention/linear_1", ("k", "v"), 0)
        sd.update({f"{dst}.encoder_attn.k_proj.weight": kw,
                   f"{dst}.encoder_attn.v_proj.weight": vw, f"{dst}.encoder_attn.v_proj.bias": vb})
        for ours, theirs in (("self_attn_layer_norm", "self_attention/layer_norm"),
                             ("encoder_attn_layer_norm", "attention/layer_norm"),
                             ("final_layer_norm", "ffn/layer_norm")):
            sd[f"{dst}.{ours}.weight"] = _f32(ct2, f"{src}/{theirs}/gamma")
            sd[f"{dst}.{ours}.bias"] = _f32(ct2, f"{src}/{theirs}/beta")
    return {k: v.contiguous() for k, v in sd.items()}


def load_ct2_whisper_decoder(path: str | os.PathLike) -> tuple[WhisperTextDecoder, CT2Model]:
    """A float32 WhisperTextDecoder (eval mode) with the CT2 model's decoder weights, and the CT2 model."""
    ct2 = read_ct2_model(path)
    model = WhisperTextDecoder(ct2_decoder_config(ct2))
    sd = ct2_decoder_state_dict(ct2)
    own = model.state_dict()
    if sd.keys() != own.keys():
        raise ValueError(f"converted keys do not match the model: missing {sorted(own.keys() - sd.keys())[:5]}, "
                         f"unexpected {sorted(sd.keys() - own.keys())[:5]}")
    with torch.no_grad():
        for k, v in sd.items():
            if own[k].shape != v.shape:
                raise ValueError(f"{k}: converted {tuple(v.shape)} vs model {tuple(own[k].shape)}")
            own[k].copy_(v)
    return model.eval(), ct2
