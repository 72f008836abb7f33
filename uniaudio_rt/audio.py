"""Audio input: decoding, validation, mono mixdown and resampling to 16 kHz."""

from __future__ import annotations

import functools
import math
import os
from typing import Union

import numpy as np
import torch
from torch import Tensor

TARGET_RATE = 16000
MAX_SAMPLE_RATE = 768000

AudioLike = Union[str, os.PathLike, np.ndarray, Tensor]


def load_audio(path: Union[str, os.PathLike]) -> tuple[np.ndarray, int]:
    """Decode a file to float32 (channels, samples) and its sample rate. Raises ValueError."""
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, expected an audio file")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ValueError(f"{path}: cannot decode audio ({e})") from None
    return np.ascontiguousarray(data.T), int(sr)


def _check_rate(sample_rate) -> int:
    if sample_rate is None:
        raise ValueError("sample_rate is required when passing samples (e.g. sample_rate=16000)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        if isinstance(sample_rate, float) and sample_rate.is_integer():
            sample_rate = int(sample_rate)
        else:
            raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if not 1000 <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate} Hz is outside the supported range "
                         f"1000..{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def to_mono_16k(audio: AudioLike, sample_rate: int | None = None, *, channel: str | int = "mix",
                name: str = "audio") -> Tensor:
    """Validate input and return a float32 (samples,) tensor at 16 kHz.

    ``audio`` is a path (the file's own rate is used, ``sample_rate`` must be None or equal) or
    samples shaped (samples,) or (channels, samples). Multi-channel input is averaged
    (``channel="mix"``) or one channel is taken (``channel=0`` is what the public code does).
    """
    if isinstance(audio, (str, os.PathLike)):
        name = os.fspath(audio)
        data, file_rate = load_audio(audio)
        if sample_rate is not None and _check_rate(sample_rate) != file_rate:
            raise ValueError(f"{name}: file is {file_rate} Hz but sample_rate={sample_rate} was given")
        wav, sample_rate = torch.from_numpy(data), file_rate
    elif isinstance(audio, np.ndarray):
        if not np.issubdtype(audio.dtype, np.number) or np.iscomplexobj(audio):
            raise ValueError(f"{name}: expected real-valued samples, got dtype {audio.dtype}")
        if np.issubdtype(audio.dtype, np.integer):
            info = np.iinfo(audio.dtype)
            wav = torch.from_numpy(audio.astype(np.float32) / max(abs(info.min), info.max))
        else:
            wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    elif isinstance(audio, Tensor):
        if audio.is_complex() or not (audio.is_floating_point() or audio.dtype in (torch.int16, torch.int32)):
            raise ValueError(f"{name}: expected real-valued samples, got dtype {audio.dtype}")
        wav = audio.detach().cpu().float() if audio.is_floating_point() else audio.float() / 32768.0
    else:
        raise ValueError(f"{name}: expected a path, numpy array or torch tensor, got {type(audio).__name__}")
    sample_rate = _check_rate(sample_rate)

    if wav.dim() == 2:
        if wav.shape[0] > 64 and wav.shape[1] <= 64:
            raise ValueError(f"{name}: shape {tuple(wav.shape)} looks like (samples, channels); "
                             f"pass (channels, samples)")
        if channel == "mix":
            wav = wav.mean(0)
        elif isinstance(channel, int) and -wav.shape[0] <= channel < wav.shape[0]:
            wav = wav[channel]
        else:
            raise ValueError(f"channel={channel!r}: expected 'mix' or a channel index < {wav.shape[0]}")
    elif wav.dim() != 1:
        raise ValueError(f"{name}: expected (samples,) or (channels, samples), got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise ValueError(f"{name}: audio contains {bad} NaN/inf samples")
    return resample(wav, sample_rate, TARGET_RATE)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zc: int = 6, rolloff: float = 0.99) -> tuple[Tensor, int]:
    """Polyphase windowed-sinc (Hann^2 window) kernels, one row per output phase."""
    base = min(orig, new) * rolloff
    width = math.ceil(width_zc * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, :] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None] / new + idx) * base
    t = t.clamp(-width_zc, width_zc)
    window = torch.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    return kernel.float()[:, None, :], width


def resample(wav: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Band-limited resampling of (..., T) audio (the algorithm of ``torchaudio.functional.resample``
    with its defaults: sinc with a Hann window, 6 zero crossings, roll-off 0.99)."""
    if orig_rate == new_rate:
        return wav
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    kernel, width = _sinc_kernel(orig, new)
    shape = wav.shape
    x = wav.reshape(-1, shape[-1])
    n = x.shape[-1]
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x[:, None], kernel.to(x.dtype), stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    y = y[:, : math.ceil(new * n / orig)]
    return y.reshape(*shape[:-1], y.shape[-1])
