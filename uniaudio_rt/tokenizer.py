"""Offline tokenization: audio in, integer tokens out (25 Hz for UniAudio-Token)."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .audio import AudioLike, to_mono_16k
from .checkpoint import load_encoder
from .mel import HOP_LENGTH, log_mel_spectrogram
from .models.encoder import WhisperVQEncoder
from .runtime import prepare_for_inference

DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "default")


@dataclass
class Segment:
    item: int       # index of the input this segment belongs to
    start: int      # first sample (16 kHz) of the segment in its input
    audio: Tensor   # (samples,) float32, 16 kHz
    keep: slice = field(default_factory=lambda: slice(None))  # tokens of this segment that are kept (overlap mode trims the edges)


class Tokenizer:
    """Turns audio into UniAudio-Token / WhisperVQ tokens.

    Follows the public reference pipeline: resample to 16 kHz, cut into 30 s segments, Whisper
    log-mel per segment (padded to a multiple of the token stride), encoder up to the quantizer,
    tokens of the real (unpadded) frames concatenated per input. Segments are batched; the
    attention mask hides padding, so a clip's tokens do not depend on what it is batched with.
    """

    def __init__(self, model: WhisperVQEncoder, *, batch_size: int = 8, device: str | torch.device = "cpu",
                 channel: Union[str, int] = "mix", num_threads: Optional[int] = None,
                 segmentation: str = "cut", overlap_s: float = 4.0, precision: str = "fp32",
                 backend: str = "torch", onnx_dir: Optional[str] = None, copy_model: bool = True):
        if model.codebook is None:
            raise ValueError("model has no quantizer (quantize_vocab_size is None); cannot tokenize")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.precision = precision
        if copy_model:  # the runtime prunes and fuses in place; leave the caller's model alone
            model = copy.deepcopy(model)
        self.model = prepare_for_inference(model.to(device), precision)
        self.encoder = self.model  # what runs the tokens: the torch model or an ONNX Runtime session
        if backend == "onnxruntime":
            from .onnx_export import OnnxEncoder, export_tokenizer

            if precision != "fp32" or torch.device(device).type != "cpu":
                raise ValueError("backend='onnxruntime' runs the fp32 graph on the CPU")
            if onnx_dir is None or not os.path.exists(os.path.join(onnx_dir, "tokenizer.json")):
                import tempfile

                onnx_dir = export_tokenizer(self.model, onnx_dir or tempfile.mkdtemp(prefix="uniaudio-onnx-"))
            self.encoder = OnnxEncoder(onnx_dir, num_threads=num_threads)
        elif backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
        self.backend = backend
        self.config = model.config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.channel = channel
        if segmentation not in ("cut", "overlap"):
            raise ValueError(f"segmentation must be 'cut' (public hard 30 s cuts) or 'overlap', got {segmentation!r}")
        spt = self.config.samples_per_token
        self.overlap_tokens = int(round(overlap_s * self.config.sampling_rate / spt))
        if segmentation == "overlap" and not 0 < 2 * self.overlap_tokens * spt < self.config.segment_samples:
            raise ValueError(f"overlap_s={overlap_s} must be > 0 and leave room in a "
                             f"{self.config.chunk_length_s} s window (< {self.config.chunk_length_s / 2} s)")
        self.segmentation = segmentation
        if num_threads is not None:
            torch.set_num_threads(num_threads)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: Optional[str | os.PathLike] = None, **kwargs) -> "Tokenizer":
        """Load a checkpoint directory / file; with no argument, the model shipped in the package."""
        if path is None:
            path = DEFAULT_MODEL_DIR
            if not os.path.exists(os.path.join(path, "config.json")):
                raise ValueError(f"no default model is installed at {path}; pass a checkpoint "
                                 f"directory (config.json + model.safetensors)")
        if kwargs.get("backend") == "onnxruntime" and kwargs.get("onnx_dir") is None and os.path.isdir(path):
            from .onnx_export import cached_export_dir

            kwargs["onnx_dir"] = cached_export_dir(os.fspath(path))
        return cls(load_encoder(path, for_tokens=True), copy_model=False, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def frame_rate(self) -> float:
        return self.config.token_rate

    @property
    def vocab_size(self) -> int:
        return self.config.quantize_vocab_size

    # ------------------------------------------------------------------ pipeline
    def segments(self, wav: Tensor, item: int = 0) -> list[Segment]:
        """Cut one input into <= 30 s segments.

        ``cut``: hard 30 s cuts, as the public ``extract_speech_token`` does. ``overlap``: windows
        of up to 30 s that overlap by ``overlap_s`` on each side; each keeps only the tokens of its
        centre, so every token is computed with context on both sides (except at the ends).
        """
        seg = self.config.segment_samples
        if self.segmentation == "cut" or wav.numel() <= seg:
            return [Segment(item, s, wav[s: s + seg]) for s in range(0, wav.numel(), seg)]
        spt = self.config.samples_per_token
        ov = self.overlap_tokens
        hop = seg // spt - 2 * ov                       # tokens each window contributes
        n_tok = -(-wav.numel() // spt)
        out = []
        for first in range(0, n_tok, hop):              # first token this window keeps
            w0 = max(0, first - ov)
            w0 = min(w0, max(0, n_tok - seg // spt))    # the last window is a full 30 s if possible
            out.append(Segment(item, w0 * spt, wav[w0 * spt: w0 * spt + seg],
                               slice(first - w0, min(first + hop, n_tok) - w0)))
        return out

    def features(self, segment: Tensor) -> tuple[Tensor, int]:
        """Log-mel of one segment padded to a multiple of the token stride, and its real frames."""
        stride = self.config.samples_per_token
        n = segment.numel()
        padded = torch.nn.functional.pad(segment, (0, (-n) % stride))
        mel = log_mel_spectrogram(padded, self.config.num_mel_bins, self.config.mel_floor_db)
        return mel, math.ceil(n / HOP_LENGTH)

    def _encode_segments(self, segs: Sequence[Segment]) -> list[list[int]]:
        feats = [self.features(s.audio) for s in segs]
        t_max = max(m.shape[-1] for m, _ in feats)
        mel = torch.zeros(len(feats), self.config.num_mel_bins, t_max)
        mask = torch.zeros(len(feats), t_max, dtype=torch.bool)
        for i, (m, n_real) in enumerate(feats):
            mel[i, :, : m.shape[-1]] = m
            mask[i, :n_real] = True
        tokens, token_mask = self.encoder.encode_tokens(mel.to(self.device), mask.to(self.device))
        tokens, token_mask = tokens.cpu(), token_mask.cpu()
        return [tokens[i][token_mask[i]].tolist() for i in range(len(feats))]

    def encode_batch(self, audios: Sequence[AudioLike], sample_rate: Optional[Union[int, Sequence[Optional[int]]]] = None,
                     progress: bool = False) -> list[list[int]]:
        """Tokens for each input (path, or samples with their ``sample_rate``)."""
        if isinstance(audios, (str, os.PathLike, Tensor, np.ndarray)):
            raise ValueError("encode_batch expects a sequence of inputs; use encode() for one input")
        audios = list(audios)
        if isinstance(sample_rate, (list, tuple)):
            if len(sample_rate) != len(audios):
                raise ValueError(f"got {len(sample_rate)} sample rates for {len(audios)} inputs")
            rates = list(sample_rate)
        else:
            rates = [sample_rate] * len(audios)
        segs: list[Segment] = []
        for i, (a, sr) in enumerate(zip(audios, rates)):
            segs.extend(self.segments(to_mono_16k(a, sr, channel=self.channel, name=f"input {i}"), i))
        # longest first: batches hold segments of similar length, so little padding is computed
        order = sorted(range(len(segs)), key=lambda j: -segs[j].audio.numel())
        results: dict[int, list[int]] = {}
        bar = _progress(len(order), progress, "segments")
        for b in range(0, len(order), self.batch_size):
            chunk = order[b: b + self.batch_size]
            for j, toks in zip(chunk, self._encode_segments([segs[j] for j in chunk])):
                results[j] = toks
            bar.update(len(chunk))
        bar.close()
        out: list[list[int]] = [[] for _ in audios]
        for j in range(len(segs)):  # segments are in input order, then time order
            out[segs[j].item].extend(results[j][segs[j].keep])
        return out

    def encode(self, audio: AudioLike, sample_rate: Optional[int] = None) -> list[int]:
        """Tokens of one input: a file path, or samples (samples,) / (channels, samples)."""
        return self.encode_batch([audio], [sample_rate])[0]

    __call__ = encode


def _progress(total: int, enabled: bool, unit: str):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, dynamic_ncols=True)

    class _Null:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()

