"""Decoder training configuration (YAML or JSON file -> :class:`DecoderTrainConfig`).

Model sizes are given as nested mappings with the field names of the decoder dataclasses
(``flow: {input_size, encoder: {...}, length_regulator: {...}, cfm: {...}, estimator: {...}}``,
``hift: {base_channels, ..., f0_predictor: {...}}``) and are merged over the default sizes
(:data:`DEFAULT_FLOW`, :data:`DEFAULT_HIFT`), so a file names only what it changes. The flow's
``vocab_size`` and ``input_frame_rate`` always come from the tokenizer.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Optional

from ..data.sources import TRAIN_SPLITS
from .config import FlowConfig, HiFTConfig

# Default sizes (docs/DECODER.md, "Training"): 6.0 M flow + 0.9 M HiFT parameters, 13.8 MB in float16.
DEFAULT_FLOW: dict[str, Any] = {
    "input_size": 192, "output_size": 80, "spk_embed_dim": 192,
    "encoder": {"input_size": 192, "output_size": 192, "attention_heads": 2, "linear_units": 768,
                "num_blocks": 4, "block_size": 10},
    "length_regulator": {"channels": 80, "sampling_ratios": [1, 1, 1, 1]},
    "cfm": {"in_channels": 240, "n_spks": 1, "spk_emb_dim": 80, "t_scheduler": "cosine",
            "inference_cfg_rate": 0.7, "n_timesteps": 10},
    "estimator": {"in_channels": 320, "out_channels": 80, "channels": [128, 128], "attention_head_dim": 64,
                  "n_blocks": 1, "num_mid_blocks": 4, "num_heads": 2},
}
DEFAULT_HIFT: dict[str, Any] = {
    "in_channels": 80, "base_channels": 96, "nb_harmonics": 8, "upsample_rates": [8, 8],
    "upsample_kernel_sizes": [16, 16], "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 11], "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "f0_predictor": {"in_channels": 80, "cond_channels": 96},
}

# keys that may change between a run and its resumption; the token map is used only at a fresh
# start (and its fields came later: checkpoints written before them still resume)
VOLATILE = ("steps", "checkpoint_every", "log_every", "threads", "notes", "prep_batch",
            "init_token_map", "token_map_clips")


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "istft_params":
            out[k] = _merge(out[k], v, f"{where}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _build(cls, d: dict, where: str):
    """Dataclass ``cls`` from a mapping of its field names (nested dataclasses recursively); unknown
    keys raise, naming the known ones."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    kw = {}
    for k, v in d.items():
        sub = known[k].default_factory() if known[k].default_factory is not dataclasses.MISSING else known[k].default
        if is_dataclass(sub):
            v = _build(type(sub), v, f"{where}.{k}")
        elif isinstance(sub, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        elif isinstance(sub, float) and isinstance(v, (int, str)) and not isinstance(v, bool):
            v = float(v)
        kw[k] = v
    try:
        return cls(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass
class DecoderTrainConfig:
    """One decoder training run. Relative paths are relative to the working directory."""

    corpus: str = "corpus"                  # `uniaudio-rt data build` output
    out: str = "runs/decoder"               # checkpoints, logs, the exported decoder (OUT/decoder)
    tokenizer: Optional[str] = None         # tokenizer directory; None = the package's default
    init_from: Optional[str] = None         # warm start: a decoder directory (config.yaml, flow.pt, hift.pt)
                                            # whose weights a new run starts from (same model sizes)
    init_token_map: Optional[str] = None    # with init_from: the tokenizer init_from's flow was trained on;
                                            # its token embedding is carried over to this run's tokenizer
                                            # by co-occurrence of the two tokenizations of the train clips
    token_map_clips: int = 1500             # train clips (evenly spaced) tokenized for that map
    cache: Optional[str] = None             # prepared-data directory; None = <corpus>/.decoder_data
    kinds: list[str] = field(default_factory=lambda: ["speech", "voice"])  # add "event", "music" to include them
    splits: list[str] = field(default_factory=lambda: ["train"])  # add "train_decoder": untranscribed decoder-only audio
    min_tokens: int = 12                    # clips with fewer tokens (0.48 s) are left out
    flow: dict[str, Any] = field(default_factory=dict)   # overrides of DEFAULT_FLOW
    hift: dict[str, Any] = field(default_factory=dict)   # overrides of DEFAULT_HIFT
    train_flow: bool = True
    train_hift: bool = True
    steps: int = 30000                      # each step updates the flow and HiFT once
    warmup_steps: int = 500
    seed: int = 0
    # flow matching
    flow_max_tokens: int = 800              # tokens per flow batch (clips x crop length)
    flow_segment_tokens: int = 100          # crop length cap (4 s); a batch is cut to its shortest clip
    flow_lr: float = 5e-4
    sigma_min: float = 1e-6
    cfg_dropout: float = 0.2                # P(mu, speaker and prompt dropped): the unconditional branch of CFG
    prompt_prob: float = 0.5                # P(a clip is conditioned on a prefix of its own mel)
    prompt_max_fraction: float = 0.7        # prefix length uniform in [0, this x frames]; the public recipe
                                            # uses 0.3, Detokenizer.stream's prompt is up to 60 / (60 + 25)
    flow_loss: str = "l2"                   # "l2" or "l1", over the non-prompt frames
    mu_weight: float = 0.0                  # > 0: + this x MSE(mu, mel), a prior loss on the encoder's mel estimate
    band_threshold: Optional[float] = None  # set: per clip, mel bins above its band edge (the highest bin whose
                                            # 95th-percentile log-mel reaches this) are left out of both flow
                                            # losses, so band-limited (e.g. 11,025 Hz) sources do not teach a
                                            # dark high band; null = every bin counts
    # HiFT (no GAN: multi-resolution STFT + mel L1; the F0 predictor regresses an autocorrelation F0)
    hift_batch: int = 8
    hift_segment_frames: int = 32           # 0.37 s of audio per segment
    hift_lr: float = 5e-4
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    f0_weight: float = 1.0
    stft_resolutions: list[list[int]] = field(default_factory=lambda: [[512, 128, 512], [1024, 256, 1024],
                                                                       [256, 64, 256]])  # n_fft, hop, win
    # optional adversarial vocoder training (decoder/gan.py; off by default, not tried on a real run yet)
    gan: bool = False
    gan_start_step: int = 0                 # the discriminator and the adversarial terms start here
    gan_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    gan_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    disc_lr: float = 2e-4
    adv_weight: float = 0.025               # HiFi-GAN's adversarial : feature matching : mel = 1 : 2 : 45,
    fm_weight: float = 0.05                 # scaled to mel_weight 1
    # optimisation and bookkeeping
    weight_decay: float = 0.01
    grad_clip: float = 1.0                  # per module (flow, vocoder, F0 predictor)
    checkpoint_every: int = 200
    log_every: int = 20
    threads: Optional[int] = None
    prep_batch: int = 64                    # clips per tokenizer call and per prepared shard
    notes: str = ""

    def flow_config(self, vocab_size: int, input_frame_rate: float) -> FlowConfig:
        d = _merge(DEFAULT_FLOW, self.flow, "flow")
        for k in ("vocab_size", "input_frame_rate"):
            if k in self.flow:
                raise ValueError(f"flow.{k} comes from the tokenizer; remove it from the config")
        d.update(vocab_size=int(vocab_size), input_frame_rate=float(input_frame_rate))
        cfg = _build(FlowConfig, d, "flow")
        if cfg.output_size != 80 or cfg.sample_rate != 22050 or cfg.hop_length != 256:
            raise ValueError("the decoder mel is 80 bins at 22050 Hz, hop 256 (decoder/mel.py); flow has output_size="
                             f"{cfg.output_size}, sample_rate={cfg.sample_rate}, hop_length={cfg.hop_length}")
        return cfg

    def hift_config(self) -> HiFTConfig:
        cfg = _build(HiFTConfig, _merge(DEFAULT_HIFT, self.hift, "hift"), "hift")
        if cfg.in_channels != 80 or cfg.sampling_rate != 22050 or cfg.upsample_factor != 256:
            raise ValueError(f"HiFT must turn 80-bin mel frames into 256 samples at 22050 Hz; got in_channels="
                             f"{cfg.in_channels}, sampling_rate={cfg.sampling_rate}, hop_len x upsample_rates = "
                             f"{cfg.upsample_factor}")
        return cfg

    def validate(self) -> None:
        for name in ("steps", "flow_max_tokens", "flow_segment_tokens", "hift_batch", "hift_segment_frames",
                     "min_tokens", "prep_batch", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.flow_loss not in ("l1", "l2"):
            raise ValueError(f"flow_loss must be 'l1' or 'l2', got {self.flow_loss!r}")
        if self.mu_weight < 0:
            raise ValueError(f"mu_weight must be >= 0, got {self.mu_weight}")
        if self.band_threshold is not None:
            from .mel import SILENCE

            try:  # YAML 1.1 reads e.g. -8e0 as a string
                if isinstance(self.band_threshold, bool):
                    raise TypeError
                self.band_threshold = float(self.band_threshold)
            except (TypeError, ValueError):
                raise ValueError(f"band_threshold must be a number or null, got {self.band_threshold!r}") from None
            if not SILENCE < self.band_threshold < 5:
                raise ValueError(f"band_threshold is a log-mel level and must lie between silence ({SILENCE:.2f}) "
                                 f"and 5, got {self.band_threshold}")
        for name in ("cfg_dropout", "prompt_prob", "prompt_max_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        bad = sorted(set(self.kinds) - {"speech", "voice", "event", "music"})
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of speech, voice, event, music; got {self.kinds}")
        bad = sorted(set(self.splits) - set(TRAIN_SPLITS))
        if bad or not self.splits:
            raise ValueError(f"splits must be a non-empty subset of {list(TRAIN_SPLITS)}; got {self.splits}")
        if self.gan and (not self.gan_periods or not self.gan_channels or self.gan_start_step < 0):
            raise ValueError("gan needs non-empty gan_periods and gan_channels and gan_start_step >= 0")
        if not (self.train_flow or self.train_hift):
            raise ValueError("train_flow and train_hift are both false: nothing to train")
        if self.init_token_map and not self.init_from:
            raise ValueError("init_token_map needs init_from (the decoder whose token embedding it maps)")
        if self.token_map_clips < 1:
            raise ValueError(f"token_map_clips must be >= 1, got {self.token_map_clips}")
        for r in self.stft_resolutions:
            if len(r) != 3 or not all(isinstance(v, int) and v > 0 for v in r) or r[2] > r[0]:
                raise ValueError(f"stft_resolutions entries are [n_fft, hop, win] with win <= n_fft, got {r}")
        self.hift_config()
        self.flow_config(1024, 25.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resume_key(self) -> dict[str, Any]:
        """What must not change when a run resumes."""
        key = {k: v for k, v in self.to_dict().items() if k not in VOLATILE}
        if key["band_threshold"] is None:  # added later: runs from before still resume
            del key["band_threshold"]
        if key["splits"] == ["train"]:  # the default, and what runs before the field had: they still resume
            del key["splits"]
        return key

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderTrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown decoder training config keys: {unknown} (known: {sorted(known)})")
        from ..train.config import coerce_floats

        cfg = cls(**coerce_floats(cls, d))
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str, **overrides: Any) -> "DecoderTrainConfig":
        from ..train.config import read_config_file

        return cls.from_dict(read_config_file(path, overrides))
