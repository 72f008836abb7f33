"""Model dimensions and options, mirroring the public ``WhisperVQConfig`` (config.json) fields."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

# Fields of the public HF ``WhisperConfig`` that only concern the text decoder, generation or
# training bookkeeping. They are kept (in ``extra``) so a config round-trips, but unused here.
_IGNORED_PREFIXES = ("decoder_", "forced_", "suppress_", "begin_suppress", "alignment_heads",
                     "mask_time", "mask_feature", "apply_spec", "classifier_", "use_weighted",
                     "median_filter")


@dataclass
class WhisperVQConfig:
    """Dimensions of a WhisperVQ / UniAudio-Token encoder.

    Field names and defaults follow the public ``WhisperVQConfig`` so that a ``config.json`` of the
    GLM-4-Voice tokenizer or of UniAudio-Token loads unchanged with :meth:`from_dict`.
    Positions count transformer layers: position ``p`` means "after layer ``p``" (1-based), and
    ``0`` means "before the first layer".
    """

    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    max_source_positions: int = 1500
    activation_function: str = "gelu"
    scale_embedding: bool = False
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0

    pooling_kernel_size: Optional[int] = None
    pooling_type: str = "max"
    pooling_position: int = 0

    quantize_vocab_size: Optional[int] = None
    quantize_position: int = 16
    quantize_commit_coefficient: float = 0.25
    quantize_loss_scale: float = 1.0
    # ours (training only): divide the commitment loss by the spread of the quantized vectors (their
    # mean squared distance from the batch mean), so shrinking the spread does not lower it
    quantize_commit_normalize: bool = False
    quantize_ema_decay: Optional[float] = None
    quantize_restart_interval: Optional[int] = None
    quantize_encoder_only: bool = False
    quantize_causal_encoder: bool = False
    quantize_causal_block_size: Optional[int] = None

    encoder_causal_attention: bool = False
    encoder_causal_convolution: bool = False

    encoder_residual_source_position: Optional[int] = None
    encoder_residual_target_position: Optional[int] = None
    use_residual_adapter: bool = False
    use_residual_gate: bool = False
    codebook_gaussian_init: bool = False
    use_commit_loss: bool = True

    # Front end (ours; not in the public config). ``mel_floor_db`` is Whisper's "max - 8" floor over
    # a whole segment, which looks ahead; ``None`` drops it (streaming-safe, see mel.py).
    mel_floor_db: Optional[float] = 8.0
    sampling_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    chunk_length_s: int = 30

    extra: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"WhisperVQConfig.{name}={getattr(self, name)!r}: expected {expected}")

        for name in ("num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
                     "encoder_ffn_dim", "max_source_positions"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "a positive integer")
        if self.d_model % self.encoder_attention_heads:
            raise bad("d_model", f"a multiple of encoder_attention_heads={self.encoder_attention_heads}")
        if self.activation_function not in ("gelu", "gelu_new", "relu"):
            raise bad("activation_function", "'gelu', 'gelu_new' or 'relu'")
        if self.pooling_type not in ("avg", "max"):
            raise bad("pooling_type", "'avg' or 'max'")
        if self.pooling_kernel_size is not None and self.pooling_kernel_size < 1:
            raise bad("pooling_kernel_size", "None or an integer >= 1")
        if not 0 <= self.pooling_position <= self.encoder_layers:
            raise bad("pooling_position", f"0..encoder_layers={self.encoder_layers}")
        if self.quantize_vocab_size is not None:
            if self.quantize_vocab_size < 1:
                raise bad("quantize_vocab_size", "None or a positive integer")
            if not 0 <= self.quantize_position <= self.encoder_layers:
                raise bad("quantize_position", f"0..encoder_layers={self.encoder_layers}")
            if self.pooling_kernel_size is not None and self.quantize_position < self.pooling_position:
                raise bad("quantize_position", f">= pooling_position={self.pooling_position}")
        src, tgt = self.encoder_residual_source_position, self.encoder_residual_target_position
        if (src is None) != (tgt is None):
            raise ValueError("encoder_residual_source_position and encoder_residual_target_position "
                             f"must both be set or both be None, got {src!r} and {tgt!r}")
        if src is not None:
            if not 0 <= src < tgt:
                raise ValueError(f"encoder residual positions must satisfy 0 <= source < target, "
                                 f"got source={src}, target={tgt}")
        if self.quantize_causal_block_size is not None and self.pooling_kernel_size:
            if self.quantize_causal_block_size % self.pooling_kernel_size:
                raise bad("quantize_causal_block_size",
                          f"a multiple of pooling_kernel_size={self.pooling_kernel_size}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def has_residual(self) -> bool:
        return self.encoder_residual_source_position is not None

    @property
    def pool(self) -> int:
        return self.pooling_kernel_size or 1

    @property
    def samples_per_token(self) -> int:
        """Input samples per output frame: hop * conv stride (2) * pooling."""
        return self.hop_length * 2 * self.pool

    @property
    def token_rate(self) -> float:
        return self.sampling_rate / self.samples_per_token

    @property
    def segment_samples(self) -> int:
        return self.chunk_length_s * self.sampling_rate

    @property
    def residual_active_for_tokens(self) -> bool:
        """The SAE branch shapes the tokens only if it joins at or before the quantizer."""
        return self.has_residual and (self.quantize_vocab_size is None
                                      or self.encoder_residual_target_position <= self.quantize_position)

    @property
    def layers_needed_for_tokens(self) -> int:
        if self.quantize_vocab_size is None:
            return self.encoder_layers
        return self.quantize_position

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WhisperVQConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        cfg = cls(**known)
        cfg.extra = extra
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out.setdefault("model_type", "whisper")
        out.setdefault("architectures", ["WhisperVQEncoder"])
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "WhisperVQConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(d)

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def public_uniaudio_token_config() -> WhisperVQConfig:
    """The public UniAudio-Token architecture: Whisper-large-v3 encoder, avg pool 2 at position 0
    (25 Hz), quantizer after layer 16 with 8192 codes, SAE from layer 1 into layer 32."""
    return WhisperVQConfig(
        num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
        encoder_ffn_dim=5120, max_source_positions=1500, pooling_kernel_size=2, pooling_type="avg",
        pooling_position=0, quantize_vocab_size=8192, quantize_position=16,
        quantize_ema_decay=0.99, quantize_restart_interval=100,
        encoder_residual_source_position=1, encoder_residual_target_position=32,
        use_residual_adapter=True, use_residual_gate=True)


def glm4voice_tokenizer_config() -> WhisperVQConfig:
    """The GLM-4-Voice tokenizer architecture (12.5 Hz, block-causal, causal convolutions)."""
    return WhisperVQConfig(
        num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
        encoder_ffn_dim=5120, max_source_positions=1500, pooling_kernel_size=4, pooling_type="avg",
        pooling_position=16, quantize_vocab_size=16384, quantize_position=16,
        quantize_ema_decay=0.99, quantize_restart_interval=100, quantize_causal_block_size=200,
        encoder_causal_convolution=True)
