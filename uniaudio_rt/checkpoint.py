"""Loading and saving encoder checkpoints.

Accepted inputs:

* an HF-style directory: ``config.json`` + ``model.safetensors`` (or sharded
  ``model-*.safetensors`` with ``model.safetensors.index.json``, or ``pytorch_model.bin``), with bare
  ``WhisperVQEncoder`` keys (GLM-4-Voice tokenizer layout) or keys under ``model.encoder.`` (a full
  WhisperVQ model, whose decoder keys are then ignored), including the UniAudio-Token extras
  ``residual_adapter.*``, ``residual_gate.*``, ``residual_output_norm.*``;
* our single-file format: one ``.safetensors`` file whose metadata holds the config.

Loading is strict: missing keys, unexpected keys and shape mismatches are all reported in one
``ValueError``.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
from torch import Tensor

from .models.config import WhisperVQConfig
from .models.encoder import WhisperVQEncoder

FORMAT_TAG = "uniaudio-rt/1"
ENCODER_PREFIXES = ("model.encoder.", "encoder.")
# Keys of a full WhisperVQ model that are not part of the encoder (ignored under a prefix).
_FOREIGN_PREFIXES = ("model.decoder.", "decoder.", "proj_out.")
# Buffers that training checkpoints carry and inference checkpoints may omit.
OPTIONAL_KEYS = ("ema_count", "ema_weight")
_REQUIRED_CONFIG = ("d_model", "encoder_layers", "encoder_attention_heads", "num_mel_bins")


class CheckpointError(ValueError):
    pass


def _read_state_dict(path: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return sd, {}


def _weight_files(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(directory, s) for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return [p]
    found = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
    if len(found) == 1:
        return [os.path.join(directory, found[0])]
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or "
                          f"pytorch_model.bin found (files: {sorted(os.listdir(directory))[:10]})")


def _check_config(path: str, cfg_dict) -> None:
    if not isinstance(cfg_dict, dict):
        raise CheckpointError(f"{path}: config must be a JSON object")
    missing = [k for k in _REQUIRED_CONFIG if k not in cfg_dict]
    if missing:
        raise CheckpointError(f"{path}: config lacks {missing}; is this a WhisperVQ / UniAudio-Token checkpoint?")


def read_checkpoint(path: str | os.PathLike) -> tuple[WhisperVQConfig, dict[str, Tensor]]:
    """Config and raw state dict of a checkpoint directory or single file (keys not yet mapped)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if not os.path.exists(cfg_path):
            raise CheckpointError(f"{path}: missing config.json")
        with open(cfg_path, encoding="utf-8") as f:
            try:
                cfg_dict = json.load(f)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
        _check_config(path, cfg_dict)
        sd: dict[str, Tensor] = {}
        for wf in _weight_files(path):
            sd.update(_read_state_dict(wf)[0])
    else:
        sd, meta = _read_state_dict(path)
        if meta.get("format") != FORMAT_TAG or "config" not in meta:
            raise CheckpointError(f"{path}: a single-file checkpoint must be saved by uniaudio-rt "
                                  f"(metadata format={FORMAT_TAG!r}); for HF checkpoints pass the directory")
        cfg_dict = json.loads(meta["config"])
        _check_config(path, cfg_dict)
    return WhisperVQConfig.from_dict(cfg_dict), sd


def map_encoder_keys(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Strip an encoder prefix if present; return (encoder state dict, ignored foreign keys)."""
    for prefix in ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            enc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            rest = [k for k in sd if not k.startswith(prefix)]
            ignored = [k for k in rest if k.startswith(_FOREIGN_PREFIXES)]
            # anything else outside the prefix is unexpected and reported by the strict check
            enc.update({k: sd[k] for k in rest if not k.startswith(_FOREIGN_PREFIXES)})
            return enc, ignored
    return dict(sd), []


def _describe(keys: list[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(model: torch.nn.Module, sd: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Raise one CheckpointError naming every missing/unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and k not in OPTIONAL_KEYS]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in sd and sd[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_describe(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:8]))
    if problems:
        raise CheckpointError(f"{source} does not match the WhisperVQ encoder built from its config: "
                              + " | ".join(problems))


def load_encoder(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                 for_tokens: bool = False) -> WhisperVQEncoder:
    """Build and load a :class:`WhisperVQEncoder` from a checkpoint (strict).

    ``for_tokens=True`` keeps only what tokenisation needs (layers up to the quantizer; the SAE
    branch only if it joins at or before the quantizer). All checkpoint keys are still checked.
    """
    cfg, raw = read_checkpoint(path)
    sd, _ignored = map_encoder_keys(raw)
    with torch.device("meta"):
        full = WhisperVQEncoder(cfg)
    check_state_dict(full, sd, source=os.fspath(path))
    model = WhisperVQEncoder(cfg, tokens_only=for_tokens)
    if "ema_count" in model.state_dict():  # inference checkpoints may omit the EMA buffers
        sd.setdefault("ema_count", torch.ones(cfg.quantize_vocab_size))
        sd.setdefault("ema_weight", sd["codebook.weight"].float().clone())
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in sd.items() if k in wanted}, strict=True)
    return model.to(dtype).eval()


def prune_for_tokens(model: WhisperVQEncoder) -> WhisperVQEncoder:
    """Drop the modules that cannot influence the tokens (in place)."""
    cfg = model.config
    if cfg.quantize_vocab_size is None:
        return model
    model.layers = torch.nn.ModuleList(list(model.layers)[: cfg.quantize_position])
    if not cfg.residual_active_for_tokens:
        model.residual_adapter = model.residual_gate = model.residual_output_norm = None
    return model


def save_pretrained(model: WhisperVQEncoder, directory: str | os.PathLike,
                    prefix: str = "", dtype: Optional[torch.dtype] = None) -> None:
    """Write an HF-style directory (config.json + model.safetensors); ``prefix`` e.g. 'model.encoder.'."""
    from safetensors.torch import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    model.config.to_json(os.path.join(directory, "config.json"))
    sd = {prefix + k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
          for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def save_single_file(model: WhisperVQEncoder, path: str | os.PathLike) -> None:
    """Our single-file format: one safetensors file with the config in its metadata."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.fspath(path), metadata={"format": FORMAT_TAG,
                                              "config": json.dumps(model.config.to_dict())})
