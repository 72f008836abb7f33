"""The decoder's acoustic features: 80-bin log-mel at 22050 Hz, hop 256 (CosyVoice / Matcha convention).

This is the mel that ``FlowDecoder`` predicts and ``HiFTGenerator`` consumes (``FlowConfig``:
``output_size`` 80, ``sample_rate`` 22050, ``hop_length`` 256; ``HiFTConfig.upsample_factor`` 256):

    wav (22050 Hz) -> reflect-pad (n_fft - hop) / 2 = 384 samples each side
        -> |STFT| (n_fft 1024, hop 256, periodic Hann window of 1024, not centred), sqrt(re^2 + im^2 + 1e-9)
        -> Slaney mel filter bank (80 bins, 0..8000 Hz, Slaney area normalisation)
        -> natural log of max(mel, 1e-5)

so a waveform of ``n`` samples gives exactly ``n // 256`` frames, and a frame ``j`` is centred on
sample ``256 j + 128``. The values are raw natural-log magnitudes (about -11.5 for silence to ~2),
not normalised: the public flow and HiFT checkpoints use them as they are.

Frame-count contract with the tokens (``fit_to_tokens``): ``n`` tokens at 25 Hz cover
``FlowConfig.mel_frames(n) = int(n / 25 * 22050 / 256)`` frames, which is what the flow generates;
a clip's 22.05 kHz waveform is cut or zero-padded at its end to ``mel_frames(n) * 256`` samples, so
its mel has exactly ``mel_frames(n)`` frames and the vocoder's output for that mel has the same
length as the (fitted) waveform. The tokenizer pads a clip with zeros to a whole token, so the
padding is silence on both sides of the contract.
"""

from __future__ import annotations

import functools
from math import gcd
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..mel import mel_filters

SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_MELS = 80
FMIN = 0.0
FMAX = 8000.0
LOG_FLOOR = 1e-5          # log(1e-5) = -11.51: the value of a silent bin
SILENCE = float(np.log(LOG_FLOOR))


@functools.lru_cache(maxsize=4)
def _basis(n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float) -> Tensor:
    return torch.from_numpy(mel_filters(n_mels, n_fft, sample_rate, fmin, fmax))


def mel_spectrogram(wav: Tensor, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                    hop_length: int = HOP_LENGTH, win_length: int = WIN_LENGTH, fmin: float = FMIN,
                    fmax: Optional[float] = FMAX) -> Tensor:
    """Log-mel of a 22050 Hz waveform: (samples,) -> (n_mels, samples // hop) or (B, samples) ->
    (B, n_mels, samples // hop). Differentiable (used as a training loss on vocoder output).

    Inputs shorter than the reflect padding (385 samples) are zero-padded at the end first and then
    cut back to ``samples // hop`` frames."""
    squeeze = wav.dim() == 1
    if squeeze:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"wav must be (samples,) or (batch, samples), got shape {tuple(wav.shape)}")
    n_frames = wav.shape[-1] // hop_length
    pad = (n_fft - hop_length) // 2
    x = wav.float()
    if x.shape[-1] <= pad:
        x = F.pad(x, (0, pad + 1 - x.shape[-1]))
    x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(win_length, device=x.device)
    spec = torch.stft(x, n_fft, hop_length, win_length, window=window, center=False, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    basis = _basis(n_mels, n_fft, sample_rate, float(fmin), float(fmax if fmax is not None else sample_rate / 2))
    mel = torch.log(torch.clamp(basis.to(x.device) @ mag, min=LOG_FLOOR))[..., :n_frames]
    return mel[0] if squeeze else mel


def n_frames(n_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Mel frames of a waveform of ``n_samples`` samples."""
    return n_samples // hop_length


def resample(x: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser window), float32; 16000 -> 22050 Hz is
    up 441, down 320. The output has ``ceil(len(x) * new_rate / orig_rate)`` samples."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (samples,), got shape {x.shape}")
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(new_rate))
    return resample_poly(x, new_rate // g, orig_rate // g).astype(np.float32)


def fit_to_tokens(wav: np.ndarray, n_tokens: int, flow_cfg) -> np.ndarray:
    """Cut or zero-pad a 22050 Hz waveform at its end to ``flow_cfg.mel_frames(n_tokens) * hop`` samples,
    so that its mel has exactly the frames the flow generates for ``n_tokens`` tokens (module docstring)."""
    if flow_cfg.sample_rate != SAMPLE_RATE or flow_cfg.hop_length != HOP_LENGTH:
        raise ValueError(f"the flow works at {flow_cfg.sample_rate} Hz / hop {flow_cfg.hop_length}; this mel is "
                         f"{SAMPLE_RATE} Hz / hop {HOP_LENGTH}")
    n = flow_cfg.mel_frames(n_tokens) * HOP_LENGTH
    wav = np.asarray(wav, dtype=np.float32)
    return wav[:n] if wav.size >= n else np.pad(wav, (0, n - wav.size))


def token_aligned(audio16: np.ndarray, n_tokens: int, flow_cfg) -> tuple[np.ndarray, Tensor]:
    """A 16 kHz clip and its token count -> (22050 Hz waveform fitted to the tokens, :func:`fit_to_tokens`,
    and its mel (80, ``flow_cfg.mel_frames(n_tokens)``)): the target the flow is trained on and
    measured against."""
    wav = fit_to_tokens(resample(audio16, 16000), n_tokens, flow_cfg)
    return wav, mel_spectrogram(torch.from_numpy(wav))
