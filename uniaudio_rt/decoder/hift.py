"""HiFT vocoder: mel (22050 Hz, hop 256) -> waveform. Neural source filter + ISTFTNet (arXiv 2309.09493).

Training-parity module for the public ``hift.pt`` (CosyVoice / GLM-4-Voice): attribute names follow
its keys (``m_source.l_linear``, ``conv_pre``, ``ups.0``, ``source_downs.0``, ``resblocks.0.convs1.0``,
``conv_post``, ``f0_predictor.condnet.0``). Convolutions are plain: loader.prepare_state_dict folds the
checkpoint's weight norm into ``weight``.

    mel -> f0_predictor -> f0 (per frame) -> NSF sine source at 22050 Hz -> STFT (n_fft 16, hop 4)
    mel -> conv_pre -> [leaky ReLU, ConvTranspose upsample, + downsampled source, ResBlocks] x 2
        -> conv_post -> exp magnitude / sin phase -> iSTFT (ops.istft_ola) -> clamp(+-0.99)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .config import F0PredictorConfig, HiFTConfig


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ConvRNNF0Predictor(nn.Module):
    """Mel (B, 80, T) -> F0 in Hz (B, T): five Conv1d + ELU layers and a linear classifier."""

    def __init__(self, cfg: F0PredictorConfig):
        super().__init__()
        layers = []
        for i in range(5):
            layers += [nn.Conv1d(cfg.in_channels if i == 0 else cfg.cond_channels, cfg.cond_channels, 3, padding=1),
                       nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.cond_channels, cfg.num_class)

    def forward(self, mel: Tensor) -> Tensor:
        return torch.abs(self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1))


class Snake(nn.Module):
    """x + sin(alpha x)^2 / alpha, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


class ResBlock(nn.Module):
    """HiFi-GAN residual block with Snake activations: per dilation, snake -> dilated conv -> snake -> conv."""

    def __init__(self, channels: int, kernel_size: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList([nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                               padding=get_padding(kernel_size, d)) for d in dilations])
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel_size, 1, padding=get_padding(kernel_size))
                                     for _ in dilations])
        self.activations1 = nn.ModuleList([Snake(channels) for _ in dilations])
        self.activations2 = nn.ModuleList([Snake(channels) for _ in dilations])

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + c2(a2(c1(a1(x))))
        return x


@dataclass
class SourceState:
    """NSF source state of one stream: running phase (B, H+1) in cycles (float64) and the fixed random
    start phase of each harmonic (the fundamental's is 0)."""

    phase: Tensor
    phase_offset: Tensor

    @classmethod
    def initial(cls, batch: int, harmonics: int, generator: Optional[torch.Generator] = None,
                device=None) -> "SourceState":
        offset = (torch.rand(batch, harmonics, generator=generator, dtype=torch.float64) * 2 - 1) * np.pi
        offset[:, 0] = 0
        return cls(torch.zeros(batch, harmonics, dtype=torch.float64, device=device), offset.to(device))


class SourceModuleHnNSF(nn.Module):
    """Harmonic-plus-noise source: sines at f0 * (1..H+1), noise, merged by Linear + tanh (``l_linear``)."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        self.l_linear = nn.Linear(cfg.nb_harmonics + 1, 1)

    def forward(self, f0: Tensor, state: SourceState, generator: Optional[torch.Generator] = None,
                add_noise: bool = True, backend: str = "auto") -> tuple[Tensor, SourceState]:
        """f0 (B, F) Hz per mel frame -> source (B, 1, F * upsample_factor) and the next state."""
        c = self.cfg
        sine, uv, phase = ops.nsf_sine_source(f0, state.phase, state.phase_offset, c.sampling_rate,
                                              c.upsample_factor, c.nsf_alpha, c.nsf_voiced_threshold, backend=backend)
        if add_noise:  # voiced: N(0, sigma), unvoiced: N(0, alpha / 3)
            amp = uv * c.nsf_sigma + (1 - uv) * c.nsf_alpha / 3
            sine = sine + amp * torch.randn(sine.shape, generator=generator, device=sine.device)
        merged = torch.tanh(self.l_linear(sine.transpose(1, 2))).transpose(1, 2)
        return merged, SourceState(phase, state.phase_offset)


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        base, n_fft = cfg.base_channels, cfg.n_fft
        self.m_source = SourceModuleHnNSF(cfg)
        self.conv_pre = nn.Conv1d(cfg.in_channels, base, 7, 1, padding=3)
        self.ups = nn.ModuleList([nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u, padding=(k - u) // 2)
                                  for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        # the source spectrum (n_fft + 2 channels at the STFT rate) is downsampled to each upsampling stage
        down_rates = np.cumprod([1] + list(cfg.upsample_rates[::-1][:-1]))[::-1]
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(down_rates, cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            u = int(u)
            self.source_downs.append(nn.Conv1d(n_fft + 2, ch, 1, 1) if u == 1 else
                                     nn.Conv1d(n_fft + 2, ch, u * 2, u, padding=u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList([ResBlock(base // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                                        for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
        self.conv_post = nn.Conv1d(base // 2 ** len(self.ups), n_fft + 2, 7, 1, padding=3)
        self.f0_predictor = ConvRNNF0Predictor(cfg.f0_predictor)
        window = torch.from_numpy(np.hanning(n_fft + 1)[:-1].astype(np.float32))  # periodic Hann
        self.register_buffer("stft_window", window, persistent=False)

    def source(self, mel: Tensor, state: Optional[SourceState] = None, generator: Optional[torch.Generator] = None,
               add_noise: bool = True, backend: str = "auto") -> tuple[Tensor, SourceState]:
        if state is None:
            state = SourceState.initial(mel.shape[0], self.cfg.nb_harmonics + 1, generator, mel.device)
        return self.m_source(self.f0_predictor(mel), state, generator, add_noise, backend)

    def decode(self, mel: Tensor, source: Tensor) -> Tensor:
        """mel (B, 80, T) and source (B, 1, T * 256) -> conv_post output (B, n_fft + 2, T * 64 + 1)."""
        c = self.cfg
        spec = torch.stft(source.squeeze(1), c.n_fft, c.hop_len, c.n_fft, window=self.stft_window, return_complex=True)
        return self.decode_spec(mel, torch.cat([spec.real, spec.imag], dim=1))

    def decode_spec(self, mel: Tensor, s: Tensor) -> Tensor:
        """mel and the source's STFT (real and imaginary parts stacked) -> conv_post output."""
        c = self.cfg
        x = self.conv_pre(mel)
        n_k = len(c.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s))
            x = sum(self.resblocks[i * n_k + j](x) for j in range(n_k)) / n_k
        return self.conv_post(F.leaky_relu(x))  # default slope 0.01, as the public model

    def forward(self, mel: Tensor, cache_source: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                add_noise: bool = True, backend: str = "auto") -> tuple[Tensor, Tensor]:
        """mel (B, 80, T) -> (wav (B, T * 256), source (B, 1, T * 256)). ``cache_source`` replaces the start
        of the source (the official trick against glitches between chunks). Differentiable in the weights
        and the mel (the ops fall back to their PyTorch references under autograd)."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.in_channels:
            raise ValueError(f"mel must be (batch, {self.cfg.in_channels}, frames), got {tuple(mel.shape)}")
        s, _ = self.source(mel, generator=generator, add_noise=add_noise, backend=backend)
        if cache_source is not None and cache_source.shape[-1]:
            s = torch.cat([cache_source.to(s), s[:, :, cache_source.shape[-1]:]], dim=-1)
        x = self.decode(mel, s)
        tail = torch.zeros(x.shape[0], self.cfg.n_fft - self.cfg.hop_len, device=x.device)
        wav, _ = ops.istft_ola(x, self.stft_window, self.cfg.hop_len, tail, 0, True, backend=backend)
        return wav.clamp(-self.cfg.audio_limit, self.cfg.audio_limit), s

    @torch.inference_mode()
    def inference(self, mel: Tensor, cache_source: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                  add_noise: bool = True, backend: str = "auto") -> tuple[Tensor, Tensor]:
        """``forward`` without autograd (the native kernels run)."""
        return self.forward(mel, cache_source, generator, add_noise, backend)
