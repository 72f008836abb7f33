"""Decoder (tokens -> wav) to ONNX with explicit streaming state, and an ONNX Runtime streaming runner.

``export_decoder(det_or_dir, out_dir)`` writes six graphs (dynamo exporter, weights embedded) and
``decoder.json``; ``OrtDetokenizer(out_dir).stream(chunks)`` drives them the way a C++ host would and
reproduces ``Detokenizer.stream()`` (same tokens, same random draws -> same audio to ~1e-4).

    flow_encoder.onnx     tokens (B, n) int64, k_cache, v_cache (L, B, H, C, d_k)
                          -> h (B, n, D), k_out, v_out (L, B, H, C + n, d_k); C a multiple of the block size
    flow_condition.onnx   h (B, W, D) window, cond (B, 80, F) prompt mel padded with zeros, embedding (B, E)
                          -> mu (B, 80, F), spks (B, 80)
    flow_estimator.onnx   x, mu, cond (B, 80, F), spks (B, 80), t (1,), dt (1,) -> x_next (B, 80, F)
                          (one Euler step, classifier-free guidance batch and combine inside)
    hift_f0.onnx          mel (B, 80, W) -> f0 (B, W)
    hift_source.onnx      f0 (B, F), phase, phase_offset (B, H+1) float64, noise (B, H+1, F*up)
                          -> source (B, 1, F*up), phase_out (B, H+1) float64
    hift_decode.onnx      mel (B, 80, W), source (B, 1, W*up) -> frames (B, W*up/hop + 1, n_fft)
                          (windowed inverse-DFT frames; the host overlap-adds them)

What the host does around the graphs (all cheap, shape bookkeeping and adds): keep pending tokens of
an incomplete block, trim the key/value caches to ``encoder_left_blocks`` blocks, keep the prompt
window (h and generated mel), draw the noises, loop the Euler steps over ``t_span``, pick the vocoder
window and the settled frames, and overlap-add the iSTFT frames with the window-square normalisation
(``overlap_add`` below, the numpy twin of ops.istft_ola_ref).

``export_decoder_torchscript(det_or_dir, out_dir)`` writes the same six step modules as traced TorchScript
(``<graph>.pt``) with the same ``decoder.json`` (format ``uniaudio-rt-torchscript-decoder/1``) for libtorch
hosts; ``TorchScriptDetokenizer(out_dir)`` is the host loop above over them. The C++ hosts in export/cpp/
(detokenize_torchscript.cpp, detokenize_onnxruntime.cpp) re-implement this loop; ``SplitMixRandom`` is the
random stream they reproduce without numpy or torch.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detokenizer import Detokenizer, StreamConfig
from .flow import FlowDecoder, t_schedule, timestep_embedding
from .hift import HiFTGenerator

SIDECAR = "decoder.json"
FORMAT = "uniaudio-rt-onnx-decoder/1"
GRAPHS = {
    "flow_encoder": (["tokens", "k_cache", "v_cache"], ["h", "k_out", "v_out"]),
    "flow_condition": (["h", "cond", "embedding"], ["mu", "spks"]),
    "flow_estimator": (["x", "mu", "cond", "spks", "t", "dt"], ["x_next"]),
    "hift_f0": (["mel"], ["f0"]),
    "hift_source": (["f0", "phase", "phase_offset", "noise"], ["source", "phase_out"]),
    "hift_decode": (["mel", "source"], ["frames"]),
}


# ----------------------------------------------------------------------------- graph modules
class FlowEncoderStep(nn.Module):
    """Token chunk + stacked per-layer key/value caches -> encoder outputs + the grown caches."""

    def __init__(self, flow: FlowDecoder):
        super().__init__()
        self.flow = flow

    def forward(self, tokens: Tensor, k_cache: Tensor, v_cache: Tensor):
        flow = self.flow
        caches = [(k_cache[i], v_cache[i]) for i in range(k_cache.shape[0])]
        h, kv = flow.encoder(flow.input_embedding(tokens.clamp(min=0)), offset=k_cache.shape[3], kv_caches=caches)
        return h, torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class FlowCondition(nn.Module):
    """Encoder outputs of the window -> mu at mel rate (length = cond's), and the speaker projection."""

    def __init__(self, flow: FlowDecoder):
        super().__init__()
        self.flow = flow

    def forward(self, h: Tensor, cond: Tensor, embedding: Tensor):
        flow = self.flow
        x = flow.encoder_proj(h).transpose(1, 2)                                  # (B, C, W)
        # nearest upsampling to cond's length with PyTorch's index rule, floor(i * float32(W / F)) (ONNX
        # Resize rounds differently for some W/F and would shift frames)
        n_in, n_out = torch.ones_like(x[0, 0]).sum(), torch.ones_like(cond[0, 0]).sum()  # exact float32 counts
        src = torch.floor(torch.arange(cond.shape[-1], device=x.device, dtype=torch.float32) * (n_in / n_out))
        x = x.index_select(2, src.long().clamp(max=x.shape[-1] - 1))
        mu = flow.length_regulator.model(x)
        spks = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
        return mu, spks


class FlowEstimatorStep(nn.Module):
    """One Euler step of ConditionalCFM: conditional and unconditional velocity in one 2B batch, then
    x + dt ((1 + r) v_cond - r v_uncond). The U-Net is ConditionalDecoder.forward with the skip crop as
    a gather (one graph for odd and even frame counts)."""

    def __init__(self, flow: FlowDecoder):
        super().__init__()
        self.estimator = flow.decoder.estimator
        self.rate = float(flow.cfg.cfm.inference_cfg_rate)

    def velocity(self, x: Tensor, mu: Tensor, t: Tensor, spks: Tensor, cond: Tensor) -> Tensor:
        est = self.estimator
        t = est.time_mlp(timestep_embedding(t, est.cfg.in_channels))
        x = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.shape[-1]), cond], dim=1)
        return est.unet(x, t)

    def forward(self, x: Tensor, mu: Tensor, cond: Tensor, spks: Tensor, t: Tensor, dt: Tensor):
        if self.rate > 0:
            z = torch.zeros_like
            v = self.velocity(torch.cat([x, x]), torch.cat([mu, z(mu)]), t, torch.cat([spks, z(spks)]),
                              torch.cat([cond, z(cond)]))
            b = x.shape[0]
            v_cond, v_uncond = v[:b], v[b:]
            return x + dt * ((1.0 + self.rate) * v_cond - self.rate * v_uncond)
        return x + dt * self.velocity(x, mu, t, spks, cond)


class HiFTF0(nn.Module):
    def __init__(self, hift: HiFTGenerator):
        super().__init__()
        self.f0_predictor = hift.f0_predictor

    def forward(self, mel: Tensor):
        return self.f0_predictor(mel)


class HiFTSource(nn.Module):
    """NSF source with explicit phase state and noise (ops.nsf_sine_source_ref + noise + l_linear + tanh)."""

    def __init__(self, hift: HiFTGenerator):
        super().__init__()
        self.cfg, self.l_linear = hift.cfg, hift.m_source.l_linear

    def forward(self, f0: Tensor, phase: Tensor, phase_offset: Tensor, noise: Tensor):
        c = self.cfg
        up = c.upsample_factor
        harmonics = torch.arange(1, phase.shape[1] + 1, device=f0.device, dtype=torch.float64)
        inc = f0.double()[:, None, :] * harmonics[None, :, None] / c.sampling_rate
        start = phase[:, :, None] + up * (torch.cumsum(inc, -1) - inc)
        k = torch.arange(1, up + 1, device=f0.device, dtype=torch.float64)
        cycles = start[..., None] + inc[..., None] * k
        cycles = cycles - torch.floor(cycles)
        uv = (f0 > c.nsf_voiced_threshold).to(torch.float32)[:, None, :, None]
        sine = c.nsf_alpha * torch.sin(2 * math.pi * cycles + phase_offset[:, :, None, None]).float() * uv
        b, h, n = inc.shape
        new_phase = phase + up * inc.sum(-1)
        new_phase = new_phase - torch.floor(new_phase)
        uv = uv.expand(b, 1, n, up).reshape(b, 1, n * up)
        sine = sine.reshape(b, h, n * up)
        sine = sine + (uv * c.nsf_sigma + (1 - uv) * c.nsf_alpha / 3) * noise
        return torch.tanh(self.l_linear(sine.transpose(1, 2))).transpose(1, 2), new_phase


class HiFTDecode(nn.Module):
    """HiFTGenerator.decode with the STFT and the inverse DFT as convolutions/matmuls by fixed bases,
    then the synthesis window: mel + source -> windowed time frames (B, frames, n_fft)."""

    def __init__(self, hift: HiFTGenerator):
        super().__init__()
        self.hift = hift
        c = hift.cfg
        n, nb = c.n_fft, c.n_fft // 2 + 1
        w = hift.stft_window.double()
        kn = torch.arange(nb, dtype=torch.float64)[:, None] * torch.arange(n, dtype=torch.float64)[None] * 2 * math.pi / n
        self.register_buffer("stft_basis", torch.cat([w * kn.cos(), -w * kn.sin()])[:, None].float(), persistent=False)
        scale = torch.full((nb, 1), 2.0, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0                    # irfft: DC and Nyquist once, their imaginary parts ignored
        self.register_buffer("icos", (scale * kn.cos() * w / n).float(), persistent=False)
        sin_part = -scale * kn.sin() * w / n
        sin_part[0] = sin_part[-1] = 0.0
        self.register_buffer("isin", sin_part.float(), persistent=False)

    def forward(self, mel: Tensor, source: Tensor):
        hift, c = self.hift, self.hift.cfg
        s = F.conv1d(F.pad(source, (c.n_fft // 2, c.n_fft // 2), mode="reflect"), self.stft_basis, stride=c.hop_len)
        x = hift.decode_spec(mel, s)
        nb = c.n_fft // 2 + 1
        mag = torch.clamp(torch.exp(x[:, :nb]), max=1e2)
        ph = torch.sin(x[:, nb:])
        re, im = (mag * torch.cos(ph)).transpose(1, 2), (mag * torch.sin(ph)).transpose(1, 2)
        return re @ self.icos + im @ self.isin


# ----------------------------------------------------------------------------- export
def _as_detokenizer(det_or_dir: Union[Detokenizer, str]) -> Detokenizer:
    if isinstance(det_or_dir, Detokenizer):
        return det_or_dir
    if isinstance(det_or_dir, (str, os.PathLike)):
        return Detokenizer.from_pretrained(str(det_or_dir))
    raise TypeError(f"det_or_dir must be a Detokenizer or a decoder directory, got {type(det_or_dir).__name__}")


def _export(module: nn.Module, args: tuple, path: str, name: str, dynamic_shapes, opset: int) -> None:
    inputs, outputs = GRAPHS[name]
    with torch.no_grad():
        torch.onnx.export(module.eval(), args, path, dynamo=True, opset_version=opset, external_data=False,
                          dynamic_shapes=dynamic_shapes, input_names=inputs, output_names=outputs)
    # the exporter falls back to a shape-specialised graph when torch.export cannot keep an axis dynamic:
    # refuse such a graph instead of shipping one that only runs at the example's sizes
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    for inp, axes in zip(graph.input, dynamic_shapes):
        dims = inp.type.tensor_type.shape.dim
        fixed = [a for a in (axes or {}) if not dims[a].dim_param]
        if fixed:
            raise RuntimeError(f"{name}.onnx: axes {fixed} of input {inp.name!r} came out fixed "
                               f"({[d.dim_value for d in dims]}); the export specialised a dynamic axis")


def _write_sidecar(det: Detokenizer, out_dir: str, fmt: str, ext: str, **extra) -> None:
    """``decoder.json``: what a host needs besides the graphs (sizes, Euler times, window, stream sizes, state)."""
    flow, hift = det.flow, det.hift
    fc, hc, sc = flow.cfg, hift.cfg, det.stream_config
    ec = fc.encoder
    up, h1 = hc.upsample_factor, hc.nb_harmonics + 1
    t_span = t_schedule(fc.cfm.n_timesteps, fc.cfm.t_scheduler).tolist()
    sidecar = {
        "format": fmt, **extra,
        "sample_rate": hc.sampling_rate, "token_rate": fc.input_frame_rate, "mel_bins": fc.output_size,
        "hop_length": fc.hop_length, "mel_sample_rate": fc.sample_rate, "vocab_size": fc.vocab_size,
        "spk_embed_dim": fc.spk_embed_dim,
        "encoder": {"layers": ec.num_blocks, "heads": ec.attention_heads,
                    "head_dim": ec.output_size // ec.attention_heads, "block_size": ec.block_size or 1,
                    "output_size": ec.output_size},
        "flow": {"n_timesteps": fc.cfm.n_timesteps, "t_scheduler": fc.cfm.t_scheduler, "t_span": t_span,
                 "cfg_rate": float(fc.cfm.inference_cfg_rate), "temperature": 1.0},
        "hift": {"upsample_factor": up, "n_fft": hc.n_fft, "hop": hc.hop_len, "harmonics": h1,
                 "audio_limit": hc.audio_limit, "window": hift.stft_window.tolist()},
        "stream": {"prompt_tokens": sc.prompt_tokens, "encoder_left_blocks": sc.encoder_left_blocks,
                   "hift_left": sc.hift_left, "hift_lookahead": sc.hift_lookahead},
        "graphs": {name: {"file": name + ext, "inputs": ins, "outputs": outs} for name, (ins, outs) in GRAPHS.items()},
        "state": {
            "k_cache": ["layers", "batch", "heads", "cache_len (multiple of block_size, <= encoder_left_blocks * "
                        "block_size after the host trims)", "head_dim"],
            "v_cache": "as k_cache",
            "h_window": ["batch", "window_tokens (<= prompt_tokens + chunk)", "encoder.output_size"],
            "mel_window": ["batch", "mel_bins", "mel frames of the window tokens"],
            "phase": ["batch", "harmonics"], "phase_offset": ["batch", "harmonics (first = 0, rest uniform in "
                                                             "[-pi, pi), drawn once per stream)"],
            "istft_tail": ["batch", "n_fft - hop"],
        },
    }
    with open(os.path.join(out_dir, SIDECAR), "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1)


def export_decoder(det_or_dir: Union[Detokenizer, str], out_dir: str, opset: int = 18) -> str:
    """Write the six decoder graphs + decoder.json into ``out_dir``; returns out_dir."""
    if opset < 18:
        raise ValueError(f"opset must be >= 18 for the dynamo exporter, got {opset}")
    det = _as_detokenizer(det_or_dir)
    flow, hift = det.flow.eval(), det.hift.eval()
    fc, hc = flow.cfg, hift.cfg
    ec = fc.encoder
    block = ec.block_size or 1
    n_layers, heads, d_k = ec.num_blocks, ec.attention_heads, ec.output_size // ec.attention_heads
    os.makedirs(out_dir, exist_ok=True)
    Dim = torch.export.Dim
    batch = Dim("batch", min=1, max=64)
    b = 3  # not 2: a batch equal to a model size (heads, the CFG doubling) would be specialised
    m = fc.output_size
    path = lambda name: os.path.join(out_dir, name + ".onnx")  # noqa: E731

    # flow encoder: tokens of any count; the cache a whole number of blocks (0 allowed)
    n_tok = Dim("tokens", min=1, max=4096)
    cache = block * Dim("cache_blocks", min=0, max=1024) if block > 1 else Dim("cache", min=0, max=4096)
    kv = torch.randn(n_layers, b, heads, 2 * block, d_k)
    _export(FlowEncoderStep(flow), (torch.randint(0, fc.vocab_size, (b, 3 * block + 1)), kv, kv.clone()),
            path("flow_encoder"), "flow_encoder",
            ({0: batch, 1: n_tok}, {1: batch, 3: cache}, {1: batch, 3: cache}), opset)
    window = Dim("window", min=1, max=8192)
    frames = Dim("frames", min=1, max=16384)
    _export(FlowCondition(flow), (torch.randn(b, 7, ec.output_size), torch.randn(b, m, 15), torch.randn(b, fc.spk_embed_dim)),
            path("flow_condition"), "flow_condition", ({0: batch, 1: window}, {0: batch, 2: frames}, {0: batch}), opset)
    x = torch.randn(b, m, 15)
    _export(FlowEstimatorStep(flow), (x, x.clone(), x.clone(), torch.randn(b, m), torch.tensor([0.3]), torch.tensor([0.2])),
            path("flow_estimator"), "flow_estimator",
            # DYNAMIC, not a named Dim: the U-Net's stride-2 stages leave guards (odd/even lengths) the
            # constraint solver cannot prove; the graph itself is generic (the tests run odd and even lengths)
            ({0: batch, 2: Dim.DYNAMIC}, {0: batch, 2: Dim.DYNAMIC}, {0: batch, 2: Dim.DYNAMIC}, {0: batch}, None, None),
            opset)
    up, h1 = hc.upsample_factor, hc.nb_harmonics + 1
    mel_frames = Dim("mel_frames", min=2, max=16384)
    _export(HiFTF0(hift), (torch.randn(b, hc.in_channels, 9),), path("hift_f0"), "hift_f0", ({0: batch, 2: mel_frames},),
            opset)
    src_frames = Dim("source_frames", min=1, max=16384)
    _export(HiFTSource(hift), (torch.rand(b, 9) * 300, torch.rand(b, h1, dtype=torch.float64),
                               torch.rand(b, h1, dtype=torch.float64), torch.randn(b, h1, 9 * up)),
            path("hift_source"), "hift_source",
            ({0: batch, 1: src_frames}, {0: batch}, {0: batch}, {0: batch, 2: up * src_frames}), opset)
    _export(HiFTDecode(hift), (torch.randn(b, hc.in_channels, 9), torch.randn(b, 1, 9 * up)), path("hift_decode"),
            "hift_decode", ({0: batch, 2: mel_frames}, {0: batch, 2: up * mel_frames}), opset)

    _write_sidecar(det, out_dir, FORMAT, ".onnx", opset=opset)
    return out_dir


# ----------------------------------------------------------------------------- TorchScript export
TS_FORMAT = "uniaudio-rt-torchscript-decoder/1"


def _step_modules(det: Detokenizer) -> dict:
    flow, hift = det.flow.eval(), det.hift.eval()
    modules = {"flow_encoder": FlowEncoderStep(flow), "flow_condition": FlowCondition(flow),
               "flow_estimator": FlowEstimatorStep(flow), "hift_f0": HiFTF0(hift), "hift_source": HiFTSource(hift),
               "hift_decode": HiFTDecode(hift)}
    return {name: m.eval() for name, m in modules.items()}


def _step_inputs(det: Detokenizer, batch: int, tokens: int, cache_blocks: int, frames: int, seed: int) -> dict:
    """Example inputs of the six step modules: ``batch`` rows, a chunk of ``tokens`` tokens after a cache of
    ``cache_blocks`` encoder blocks, ``frames`` mel frames."""
    fc, hc = det.flow.cfg, det.hift.cfg
    ec = fc.encoder
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    heads, cache = ec.attention_heads, cache_blocks * (ec.block_size or 1)
    kv = (ec.num_blocks, batch, heads, cache, ec.output_size // heads)
    m, up, h1 = fc.output_size, hc.upsample_factor, hc.nb_harmonics + 1
    return {"flow_encoder": (torch.randint(0, fc.vocab_size, (batch, tokens), generator=g), randn(*kv), randn(*kv)),
            "flow_condition": (randn(batch, tokens, ec.output_size), randn(batch, m, frames),
                               randn(batch, fc.spk_embed_dim)),
            "flow_estimator": (randn(batch, m, frames), randn(batch, m, frames), randn(batch, m, frames),
                               randn(batch, m), torch.tensor([0.3]), torch.tensor([0.2])),
            "hift_f0": (randn(batch, hc.in_channels, frames),),
            "hift_source": (torch.rand(batch, frames, generator=g) * 400 - 50, rand(batch, h1), rand(batch, h1),
                            randn(batch, h1, frames * up)),
            "hift_decode": (randn(batch, hc.in_channels, frames), randn(batch, 1, frames * up))}


def export_decoder_torchscript(det_or_dir: Union[Detokenizer, str], out_dir: str) -> str:
    """Write the six step modules as traced TorchScript (``<graph>.pt``, same names, inputs and outputs as the
    ONNX graphs) + decoder.json into ``out_dir``, for C++ hosts linked against libtorch
    (export/cpp/detokenize_torchscript.cpp); returns out_dir.

    Tracing records one path through each module; the shapes it reads stay symbolic. Each traced module is
    frozen (weights become constants: a file keeps only the weights its module uses, 503 MB in all at the
    public sizes instead of 1.3 GB with the flow saved three times; numerics untouched), then run again at
    other sizes (another batch, an empty cache, an odd frame count) and refused if it differs from the eager
    module there."""
    import warnings

    det = _as_detokenizer(det_or_dir)
    block = det.flow.cfg.encoder.block_size or 1
    modules = _step_modules(det)
    trace_at = _step_inputs(det, batch=2, tokens=3 * block + 1, cache_blocks=2, frames=24, seed=0)
    check_at = _step_inputs(det, batch=1, tokens=block + 1, cache_blocks=0, frames=13, seed=1)
    os.makedirs(out_dir, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings (shape checks that always pass), trace's deprecation
        for name, module in modules.items():
            traced = torch.jit.trace(module, trace_at[name], check_trace=False)
            traced = torch.jit.freeze(traced, optimize_numerics=False)
            want = module(*check_at[name])
            try:
                got = traced(*check_at[name])
            except RuntimeError as e:
                raise RuntimeError(f"{name}.pt: the traced module fails away from the traced sizes: {e}") from e
            for w, t in zip(*(o if isinstance(o, tuple) else (o,) for o in (want, got))):
                if w.shape != t.shape or not torch.allclose(t, w, rtol=1e-4, atol=1e-5):
                    raise RuntimeError(f"{name}.pt: the traced module gives {tuple(t.shape)} where the eager one gives "
                                       f"{tuple(w.shape)} (or other values) away from the traced sizes")
            torch.jit.save(traced, os.path.join(out_dir, name + ".pt"))
    _write_sidecar(det, out_dir, TS_FORMAT, ".pt")
    return out_dir


# ----------------------------------------------------------------------------- ONNX Runtime streaming runner
class NumpyRandom:
    """The stream's random draws (flow noise x_0, NSF start phases and noise) from a numpy Generator."""

    def __init__(self, seed: Optional[int] = None):
        self.rng = np.random.default_rng(seed)

    def uniform(self, shape) -> np.ndarray:          # float64 in [0, 1)
        return self.rng.random(shape)

    def normal(self, shape) -> np.ndarray:           # float32 N(0, 1)
        return self.rng.standard_normal(shape, dtype=np.float32)


class TorchRandom:
    """The same draws from a torch.Generator, in Detokenizer.stream()'s order (to compare with PyTorch)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def uniform(self, shape) -> np.ndarray:
        return torch.rand(shape, generator=self.generator, dtype=torch.float64).numpy()

    def normal(self, shape) -> np.ndarray:
        return torch.randn(shape, generator=self.generator).numpy()


class SplitMixRandom:
    """Draws that a host without numpy or torch reproduces (export/cpp/decoder_stream.h, same name): word k
    (k = 1, 2, ...) of a stream is splitmix64 of seed + k * 0x9E3779B97F4A7C15; a uniform is its top 53 bits
    / 2^53, a normal is Box-Muller on two consecutive uniforms, sqrt(-2 ln(1 - u1)) cos(2 pi u2), in float64
    and then rounded to float32. Drawing (a, b) then (c,) is the same as drawing a + b + c values in a row."""

    _GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

    def __init__(self, seed: int = 0):
        self.seed, self.count = np.uint64(seed % 2 ** 64), 0

    def _words(self, n: int) -> np.ndarray:
        k = np.arange(self.count + 1, self.count + n + 1, dtype=np.uint64)
        self.count += n
        z = self.seed + k * self._GOLDEN                            # uint64 arrays wrap around silently
        z = (z ^ (z >> np.uint64(30))) * self._M1
        z = (z ^ (z >> np.uint64(27))) * self._M2
        return z ^ (z >> np.uint64(31))

    def uniform(self, shape) -> np.ndarray:          # float64 in [0, 1)
        n = int(np.prod(shape))
        return ((self._words(n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape)

    def normal(self, shape) -> np.ndarray:           # float32 N(0, 1)
        u = self.uniform((int(np.prod(shape)), 2))
        z = np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])
        return z.astype(np.float32).reshape(shape)


def overlap_add(frames: np.ndarray, window: np.ndarray, hop: int, tail: np.ndarray, frames_before: int,
                is_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Windowed iSTFT frames (B, F, n_fft) -> (audio, new tail): ops.istft_ola_ref after its inverse DFT."""
    n_fft = window.shape[0]
    b, n, _ = frames.shape
    buf = np.zeros((b, n * hop + n_fft - hop), np.float32)
    buf[:, : n_fft - hop] += tail
    for f in range(n):
        buf[:, f * hop: f * hop + n_fft] += frames[:, f]
    total = frames_before + n
    start = max(frames_before * hop, n_fft // 2)
    end = max(start, (total - 1) * hop + n_fft // 2 if is_last else total * hop)
    pos = np.arange(start, end)
    env = np.zeros(pos.shape, np.float32)
    w2 = (window * window).astype(np.float32)
    f_hi = pos // hop
    for j in range((n_fft + hop - 1) // hop):
        f = f_hi - j
        off = pos - f * hop
        ok = (f >= 0) & (f < total) & (off < n_fft)
        env = env + np.where(ok, w2[np.minimum(off, n_fft - 1)], np.float32(0))
    p0 = frames_before * hop
    out = buf[:, start - p0: end - p0]
    out = np.where(env > 1e-11, out / np.maximum(env, 1e-11), np.float32(0)).astype(np.float32)
    return out, buf[:, n * hop:].copy()


class OrtDetokenizer:
    """Token chunks -> wav chunks with the exported graphs in ONNX Runtime; all state is numpy arrays held
    here, as a C++ host would hold them (see docs/DECODER.md, "ONNX export")."""

    format, export_command = FORMAT, "onnx-decoder"

    def __init__(self, onnx_dir: str, num_threads: Optional[int] = None, stream_config: Optional[StreamConfig] = None):
        """``stream_config`` overrides the sidecar's ``stream`` sizes (they are host-side choices, not in the graphs)."""
        import onnxruntime as ort

        self._read_sidecar(onnx_dir, stream_config)
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads
        self.sessions = {name: ort.InferenceSession(os.path.join(onnx_dir, g["file"]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for name, g in self.sidecar["graphs"].items()}

    def _read_sidecar(self, model_dir: str, stream_config: Optional[StreamConfig]) -> None:
        path = os.path.join(model_dir, SIDECAR)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: export with `uniaudio-rt export {self.export_command}` first")
        with open(path, encoding="utf-8") as f:
            self.sidecar = json.load(f)
        if self.sidecar.get("format") != self.format:
            raise ValueError(f"{path} has format {self.sidecar.get('format')!r}, expected {self.format!r}")
        s = self.sidecar
        if stream_config is not None:
            s["stream"] = {k: getattr(stream_config, k) for k in s["stream"]}
        self.sample_rate = s["sample_rate"]
        self.window = np.asarray(s["hift"]["window"], np.float32)
        self.t_span = np.asarray(s["flow"]["t_span"], np.float32)

    def run(self, name: str, **inputs) -> list:
        return self.sessions[name].run(None, inputs)

    def mel_frames(self, n_tokens: int) -> int:
        s = self.sidecar
        return int(n_tokens / s["token_rate"] * s["mel_sample_rate"] / s["hop_length"])

    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens.numpy() if isinstance(tokens, Tensor) else tokens)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"token chunks must be integer (T,) or (batch, T), got {tokens.dtype} {tokens.shape}")
        if tokens.size and (tokens.max() >= self.sidecar["vocab_size"] or tokens.min() < 0):
            raise ValueError(f"token ids must be in [0, {self.sidecar['vocab_size']}), got "
                             f"[{tokens.min()}, {tokens.max()}]")
        return tokens.astype(np.int64)

    # ------------------------------------------------------------------------- flow
    def flow_state(self, batch: int) -> dict:
        e = self.sidecar["encoder"]
        kv = np.zeros((e["layers"], batch, e["heads"], 0, e["head_dim"]), np.float32)
        return {"pending": np.zeros((batch, 0), np.int64), "n_tokens": 0, "window_start": 0,
                "h": np.zeros((batch, 0, e["output_size"]), np.float32),
                "mel": np.zeros((batch, self.sidecar["mel_bins"], 0), np.float32), "k": kv, "v": kv.copy()}

    def flow_step(self, st: dict, tokens: np.ndarray, embedding: np.ndarray, rng, final: bool = False):
        s = self.sidecar
        block = s["encoder"]["block_size"]
        tokens = np.concatenate([st["pending"], tokens], axis=1)
        n_ready = tokens.shape[1] if final else tokens.shape[1] // block * block
        b = tokens.shape[0]
        if n_ready == 0:
            return np.zeros((b, s["mel_bins"], 0), np.float32), {**st, "pending": tokens}
        h_new, k, v = self.run("flow_encoder", tokens=tokens[:, :n_ready], k_cache=st["k"], v_cache=st["v"])
        keep = s["stream"]["encoder_left_blocks"] * block
        k, v = k[:, :, :, max(0, k.shape[3] - keep):], v[:, :, :, max(0, v.shape[3] - keep):]
        h = np.concatenate([st["h"], h_new], axis=1)
        n_tokens = st["n_tokens"] + n_ready
        n_prompt = st["mel"].shape[-1]
        n_new = self.mel_frames(n_tokens) - self.mel_frames(st["n_tokens"])
        cond = np.concatenate([st["mel"], np.zeros((b, s["mel_bins"], n_new), np.float32)], axis=-1)
        mu, spks = self.run("flow_condition", h=h, cond=cond, embedding=embedding)
        x = rng.normal(mu.shape) * np.float32(s["flow"]["temperature"])
        for i in range(1, len(self.t_span)):
            t, dt = self.t_span[i - 1:i], self.t_span[i:i + 1] - self.t_span[i - 1:i]
            x, = self.run("flow_estimator", x=x, mu=mu, cond=cond, spks=spks, t=t, dt=dt)
        mel = x[:, :, n_prompt:]
        start = max(st["window_start"], n_tokens - s["stream"]["prompt_tokens"])
        drop = self.mel_frames(start) - self.mel_frames(st["window_start"])
        new = {"pending": tokens[:, n_ready:], "n_tokens": n_tokens, "window_start": start,
               "h": h[:, start - st["window_start"]:], "mel": np.concatenate([st["mel"], mel], -1)[:, :, drop:],
               "k": k, "v": v}
        return mel, new

    # ------------------------------------------------------------------------- vocoder
    def vocoder_state(self, batch: int, rng) -> dict:
        hs = self.sidecar["hift"]
        offset = (rng.uniform((batch, hs["harmonics"])) * 2 - 1) * np.pi
        offset[:, 0] = 0
        return {"mel": np.zeros((batch, self.sidecar["mel_bins"], 0), np.float32), "ctx_start": 0, "emitted": 0,
                "source": np.zeros((batch, 1, 0), np.float32), "phase": np.zeros((batch, hs["harmonics"])),
                "phase_offset": offset, "tail": np.zeros((batch, hs["n_fft"] - hs["hop"]), np.float32), "frames": 0}

    def _source(self, f0: np.ndarray, phase: np.ndarray, offset: np.ndarray, rng):
        hs = self.sidecar["hift"]
        b, n = f0.shape
        noise = rng.normal((b, hs["harmonics"], n * hs["upsample_factor"]))
        if n == 0:
            return np.zeros((b, 1, 0), np.float32), phase
        return self.run("hift_source", f0=np.ascontiguousarray(f0), phase=phase, phase_offset=offset, noise=noise)

    def vocoder_step(self, st: dict, mel: np.ndarray, rng, final: bool = False):
        hs, sc = self.sidecar["hift"], self.sidecar["stream"]
        up, per_frame = hs["upsample_factor"], hs["upsample_factor"] // hs["hop"]
        mel_all = np.concatenate([st["mel"], mel], axis=-1)
        total = st["ctx_start"] + mel_all.shape[-1]
        settled = total if final else max(st["emitted"], total - sc["hift_lookahead"])
        b = mel_all.shape[0]
        if total == 0 or (settled == st["emitted"] and not final):
            return np.zeros((b, 0), np.float32), {**st, "mel": mel_all}
        w0 = max(st["ctx_start"], st["emitted"] - sc["hift_left"])
        window = np.ascontiguousarray(mel_all[:, :, w0 - st["ctx_start"]:])
        f0, = self.run("hift_f0", mel=window)
        e, s = st["emitted"] - w0, settled - w0
        src_new, phase = self._source(f0[:, e:s], st["phase"], st["phase_offset"], rng)
        src_right, _ = self._source(f0[:, s:], phase, st["phase_offset"], rng)
        src_left = st["source"][:, :, (w0 - st["ctx_start"]) * up:]
        frames, = self.run("hift_decode", mel=window, source=np.concatenate([src_left, src_new, src_right], -1))
        k0, k1 = e * per_frame, s * per_frame + (1 if final else 0)
        audio, tail = overlap_add(frames[:, k0:k1], self.window, hs["hop"], st["tail"], st["frames"], final)
        ctx = max(st["ctx_start"], settled - sc["hift_left"])
        source = np.concatenate([st["source"], src_new], -1)[:, :, (ctx - st["ctx_start"]) * up:]
        new = {"mel": mel_all[:, :, ctx - st["ctx_start"]:], "ctx_start": ctx, "emitted": settled, "source": source,
               "phase": phase, "phase_offset": st["phase_offset"], "tail": tail, "frames": st["frames"] + k1 - k0}
        return np.clip(audio, -hs["audio_limit"], hs["audio_limit"]), new

    def stream(self, token_chunks: Iterable, embedding=None, rng=None) -> Iterator[np.ndarray]:
        """Yield wav chunks (B, n) float32 while token chunks ((T,) or (B, T) ints) arrive; the end flushes.
        ``rng``: NumpyRandom (default) or TorchRandom (to reproduce Detokenizer.stream with a generator)."""
        rng = rng or NumpyRandom()
        fs = vs = emb = None
        for chunk in token_chunks:
            chunk = self._check_tokens(chunk)
            if fs is None:
                b = chunk.shape[0]
                fs, vs = self.flow_state(b), self.vocoder_state(b, rng)
                emb = self._check_embedding(embedding, b)
            elif chunk.shape[0] != fs["pending"].shape[0]:
                raise ValueError(f"token chunk has batch {chunk.shape[0]}, the stream started with "
                                 f"{fs['pending'].shape[0]}")
            mel, fs = self.flow_step(fs, chunk, emb, rng)
            wav, vs = self.vocoder_step(vs, mel, rng)
            if wav.shape[-1]:
                yield wav
        if fs is None:
            return
        mel, fs = self.flow_step(fs, fs["pending"][:, :0], emb, rng, final=True)
        wav, vs = self.vocoder_step(vs, mel, rng, final=True)
        if wav.shape[-1]:
            yield wav

    def _check_embedding(self, embedding, batch: int) -> np.ndarray:
        dim = self.sidecar["spk_embed_dim"]
        if embedding is None:
            return np.zeros((batch, dim), np.float32)
        e = np.asarray(embedding.numpy() if isinstance(embedding, Tensor) else embedding, np.float32)
        e = e[None] if e.ndim == 1 else e
        if e.shape != (batch, dim):
            raise ValueError(f"speaker embedding must be ({batch}, {dim}), got {e.shape}")
        return e


class TorchScriptDetokenizer(OrtDetokenizer):
    """OrtDetokenizer's host loop over the TorchScript modules of ``export_decoder_torchscript``: the Python twin
    of export/cpp/detokenize_torchscript.cpp (same modules, same host steps, same random draws)."""

    format, export_command = TS_FORMAT, "torchscript-decoder"

    def __init__(self, ts_dir: str, stream_config: Optional[StreamConfig] = None):
        import warnings

        self._read_sidecar(ts_dir, stream_config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's (docs/DECODER.md)
            self.modules = {name: torch.jit.load(os.path.join(ts_dir, g["file"]))
                            for name, g in self.sidecar["graphs"].items()}

    def run(self, name: str, **inputs) -> list:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in self.sidecar["graphs"][name]["inputs"]]
        with torch.no_grad():
            out = self.modules[name](*args)
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
