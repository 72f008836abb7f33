"""Streaming decoder ops and their plain PyTorch twins.

Every op ``foo`` sits next to ``foo_ref`` (the definition); ``foo`` runs the native C++ kernel
(``uniaudio_rt._C``, OpenMP) for CPU float32 tensors when the extension is built, the CUDA kernel for
CUDA tensors when the extension was built with CUDA, and ``foo_ref`` otherwise (also whenever an input requires grad: the kernels have no backward, the
references are differentiable). Streaming state is
explicit: each op takes the state of the previous chunk and returns the next one, and running a
signal chunk by chunk gives the one-shot result.

* ``nsf_sine_source(f0, phase, phase_offset, ...)``: NSF harmonic sine source. f0 (B, F) per mel
  frame -> voiced sines (B, H+1, F*upsample) and uv (B, 1, F*upsample); the running phase (cycles,
  float64) is carried so chunks join without a click.
* ``istft_ola(x, window, hop, tail, frames_before, is_last)``: the HiFT head: magnitude = exp,
  phase = sin of the conv output, inverse real DFT per frame, synthesis window, overlap-add with the
  window-square normalisation of ``torch.istft(center=True)``; the overlap tail is the state.
* ``cfg_euler_step(x, v_cond, v_uncond, dt, cfg_rate)``: x + dt * ((1 + r) v_cond - r v_uncond).
* ``causal_conv1d_update(x, conv_state, weight, bias, dilation, groups, activation)``: a causal
  Conv1d over new samples given the last (K-1)*dilation input samples; returns the new state.
  ``auto`` keeps the reference (oneDNN) on the CPU for 16+ new samples of a dense conv, where a GEMM
  wins; the native kernel is for the streaming step (few samples) and depthwise convs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    from .. import _C  # type: ignore[attr-defined]
except ImportError:  # built without native ops
    _C = None

BACKENDS = ("auto", "native", "ref")


def native_available(device_type: str = "cpu") -> bool:
    if _C is None or not hasattr(_C, "nsf_sine_source"):
        return False
    if device_type == "cpu":
        return True
    return device_type == "cuda" and bool(getattr(_C, "with_cuda", False))


def _use_native(backend: str, *tensors: Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    dev = tensors[0].device.type
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    ok = native_available(dev) and all(t.dtype == torch.float32 for t in tensors) and not grad
    if backend == "native" and not ok:
        raise ValueError(f"backend='native' needs float32 tensors without autograd on a device the extension "
                         f"supports (extension built: {_C is not None}, device: {dev}, dtypes: "
                         f"{[t.dtype for t in tensors]}, requires grad: {grad})")
    return ok and backend != "ref"


# ----------------------------------------------------------------------------- NSF sine source
def nsf_sine_source_ref(f0: Tensor, phase: Tensor, phase_offset: Tensor, sampling_rate: float, upsample: int,
                        sine_amp: float = 0.1, voiced_threshold: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """f0 (B, F) Hz per frame, held for ``upsample`` samples. Harmonic h (0..H) of sample n has phase
    ``phase[b, h] + sum_{m <= n} f0[m] * (h + 1) / sampling_rate`` cycles (the official inclusive cumsum).

    Returns sine (B, H+1, F*upsample) = sine_amp * sin(2 pi cycles + phase_offset) * uv (float32),
    uv (B, 1, F*upsample) = f0 > voiced_threshold, and the new phase (B, H+1) float64 in [0, 1)."""
    _check_nsf(f0, phase, phase_offset, upsample)
    harmonics = torch.arange(1, phase.shape[1] + 1, device=f0.device, dtype=torch.float64)
    inc = f0.double()[:, None, :] * harmonics[None, :, None] / sampling_rate           # (B, H+1, F) cycles/sample
    start = phase.double()[:, :, None] + upsample * (torch.cumsum(inc, -1) - inc)       # phase before each frame
    k = torch.arange(1, upsample + 1, device=f0.device, dtype=torch.float64)
    cycles = start[..., None] + inc[..., None] * k                                      # (B, H+1, F, upsample)
    cycles = cycles - torch.floor(cycles)
    uv = (f0 > voiced_threshold).to(torch.float32)[:, None, :, None]
    sine = sine_amp * torch.sin(2 * math.pi * cycles + phase_offset.double()[:, :, None, None]).float() * uv
    b, h, n = inc.shape
    new_phase = phase.double() + upsample * inc.sum(-1)
    new_phase = new_phase - torch.floor(new_phase)
    uv = uv.expand(b, 1, n, upsample).reshape(b, 1, n * upsample)
    return sine.reshape(b, h, n * upsample), uv, new_phase


def _check_nsf(f0, phase, phase_offset, upsample):
    if f0.dim() != 2:
        raise ValueError(f"f0 must be (batch, frames), got shape {tuple(f0.shape)}")
    if phase.dim() != 2 or phase.shape[0] != f0.shape[0]:
        raise ValueError(f"phase must be (batch={f0.shape[0]}, harmonics), got shape {tuple(phase.shape)}")
    if phase_offset.shape != phase.shape:
        raise ValueError(f"phase_offset has shape {tuple(phase_offset.shape)}, phase has {tuple(phase.shape)}")
    if upsample < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample}")


def nsf_sine_source(f0: Tensor, phase: Tensor, phase_offset: Tensor, sampling_rate: float, upsample: int,
                    sine_amp: float = 0.1, voiced_threshold: float = 0.0, backend: str = "auto"):
    if not _use_native(backend, f0):
        return nsf_sine_source_ref(f0, phase, phase_offset, sampling_rate, upsample, sine_amp, voiced_threshold)
    _check_nsf(f0, phase, phase_offset, upsample)
    return tuple(_C.nsf_sine_source(f0.contiguous(), phase.double().contiguous(), phase_offset.double().contiguous(),
                                    float(sampling_rate), int(upsample), float(sine_amp), float(voiced_threshold)))


# ----------------------------------------------------------------------------- iSTFT + overlap-add
@dataclass
class IstftState:
    """Overlap-add state between chunks: the un-emitted numerator tail (B, n_fft - hop) and the frame count."""

    tail: Tensor
    frames: int = 0

    @classmethod
    def initial(cls, batch: int, n_fft: int, hop: int, device=None) -> "IstftState":
        return cls(torch.zeros(batch, n_fft - hop, device=device), 0)


def istft_emit_range(frames_before: int, n_frames: int, n_fft: int, hop: int, is_last: bool) -> tuple[int, int]:
    """Positions [start, end) of the padded overlap-add signal that a call emits. A position is final once
    no later frame covers it; ``center=True`` drops the first and last n_fft // 2 positions."""
    total = frames_before + n_frames
    start = max(frames_before * hop, n_fft // 2)
    end = (total - 1) * hop + n_fft // 2 if is_last else total * hop
    return start, max(start, end)


def istft_window_envelope(positions: Tensor, window: Tensor, hop: int, total_frames: int) -> Tensor:
    """Sum of window**2 over the frames f in [0, total_frames) that cover each position."""
    n_fft = window.shape[0]
    env = torch.zeros(positions.shape, dtype=window.dtype, device=window.device)
    w2 = window * window
    # the frames covering p are f = floor(p / hop) - j for j = 0, 1, ... while p - f * hop < n_fft
    f_hi = torch.div(positions, hop, rounding_mode="floor")
    for j in range((n_fft + hop - 1) // hop):
        f = f_hi - j
        off = positions - f * hop
        ok = (f >= 0) & (f < total_frames) & (off < n_fft)
        env = env + torch.where(ok, w2[off.clamp(max=n_fft - 1)], torch.zeros((), dtype=w2.dtype, device=w2.device))
    return env


def istft_ola_ref(x: Tensor, window: Tensor, hop: int, tail: Tensor, frames_before: int = 0,
                  is_last: bool = True) -> tuple[Tensor, Tensor]:
    """x (B, n_fft + 2, F): rows 0..n_fft/2 are log-magnitudes, the rest phase pre-activations
    (magnitude = min(exp(.), 100), phase = sin(.)), as HiFT's conv_post output.

    Returns (audio (B, end - start) for istft_emit_range, new tail (B, n_fft - hop)). With
    frames_before = 0, zero tail and is_last this equals ``torch.istft(..., center=True)``."""
    n_fft = window.shape[0]
    _check_istft(x, window, hop, tail)
    nb = n_fft // 2 + 1
    mag = torch.clamp(torch.exp(x[:, :nb].float()), max=1e2)
    ph = torch.sin(x[:, nb:].float())
    if x.shape[-1]:
        frames = torch.fft.irfft(torch.complex(mag * torch.cos(ph), mag * torch.sin(ph)).transpose(1, 2), n=n_fft)
        frames = frames * window                                                       # (B, F, n_fft)
    else:  # a flush call: no new frames, only the tail is emitted
        frames = torch.zeros(x.shape[0], 0, n_fft, device=x.device)
    b, n, _ = frames.shape
    length = n * hop + n_fft - hop
    buf = torch.zeros(b, length, dtype=frames.dtype, device=x.device)
    buf[:, : n_fft - hop] += tail
    for f in range(n):
        buf[:, f * hop: f * hop + n_fft] += frames[:, f]
    p0 = frames_before * hop
    start, end = istft_emit_range(frames_before, n, n_fft, hop, is_last)
    pos = torch.arange(start, end, device=x.device)
    env = istft_window_envelope(pos, window.float(), hop, frames_before + n)
    out = buf[:, start - p0: end - p0]
    out = torch.where(env > 1e-11, out / env.clamp(min=1e-11), torch.zeros_like(out))
    return out, buf[:, n * hop:].clone()


def _check_istft(x, window, hop, tail):
    n_fft = window.shape[0]
    if window.dim() != 1 or n_fft % 2 or not 0 < hop <= n_fft:
        raise ValueError(f"window must be 1-D of even length n_fft with 0 < hop <= n_fft, got n_fft={n_fft}, hop={hop}")
    if x.dim() != 3 or x.shape[1] != n_fft + 2:
        raise ValueError(f"x must be (batch, n_fft + 2 = {n_fft + 2}, frames), got shape {tuple(x.shape)}")
    if tail.shape != (x.shape[0], n_fft - hop):
        raise ValueError(f"tail must be (batch={x.shape[0]}, n_fft - hop = {n_fft - hop}), got {tuple(tail.shape)}")


def istft_ola(x: Tensor, window: Tensor, hop: int, tail: Tensor, frames_before: int = 0, is_last: bool = True,
              backend: str = "auto") -> tuple[Tensor, Tensor]:
    if backend == "auto" and window.shape[0] > 128:
        backend = "ref"  # the kernels keep one frame's bins on the stack (n_fft <= 128)
    if not _use_native(backend, x, window, tail):
        return istft_ola_ref(x, window, hop, tail, frames_before, is_last)
    _check_istft(x, window, hop, tail)
    out, new_tail = _C.istft_ola(x.contiguous(), window.contiguous(), int(hop), tail.contiguous(), int(frames_before),
                                 bool(is_last))
    return out, new_tail


# ----------------------------------------------------------------------------- CFG + Euler
def cfg_euler_step_ref(x: Tensor, v_cond: Tensor, v_uncond: Tensor, dt: float, cfg_rate: float) -> Tensor:
    return x + dt * ((1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond)


def cfg_euler_step(x: Tensor, v_cond: Tensor, v_uncond: Tensor, dt: float, cfg_rate: float,
                   backend: str = "auto") -> Tensor:
    if x.shape != v_cond.shape or x.shape != v_uncond.shape:
        raise ValueError(f"x {tuple(x.shape)}, v_cond {tuple(v_cond.shape)} and v_uncond {tuple(v_uncond.shape)} "
                         f"must have the same shape")
    if not _use_native(backend, x, v_cond, v_uncond):
        return cfg_euler_step_ref(x, v_cond, v_uncond, dt, cfg_rate)
    return _C.cfg_euler_step(x.contiguous(), v_cond.contiguous(), v_uncond.contiguous(), float(dt), float(cfg_rate))


# ----------------------------------------------------------------------------- causal conv1d update
ACTIVATIONS = ("none", "silu")


def causal_conv1d_update_ref(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                             dilation: int = 1, groups: int = 1, activation: str = "none") -> tuple[Tensor, Tensor]:
    """x (B, C_in, L) new samples, conv_state (B, C_in, (K-1)*dilation) previous input samples,
    weight (C_out, C_in / groups, K) -> (y (B, C_out, L), new conv_state)."""
    _check_conv(x, conv_state, weight, bias, dilation, groups, activation)
    full = torch.cat([conv_state.to(x.dtype), x], dim=-1)
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[0], weight.shape[0], 0), conv_state.clone()
    y = F.conv1d(full, weight, bias, dilation=dilation, groups=groups)
    if activation == "silu":
        y = F.silu(y)
    return y, full[:, :, full.shape[-1] - conv_state.shape[-1]:].clone()


def _check_conv(x, state, weight, bias, dilation, groups, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if x.dim() != 3 or weight.dim() != 3:
        raise ValueError(f"x must be (B, C, L) and weight (C_out, C_in/groups, K); got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)}")
    c_in, c_out, k = x.shape[1], weight.shape[0], weight.shape[2]
    if groups < 1 or c_in % groups or c_out % groups or weight.shape[1] * groups != c_in:
        raise ValueError(f"groups={groups} does not fit C_in={c_in}, C_out={c_out}, weight {tuple(weight.shape)}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if state.shape != (x.shape[0], c_in, (k - 1) * dilation):
        raise ValueError(f"conv_state must be (B={x.shape[0]}, C_in={c_in}, (K-1)*dilation={(k - 1) * dilation}), "
                         f"got {tuple(state.shape)}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                         dilation: int = 1, groups: int = 1, activation: str = "none",
                         backend: str = "auto") -> tuple[Tensor, Tensor]:
    tensors = [x, conv_state, weight] + ([bias] if bias is not None else [])
    if backend == "auto" and x.device.type == "cpu" and x.shape[-1] >= 16 and weight.shape[1] > 1:
        backend = "ref"  # many steps of a dense conv: oneDNN's GEMM beats the direct kernel (bench/)
    if not _use_native(backend, *tensors):
        return causal_conv1d_update_ref(x, conv_state, weight, bias, dilation, groups, activation)
    _check_conv(x, conv_state, weight, bias, dilation, groups, activation)
    b = bias.contiguous() if bias is not None else torch.empty(0, device=x.device)
    y, s = _C.causal_conv1d_update(x.contiguous(), conv_state.contiguous(), weight.contiguous(), b, int(dilation),
                                   int(groups), activation == "silu")
    return y, s
