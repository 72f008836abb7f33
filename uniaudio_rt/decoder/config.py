"""Dimensions of the token-to-audio decoder, one dataclass per module.

Field names follow the keyword arguments in the public ``decoder/config.yaml`` (CosyVoice /
GLM-4-Voice family), so ``FlowConfig.from_yaml_dict(cfg["flow"])`` reads the real file's values.
``tiny()`` gives random-weight test sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping


def _as_tuple(v):
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _coerce(v, default, where: str):
    """YAML gives lists for tuples and (YAML 1.1) strings for floats such as ``1e-06``."""
    if isinstance(default, tuple) and isinstance(v, (list, tuple)):
        return _as_tuple(v)
    if isinstance(default, float) and isinstance(v, (str, int)) and not isinstance(v, bool):
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{where} must be a number, got {v!r}") from None
    return v


def _pick(cls, d: Mapping[str, Any], where: str):
    """Build dataclass ``cls`` from the keys of ``d`` that it knows; unknown keys are ignored
    (training-only options such as dropout), wrong types raise with the key name."""
    known = {f.name: f for f in fields(cls)}
    kw = {}
    for k, v in d.items():
        if k in known and not k.startswith("_"):
            kw[k] = _coerce(v, known[k].default, f"{where}.{k}")
    try:
        return cls(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: cannot build {cls.__name__} from {sorted(kw)}: {e}") from None


@dataclass
class EncoderConfig:
    """Conformer encoder over token embeddings (BlockConformerEncoder; ``block_size`` 0 = full attention)."""

    input_size: int = 512
    output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    normalize_before: bool = True
    block_size: int = 10
    key_bias: bool = True

    def __post_init__(self):
        if self.output_size % self.attention_heads:
            raise ValueError(f"encoder output_size={self.output_size} is not divisible by "
                             f"attention_heads={self.attention_heads}")
        if self.block_size < 0:
            raise ValueError(f"encoder block_size must be >= 0 (0 = full attention), got {self.block_size}")


@dataclass
class LengthRegulatorConfig:
    """InterpolateRegulator: nearest upsampling to mel frames, then (Conv1d, GroupNorm, Mish) x N, Conv1d."""

    channels: int = 80
    sampling_ratios: tuple = (1, 1, 1, 1)
    out_channels: int | None = None
    groups: int = 1


@dataclass
class EstimatorConfig:
    """ConditionalDecoder: the U-Net style 1-D conv + transformer velocity estimator."""

    in_channels: int = 320
    out_channels: int = 80
    channels: tuple = (256, 256)
    attention_head_dim: int = 64
    n_blocks: int = 4
    num_mid_blocks: int = 12
    num_heads: int = 8
    act_fn: str = "gelu"

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.act_fn != "gelu":
            raise ValueError(f"estimator act_fn={self.act_fn!r} is not supported (only 'gelu')")
        if not self.channels:
            raise ValueError("estimator channels must not be empty")


@dataclass
class CFMConfig:
    """ConditionalCFM sampling parameters (``cfm_params`` in the yaml)."""

    in_channels: int = 240
    n_spks: int = 1
    spk_emb_dim: int = 80
    sigma_min: float = 1e-6
    t_scheduler: str = "cosine"
    inference_cfg_rate: float = 0.7
    n_timesteps: int = 10

    def __post_init__(self):
        if self.t_scheduler not in ("cosine", "linear"):
            raise ValueError(f"t_scheduler must be 'cosine' or 'linear', got {self.t_scheduler!r}")


@dataclass
class FlowConfig:
    """MaskedDiffWithXvec: tokens -> mel (22050 Hz, hop 256, 80 bins)."""

    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 16384
    input_frame_rate: float = 12.5
    sample_rate: int = 22050
    hop_length: int = 256
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    length_regulator: LengthRegulatorConfig = field(default_factory=LengthRegulatorConfig)
    cfm: CFMConfig = field(default_factory=CFMConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)

    def __post_init__(self):
        if self.encoder.input_size != self.input_size:
            raise ValueError(f"encoder input_size={self.encoder.input_size} != flow input_size={self.input_size}")
        need = 4 * self.output_size if self.cfm.n_spks > 0 else 3 * self.output_size
        if self.estimator.in_channels != need:
            raise ValueError(f"estimator in_channels={self.estimator.in_channels}, expected {need} "
                             f"(x, mu, spks, cond of {self.output_size} channels each)")
        if self.estimator.out_channels != self.output_size:
            raise ValueError(f"estimator out_channels={self.estimator.out_channels} != output_size={self.output_size}")

    def mel_frames(self, n_tokens: int) -> int:
        """Mel frames for ``n_tokens`` tokens, as the official ``int(len / rate * sr / hop)``."""
        return int(n_tokens / self.input_frame_rate * self.sample_rate / self.hop_length)

    @classmethod
    def tiny(cls, block_size: int = 4, input_frame_rate: float = 25.0) -> "FlowConfig":
        return cls(input_size=32, output_size=16, spk_embed_dim=12, vocab_size=50, input_frame_rate=input_frame_rate,
                   encoder=EncoderConfig(input_size=32, output_size=32, attention_heads=2, linear_units=48,
                                         num_blocks=2, block_size=block_size),
                   length_regulator=LengthRegulatorConfig(channels=16, sampling_ratios=(1, 1)),
                   cfm=CFMConfig(in_channels=48, spk_emb_dim=16, n_timesteps=4),
                   estimator=EstimatorConfig(in_channels=64, out_channels=16, channels=(32, 32), attention_head_dim=8,
                                             n_blocks=1, num_mid_blocks=2, num_heads=2))

    @classmethod
    def from_yaml_dict(cls, flow: Mapping[str, Any], sample_rate: int = 22050) -> "FlowConfig":
        """From the ``flow:`` node of a parsed config.yaml (see loader.read_config)."""
        enc = _pick(EncoderConfig, flow.get("encoder", {}), "flow.encoder")
        lr = _pick(LengthRegulatorConfig, flow.get("length_regulator", {}), "flow.length_regulator")
        dec = flow.get("decoder", {})
        cfm_params = dict(dec.get("cfm_params", {}))
        cfm_params = dict(cfm_params.get("content", cfm_params))  # omegaconf.DictConfig wrapper
        cfm = _pick(CFMConfig, {**{k: v for k, v in dec.items() if k in ("in_channels", "n_spks", "spk_emb_dim")},
                                **cfm_params}, "flow.decoder")
        est = _pick(EstimatorConfig, dec.get("estimator", {}), "flow.decoder.estimator")
        scalars = {k: v for k, v in flow.items() if k not in ("encoder", "length_regulator", "decoder")}
        return _pick(cls, {**scalars, "sample_rate": sample_rate, "encoder": enc, "length_regulator": lr,
                           "cfm": cfm, "estimator": est}, "flow")


@dataclass
class F0PredictorConfig:
    """ConvRNNF0Predictor: 5 weight-normed conv layers + linear classifier."""

    num_class: int = 1
    in_channels: int = 80
    cond_channels: int = 512


@dataclass
class HiFTConfig:
    """HiFTGenerator: NSF source + ISTFTNet vocoder (mel -> wav)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple = (8, 8)
    upsample_kernel_sizes: tuple = (16, 16)
    istft_params: dict = field(default_factory=lambda: {"n_fft": 16, "hop_len": 4})
    resblock_kernel_sizes: tuple = (3, 7, 11)
    resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple = (7, 11)
    source_resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_predictor: F0PredictorConfig = field(default_factory=F0PredictorConfig)

    def __post_init__(self):
        self.upsample_rates = tuple(self.upsample_rates)
        self.upsample_kernel_sizes = tuple(self.upsample_kernel_sizes)
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                             f"{self.upsample_kernel_sizes} differ in length")
        if len(self.source_resblock_kernel_sizes) != len(self.upsample_rates):
            raise ValueError(f"source_resblock_kernel_sizes {tuple(self.source_resblock_kernel_sizes)} must have one "
                             f"entry per upsample stage ({len(self.upsample_rates)})")
        for k in ("n_fft", "hop_len"):
            if k not in self.istft_params:
                raise ValueError(f"istft_params lacks {k!r}: {self.istft_params}")

    @property
    def n_fft(self) -> int:
        return int(self.istft_params["n_fft"])

    @property
    def hop_len(self) -> int:
        return int(self.istft_params["hop_len"])

    @property
    def upsample_factor(self) -> int:
        """Samples per mel frame (8 * 8 * 4 = 256 for the public model)."""
        f = self.hop_len
        for r in self.upsample_rates:
            f *= r
        return f

    @classmethod
    def tiny(cls) -> "HiFTConfig":
        return cls(in_channels=16, base_channels=16, nb_harmonics=2, upsample_rates=(4, 2),
                   upsample_kernel_sizes=(8, 4), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),),
                   source_resblock_kernel_sizes=(3, 3), source_resblock_dilation_sizes=((1,), (1,)),
                   f0_predictor=F0PredictorConfig(in_channels=16, cond_channels=8))

    @classmethod
    def from_yaml_dict(cls, hift: Mapping[str, Any]) -> "HiFTConfig":
        f0 = _pick(F0PredictorConfig, hift.get("f0_predictor", {}), "hift.f0_predictor")
        top = {k: v for k, v in hift.items() if k != "f0_predictor"}
        cfg = _pick(cls, top, "hift")
        cfg.f0_predictor = f0
        return cfg
