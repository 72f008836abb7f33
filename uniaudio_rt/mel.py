"""Whisper log-mel front end in PyTorch (matches ``transformers.WhisperFeatureExtractor``)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel = 1000.0, 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel = 1000.0, 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, fmin: float = 0.0,
                fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filter bank, shape (n_mels, n_fft // 2 + 1), float32, with
    filters spread over [fmin, fmax] (default: 0 to the Nyquist frequency; librosa's ``mel``)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, "
                         f"sample_rate={sample_rate}")
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    widths = np.diff(hz_pts)
    slopes = hz_pts[None, :] - fft_freqs[:, None]
    lower = -slopes[:, :-2] / widths[:-1]
    upper = slopes[:, 2:] / widths[1:]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (hz_pts[2: n_mels + 2] - hz_pts[:n_mels]))[None, :]
    return fb.T.astype(np.float32)


def log_mel_spectrogram(audio: Tensor, n_mels: int = 80, floor_db: float | None = 8.0) -> Tensor:
    """Whisper log-mel of 16 kHz audio.

    audio: (T,) or (B, T) float. Returns (n_mels, T // 160) or (B, n_mels, T // 160).
    STFT (Hann 400, hop 160, centred, reflect padding) -> power -> mel -> log10 (clamped at 1e-10)
    -> floored at ``max - floor_db`` per example (Whisper uses 8; ``None`` disables the floor,
    which has no look-ahead) -> (x + 4) / 4. The last STFT frame is dropped, as Whisper does.
    """
    squeeze = audio.dim() == 1
    if squeeze:
        audio = audio[None]
    if audio.dim() != 2:
        raise ValueError(f"audio must be (samples,) or (batch, samples), got {tuple(audio.shape)}")
    if audio.shape[-1] < N_FFT // 2 + 1:
        # reflect padding needs more than n_fft // 2 samples; pad short clips with zeros first
        audio = torch.nn.functional.pad(audio, (0, N_FFT // 2 + 1 - audio.shape[-1]))
    audio = audio.float()
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    fb = torch.from_numpy(mel_filters(n_mels)).to(audio.device)
    mel = fb @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    if floor_db is not None:
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - floor_db)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec[0] if squeeze else log_spec
