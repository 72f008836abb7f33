"""Tokens -> waveform, one-shot or streamed with bounded state.

``Detokenizer(flow, hift)`` runs FlowDecoder (tokens -> mel) and HiFTGenerator (mel -> wav).
``stream(chunks)`` feeds tokens in chunks and yields audio as soon as it is final:

* flow: tokens are encoded block by block (the encoder is block-causal) with per-layer key/value
  caches of at most ``encoder_left_blocks`` blocks; each step runs the flow over a prompt window of at
  most ``prompt_tokens`` earlier tokens (their encoder outputs and generated mel are kept and used as
  prompt, as the official streaming decoder does) plus the new tokens, and keeps only the new mel.
* vocoder: each step vocodes the mel frames that have ``hift_lookahead`` frames of right context,
  with ``hift_left`` frames of left context; the NSF phase is carried (ops.nsf_sine_source), the
  source of the left context is reused, and the iSTFT overlap-add tail is carried (ops.istft_ola).
  When both contexts cover HiFT's receptive field, the streamed waveform equals the one-shot one.

``SamplingConfig`` sets the flow sampler (Euler steps, classifier-free guidance rate, the initial
noise's scale) for both; its defaults are the decoder config's (the public recipe: 10 steps, rate 0.7,
temperature 1).

All state lives in the explicit ``FlowStreamState`` / ``VocoderStreamState`` objects; their sizes
are bounded by the StreamConfig, not by the stream's length.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor

from . import ops
from .config import FlowConfig, HiFTConfig
from .flow import FlowDecoder
from .hift import HiFTGenerator, SourceState

DEFAULT_DECODER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "decoder")


@dataclass
class StreamConfig:
    prompt_tokens: int = 60         # flow prompt window (earlier tokens kept as prompt), in tokens
    encoder_left_blocks: int = 8    # encoder key/value cache, in blocks
    # The public-size HiFT's receptive field is 13 mel frames each way (a change at frame t reaches
    # t-13..t+13, t+-10 above 1e-6): 14 frames of context each way make the streamed waveform equal to the
    # one-shot one to 1e-7 (docs/DECODER.md); the lookahead is the vocoder's latency (14 x 256 samples).
    hift_left: int = 14             # vocoder left context, in mel frames
    hift_lookahead: int = 14        # vocoder right context (latency), in mel frames

    def __post_init__(self):
        for name in ("prompt_tokens", "encoder_left_blocks", "hift_left", "hift_lookahead"):
            if getattr(self, name) < 0:
                raise ValueError(f"StreamConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class SamplingConfig:
    """Flow-matching sampler settings. ``None`` keeps the decoder config's value (``cfm.n_timesteps``,
    ``cfm.inference_cfg_rate``); ``temperature`` scales the initial noise x_0 (0: a deterministic ODE
    from x_0 = 0). docs/DECODER.md has what they do to the shipped decoder's output."""
    n_timesteps: Optional[int] = None
    cfg_rate: Optional[float] = None
    temperature: float = 1.0

    def __post_init__(self):
        if self.n_timesteps is not None and (isinstance(self.n_timesteps, bool) or int(self.n_timesteps) != self.n_timesteps
                                             or self.n_timesteps < 1):
            raise ValueError(f"SamplingConfig.n_timesteps must be a positive integer, got {self.n_timesteps!r}")
        for name in ("cfg_rate", "temperature"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(float(v)) or float(v) < 0):
                raise ValueError(f"SamplingConfig.{name} must be a finite number >= 0, got {v!r}")

    def kwargs(self) -> dict:
        return {"n_timesteps": self.n_timesteps, "cfg_rate": self.cfg_rate, "temperature": float(self.temperature)}


@dataclass
class FlowStreamState:
    pending: Tensor                 # (B, n) tokens of an incomplete encoder block
    n_tokens: int                   # tokens encoded so far
    window_start: int               # first token of the prompt window
    h: Tensor                       # (B, window, D) encoder outputs of the window tokens
    mel: Tensor                     # (B, 80, frames) generated mel of the window tokens
    kv: Optional[list]              # per layer (keys, values), a whole number of blocks


@dataclass
class VocoderStreamState:
    mel: Tensor                     # (B, 80, k) mel frames from ctx_start on
    ctx_start: int
    emitted: int                    # mel frames vocoded so far
    source: Tensor                  # (B, 1, (emitted - ctx_start) * upsample) NSF source of the left context
    nsf: SourceState
    istft: ops.IstftState


class Detokenizer:
    def __init__(self, flow: FlowDecoder, hift: HiFTGenerator, stream_config: Optional[StreamConfig] = None,
                 sampling: Optional[SamplingConfig] = None):
        if flow.cfg.output_size != hift.cfg.in_channels:
            raise ValueError(f"flow makes {flow.cfg.output_size}-bin mel, hift expects {hift.cfg.in_channels}")
        self.flow, self.hift = flow.eval(), hift.eval()
        self.stream_config = stream_config or StreamConfig()
        self.sampling = sampling or SamplingConfig()

    @classmethod
    def from_pretrained(cls, model_dir: Optional[str] = None, stream_config: Optional[StreamConfig] = None,
                        sampling: Optional[SamplingConfig] = None) -> "Detokenizer":
        """A decoder directory (config.yaml, flow.pt, hift.pt); with no argument, the decoder shipped
        in the package (trained on the default tokenizer's tokens)."""
        from .loader import load_decoder

        if model_dir is None:
            model_dir = DEFAULT_DECODER_DIR
            if not os.path.exists(os.path.join(model_dir, "config.yaml")):
                raise ValueError(f"no default decoder is installed at {model_dir}; pass a decoder directory")
        return cls(*load_decoder(model_dir), stream_config, sampling)

    @classmethod
    def random_tiny(cls, seed: int = 0, stream_config: Optional[StreamConfig] = None,
                    sampling: Optional[SamplingConfig] = None) -> "Detokenizer":
        """Random weights on the tiny test sizes (for tests and API examples)."""
        torch.manual_seed(seed)
        return cls(FlowDecoder(FlowConfig.tiny()), HiFTGenerator(HiFTConfig.tiny()), stream_config, sampling)

    @property
    def sample_rate(self) -> int:
        return self.hift.cfg.sampling_rate

    # ------------------------------------------------------------------------- one shot
    @torch.inference_mode()
    def __call__(self, tokens: Tensor, prompt_tokens: Optional[Tensor] = None, prompt_feat: Optional[Tensor] = None,
                 embedding: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """tokens (T,) or (B, T) -> wav (B, samples) at ``sample_rate``. The flow attends over the whole
        input, so time and memory grow with the square of its length: for long inputs (minutes) use
        ``segmented``, as `uniaudio-rt detokenize` does beyond 30 s."""
        tokens = tokens[None] if tokens.dim() == 1 else tokens
        mel = self.flow.inference(tokens, prompt_tokens, prompt_feat, embedding, generator=generator,
                                  **self.sampling.kwargs())
        return self.hift.inference(mel, generator=generator)[0]

    def segmented(self, tokens: Tensor, segment_tokens: int, embedding: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None,
                  wrap: Optional[Callable[[list[Tensor]], Iterable[Tensor]]] = None) -> Tensor:
        """Long inputs: tokens (T,) or (B, T) -> wav (B, samples) of the same length as ``__call__``'s,
        decoded ``segment_tokens`` at a time through ``stream()``. The one-shot decode's encoder and
        estimator attend over the whole input, so its time and memory grow with the square of the
        length (a 3-minute input: 1.3 GB and RTF 0.81 against 0.54 GB and 0.28, docs/DECODER.md);
        here each flow step sees one segment plus the stream's prompt window, so both grow linearly.
        Within a segment the result is the streamed flow's (an approximation of the one-shot decode,
        conditioned on the previous window as prompt); the vocoder is exact. ``wrap`` wraps the list
        of segments (a progress bar)."""
        if isinstance(segment_tokens, bool) or int(segment_tokens) != segment_tokens or segment_tokens < 1:
            raise ValueError(f"segment_tokens must be a positive integer, got {segment_tokens!r}")
        tokens = tokens[None] if tokens.dim() == 1 else tokens
        segments = list(tokens.split(int(segment_tokens), dim=1))
        parts = list(self.stream(wrap(segments) if wrap else segments, embedding, generator))
        return torch.cat(parts, -1) if parts else tokens.new_zeros(tokens.shape[0], 0, dtype=torch.float32)

    # ------------------------------------------------------------------------- streaming
    def flow_state(self, batch: int = 1, device=None) -> FlowStreamState:
        c = self.flow.cfg
        return FlowStreamState(torch.zeros(batch, 0, dtype=torch.long, device=device), 0, 0,
                               torch.zeros(batch, 0, c.encoder.output_size, device=device),
                               torch.zeros(batch, c.output_size, 0, device=device), None)

    def vocoder_state(self, batch: int = 1, generator: Optional[torch.Generator] = None, device=None) -> VocoderStreamState:
        c = self.hift.cfg
        return VocoderStreamState(torch.zeros(batch, c.in_channels, 0, device=device), 0, 0,
                                  torch.zeros(batch, 1, 0, device=device),
                                  SourceState.initial(batch, c.nb_harmonics + 1, generator, device),
                                  ops.IstftState.initial(batch, c.n_fft, c.hop_len, device))

    @torch.inference_mode()
    def flow_step(self, state: FlowStreamState, tokens: Tensor, final: bool = False, spks: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None) -> tuple[Tensor, FlowStreamState]:
        """New tokens (B, n) -> mel (B, 80, new frames) for every complete encoder block (all tokens if final)."""
        flow, cfg = self.flow, self.flow.cfg
        tokens = torch.cat([state.pending, flow.check_tokens(tokens).to(state.pending.device)], dim=1)
        block = cfg.encoder.block_size or 1
        n_ready = tokens.shape[1] if final else tokens.shape[1] // block * block
        b = tokens.shape[0]
        if n_ready == 0:
            return torch.zeros(b, cfg.output_size, 0, device=tokens.device), \
                FlowStreamState(tokens, state.n_tokens, state.window_start, state.h, state.mel, state.kv)
        ready, pending = tokens[:, :n_ready], tokens[:, n_ready:]
        cache_len = state.kv[0][0].shape[2] if state.kv else 0
        h_new, kv = flow.encoder(flow.input_embedding(ready), offset=cache_len, kv_caches=state.kv)
        keep = self.stream_config.encoder_left_blocks * block
        kv = [(k[:, :, max(0, k.shape[2] - keep):], v[:, :, max(0, v.shape[2] - keep):]) for k, v in kv]
        h = torch.cat([state.h, h_new], dim=1)
        n_tokens = state.n_tokens + n_ready
        n_prompt = state.mel.shape[-1]
        n_new = cfg.mel_frames(n_tokens) - cfg.mel_frames(state.n_tokens)
        mu = flow.length_regulator(flow.encoder_proj(h), n_prompt + n_new).transpose(1, 2)
        cond = torch.zeros_like(mu)
        cond[:, :, :n_prompt] = state.mel
        spks = spks if spks is not None else flow.speaker(None, b, tokens.device)
        mel = flow.decoder(mu, spks, cond, generator=generator, **self.sampling.kwargs())[:, :, n_prompt:]
        # slide the prompt window to the last `prompt_tokens` tokens
        start = max(state.window_start, n_tokens - self.stream_config.prompt_tokens)
        mel_all = torch.cat([state.mel, mel], dim=-1)
        drop_frames = cfg.mel_frames(start) - cfg.mel_frames(state.window_start)
        new_state = FlowStreamState(pending, n_tokens, start, h[:, start - state.window_start:],
                                    mel_all[:, :, drop_frames:], kv)
        return mel, new_state

    @torch.inference_mode()
    def vocoder_step(self, state: VocoderStreamState, mel: Tensor, final: bool = False,
                     generator: Optional[torch.Generator] = None, add_noise: bool = True) -> tuple[Tensor, VocoderStreamState]:
        """New mel frames (B, 80, n) -> the waveform samples that are final now (all of them if final)."""
        hift, c, sc = self.hift, self.hift.cfg, self.stream_config
        up, per_frame = c.upsample_factor, c.upsample_factor // c.hop_len
        mel_all = torch.cat([state.mel, mel], dim=-1)
        total = state.ctx_start + mel_all.shape[-1]
        settled = total if final else max(state.emitted, total - sc.hift_lookahead)
        b = mel_all.shape[0]
        if total == 0 or (settled == state.emitted and not final):
            return torch.zeros(b, 0, device=mel_all.device), \
                VocoderStreamState(mel_all, state.ctx_start, state.emitted, state.source, state.nsf, state.istft)
        w0 = max(state.ctx_start, state.emitted - sc.hift_left)
        window = mel_all[:, :, w0 - state.ctx_start:]
        f0 = hift.f0_predictor(window)
        e, s = state.emitted - w0, settled - w0
        src_new, nsf = hift.m_source(f0[:, e:s], state.nsf, generator, add_noise)
        src_right, _ = hift.m_source(f0[:, s:], nsf, generator, add_noise)   # provisional, not kept
        src_left = state.source[:, :, (w0 - state.ctx_start) * up:]
        x = hift.decode(window, torch.cat([src_left, src_new, src_right], dim=-1))
        k0, k1 = e * per_frame, s * per_frame + (1 if final else 0)
        audio, tail = ops.istft_ola(x[:, :, k0:k1], hift.stft_window, c.hop_len, state.istft.tail,
                                    state.istft.frames, final)
        ctx = max(state.ctx_start, settled - sc.hift_left)
        source = torch.cat([state.source, src_new], dim=-1)[:, :, (ctx - state.ctx_start) * up:]
        new_state = VocoderStreamState(mel_all[:, :, ctx - state.ctx_start:], ctx, settled, source, nsf,
                                       ops.IstftState(tail, state.istft.frames + k1 - k0))
        return audio.clamp(-c.audio_limit, c.audio_limit), new_state

    def stream(self, token_chunks: Iterable[Tensor], embedding: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> Iterator[Tensor]:
        """Yield wav chunks (B, n) while token chunks ((T,) or (B, T)) arrive; the last one flushes."""
        fs = vs = spks = None
        for chunk in token_chunks:
            chunk = chunk[None] if chunk.dim() == 1 else chunk
            if fs is None:
                fs = self.flow_state(chunk.shape[0], chunk.device)
                vs = self.vocoder_state(chunk.shape[0], generator, chunk.device)
                with torch.inference_mode():
                    spks = self.flow.speaker(embedding, chunk.shape[0], chunk.device)
            mel, fs = self.flow_step(fs, chunk, spks=spks, generator=generator)
            wav, vs = self.vocoder_step(vs, mel, generator=generator)
            if wav.shape[-1]:
                yield wav
        if fs is None:
            return
        mel, fs = self.flow_step(fs, fs.pending[:, :0], final=True, spks=spks, generator=generator)
        wav, vs = self.vocoder_step(vs, mel, final=True, generator=generator)
        if wav.shape[-1]:
            yield wav
