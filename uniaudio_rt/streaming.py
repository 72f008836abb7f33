"""Streaming tokenization: ``push(samples) -> new tokens``, ``flush() -> remaining tokens``.

Two modes, chosen from the model's configuration:

* ``"exact"`` for streaming-capable models (causal convolutions, block-causal or causal attention,
  and a log-mel without the look-ahead "max - 8" floor): incremental encoding with per-layer
  key/value caches, conv left context, positions carried across chunks, and a reset at every 30 s
  window boundary exactly as offline segmentation does. Tokens equal ``Tokenizer.encode`` on the
  same audio, for every chunking.
* ``"window"`` for full-attention models (the public UniAudio-Token): the current 30 s segment is
  re-encoded over a window of ``left_context_ms`` before the first uncommitted token up to the newest
  sample; tokens older than ``lookahead_ms`` are committed. Agreement with offline tokens grows with
  both (docs/STREAMING.md).

Audio must be 16 kHz mono float; resample beforehand (``uniaudio_rt.audio.resample``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .mel import HOP_LENGTH, N_FFT, mel_filters
from .models.encoder import WhisperVQEncoder
from .models.quantizer import vector_quantize_ref
from .tokenizer import Tokenizer

_HALF = N_FFT // 2  # centred STFT: frame t covers samples [160 t - 200, 160 t + 200)


def streaming_mode(cfg) -> str:
    """'exact' when no token depends on audio after its attention block, else 'window'."""
    causal_attn = cfg.encoder_causal_attention or cfg.quantize_causal_block_size is not None
    if cfg.encoder_causal_convolution and causal_attn and cfg.mel_floor_db is None:
        return "exact"
    return "window"


def _as_samples(samples) -> Tensor:
    if isinstance(samples, np.ndarray):
        samples = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if not isinstance(samples, Tensor):
        raise ValueError(f"samples must be a numpy array or tensor, got {type(samples).__name__}")
    if samples.dim() != 1:
        raise ValueError(f"samples must be mono 16 kHz (samples,), got shape {tuple(samples.shape)}")
    samples = samples.detach().cpu().float()
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN/inf")
    return samples


def _fill_segments(state, samples: Tensor, on_partial=None) -> list[int]:
    """Append samples to ``state.samples`` one 30 s segment at a time: a segment that fills up is
    finished (``state._finish_segment()``, exactly as offline cuts it); after a piece that leaves the
    segment open, ``on_partial()`` may release tokens."""
    seg = state.cfg.segment_samples
    out: list[int] = []
    while samples.numel():
        room = seg - state.samples.numel()
        take, samples = samples[:room], samples[room:]
        state.samples = torch.cat([state.samples, take])
        if state.samples.numel() == seg:
            out += state._finish_segment()
        elif on_partial is not None:
            out += on_partial()
    return out


class _LayerCache:
    __slots__ = ("k", "v")

    def __init__(self):
        self.k: Optional[Tensor] = None  # (H, T_cache, dh)
        self.v: Optional[Tensor] = None


class ExactStreamState:
    """Per-session state of the exact incremental encoder for one 30 s segment at a time."""

    def __init__(self, model: WhisperVQEncoder):
        cfg = model.config
        self.cfg = cfg
        self.model = model
        self.unit = cfg.quantize_causal_block_size or cfg.pool  # conv-rate frames per step
        self.reset_segment()

    def reset_segment(self) -> None:
        cfg, d = self.cfg, self.cfg.d_model
        self.samples = torch.zeros(0)          # all samples of the current segment (<= 30 s)
        self.mel_done = 0                      # mel frames computed
        self.mel_hist = torch.zeros(cfg.num_mel_bins, 2)   # conv1 left context
        self.c1_buf = torch.zeros(d, 2)        # conv1 outputs from index 2 * conv_done - 2
        self.c1_count = 0
        self.conv_done = 0                     # conv2 outputs computed (= positions used)
        self.pending = torch.zeros(0, d)       # conv-rate frames waiting for a full unit
        self.units_done = 0
        self.caches = [_LayerCache() for _ in range(self.model.config.layers_needed_for_tokens)]

    # ------------------------------------------------------------------ front end
    def _mel(self, x_ext: Tensor) -> Tensor:
        """Log-mel (no floor) of frames of an already padded/reflected sample window."""
        window = torch.hann_window(N_FFT)
        spec = torch.stft(x_ext, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        mel = torch.from_numpy(mel_filters(self.cfg.num_mel_bins)) @ (spec.abs() ** 2)
        return (torch.clamp(mel, min=1e-10).log10() + 4.0) / 4.0

    def _new_mel_frames(self, final: bool) -> Tensor:
        n = self.samples.numel()
        if final:
            total = self.padded_len // HOP_LENGTH
            x = F.pad(self.samples, (0, self.padded_len - n))
            x = F.pad(x[None, None], (_HALF, _HALF), mode="reflect")[0, 0]
        else:
            total = max(0, (n - _HALF) // HOP_LENGTH + 1) if n > _HALF else 0
            if total <= self.mel_done:
                return torch.zeros(self.cfg.num_mel_bins, 0)
            x = F.pad(self.samples[None, None], (_HALF, 0), mode="reflect")[0, 0]
        t0 = self.mel_done
        if total <= t0:
            return torch.zeros(self.cfg.num_mel_bins, 0)
        seg = x[HOP_LENGTH * t0: HOP_LENGTH * (total - 1) + N_FFT]
        self.mel_done = total
        return self._mel(seg)

    def _conv(self, mel: Tensor) -> Tensor:
        """Causal conv1 + conv2 (stride 2) on new mel frames -> new conv-rate frames (T, D)."""
        m = self.model
        if mel.shape[1] == 0:
            return torch.zeros(0, self.cfg.d_model)
        x = torch.cat([self.mel_hist, mel], dim=1)
        self.mel_hist = x[:, -2:]
        c1 = F.gelu(F.conv1d(x[None], m.conv1.weight, m.conv1.bias))[0]
        self.c1_buf = torch.cat([self.c1_buf, c1], dim=1)
        self.c1_count += c1.shape[1]
        n_out = (self.c1_count - 1) // 2 + 1 - self.conv_done
        if n_out <= 0:
            return torch.zeros(0, self.cfg.d_model)
        y = F.gelu(F.conv1d(self.c1_buf[None, :, : 2 * n_out + 1], m.conv2.weight, m.conv2.bias, stride=2))[0]
        self.c1_buf = self.c1_buf[:, 2 * n_out:]
        pos = m.embed_positions.weight[self.conv_done: self.conv_done + n_out]
        self.conv_done += n_out
        return y.t() * m.embed_scale + pos

    # ------------------------------------------------------------------ public
    def push(self, samples: Tensor) -> list[int]:
        return _fill_segments(self, samples, lambda: self._advance(final=False))

    def flush(self) -> list[int]:
        return self._finish_segment() if self.samples.numel() else []

    @property
    def padded_len(self) -> int:
        stride = self.cfg.samples_per_token
        return -(-self.samples.numel() // stride) * stride

    def _finish_segment(self) -> list[int]:
        out = self._advance(final=True)
        self.reset_segment()
        return out

    def _frontend(self, final: bool) -> None:
        """Mel frames, convolutions and positions for the samples that allow them."""
        self.pending = torch.cat([self.pending, self._conv(self._new_mel_frames(final))])

    def feed(self, samples: Tensor) -> list[int]:
        """Front end only (StreamingBatch): tokens of segments that completed; full units wait in
        ``pending`` for :meth:`pop_full_units`."""
        return _fill_segments(self, samples, lambda: self._frontend(final=False) or [])

    def pop_full_units(self) -> list[Tensor]:
        n = self.pending.shape[0] // self.unit
        units = [self.pending[i * self.unit: (i + 1) * self.unit] for i in range(n)]
        self.pending = self.pending[n * self.unit:]
        return units

    @torch.no_grad()
    def _advance(self, final: bool) -> list[int]:
        self._frontend(final)
        out: list[int] = []
        while self.pending.shape[0] >= self.unit or (final and self.pending.shape[0] > 0):
            x, self.pending = self.pending[: self.unit], self.pending[self.unit:]
            first = self.units_done * self.unit
            idx = torch.arange(first, first + x.shape[0])
            if final:
                real_mel = math.ceil(self.samples.numel() / HOP_LENGTH)
                real = 2 * idx < real_mel
            else:
                real = torch.ones(x.shape[0], dtype=torch.bool)
            out += run_units(self.model, [self], x[None], real[None])[0]
            self.units_done += 1
        return out


def _layer_step(model: WhisperVQEncoder, i: int, states: Sequence[ExactStreamState], x: Tensor,
                key_real: Tensor) -> Tensor:
    """Layer ``i`` on one unit per session, x (B, T, D), each session with its own key/value cache
    of the earlier units of its segment (caches of different lengths are padded and masked)."""
    layer = model.layers[i]
    attn = layer.self_attn
    b, t, d = x.shape
    stream_dtype = x.dtype
    if layer.compute_dtype is not None:
        x = x.to(layer.compute_dtype)
    q, k, v = attn.project_qkv(layer.self_attn_layer_norm(x))  # (B, H, T, dh)
    caches = [s.caches[i] for s in states]
    pasts = [0 if c.k is None else c.k.shape[1] for c in caches]
    p_max = max(pasts)
    if p_max:
        def padded(c_part, p):
            if p == 0:
                return k.new_zeros(k.shape[1], p_max, k.shape[3])
            return F.pad(c_part, (0, 0, 0, p_max - p))
        keys = torch.cat([torch.stack([padded(c.k, p) for c, p in zip(caches, pasts)]), k], dim=2)
        values = torch.cat([torch.stack([padded(c.v, p) for c, p in zip(caches, pasts)]), v], dim=2)
    else:
        keys, values = k, v
    causal_within = model.config.quantize_causal_block_size is None  # fully causal attention
    mask = None
    if causal_within or not bool(key_real.all()) or min(pasts) != p_max:
        allowed = torch.ones(b, t, p_max + t, dtype=torch.bool)
        allowed[:, :, :p_max] = torch.arange(p_max)[None, None, :] < torch.tensor(pasts)[:, None, None]
        new = key_real[:, None, :].expand(b, t, t)
        if causal_within:
            new = new & torch.tril(torch.ones(t, t, dtype=torch.bool))
        allowed[:, :, p_max:] = new
        mask = allowed[:, None]
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    for j, c in enumerate(caches):
        c.k = k[j] if c.k is None else torch.cat([c.k, k[j]], dim=1)
        c.v = v[j] if c.v is None else torch.cat([c.v, v[j]], dim=1)
    x = x + attn.out_proj(o.transpose(1, 2).reshape(b, t, d))
    x = x + layer.fc2(layer.activation(layer.fc1(layer.final_layer_norm(x))))
    return x.to(stream_dtype)


def run_units(model: WhisperVQEncoder, states: Sequence[ExactStreamState], x: Tensor, conv_real: Tensor) -> list[list[int]]:
    """One attention block per session, x (B, U, D) conv-rate frames; tokens of the real frames."""
    cfg = model.config
    real, shallow = conv_real, None
    for pos in range(0, cfg.layers_needed_for_tokens + 1):
        if pos > 0:
            x = _layer_step(model, pos - 1, states, x, real)
        if cfg.pooling_kernel_size is not None and pos == cfg.pooling_position:
            x = model.pool(x)
            shallow = model.pool(shallow) if shallow is not None else None
            real = real[:, :: cfg.pooling_kernel_size]
        if cfg.has_residual:
            if pos == cfg.encoder_residual_source_position:
                shallow = x
            elif pos == cfg.encoder_residual_target_position:
                x = model.sae(x, shallow)
        if pos == cfg.quantize_position:
            _, idx = vector_quantize_ref(x, model.codebook.weight)
            return [idx[j][real[j]].tolist() for j in range(idx.shape[0])]
    raise AssertionError("quantize_position beyond the layers run")


class WindowStreamState:
    """Per-session state of windowed re-encoding for full-attention models."""

    def __init__(self, tokenizer: Tokenizer, lookahead_ms: float, left_context_ms: float, step_ms: float):
        cfg = tokenizer.config
        self.tok = tokenizer
        self.cfg = cfg
        self.spt = cfg.samples_per_token
        self.lookahead = int(round(lookahead_ms * cfg.sampling_rate / 1000))
        self.left = int(round(left_context_ms * cfg.sampling_rate / 1000))
        self.step = max(1, int(round(step_ms * cfg.sampling_rate / 1000)))
        self.samples = torch.zeros(0)
        self.committed = 0          # tokens of this segment already emitted
        self.last_encode_at = 0

    # A window encode is split in three steps so that StreamingBatch can run many sessions' windows
    # in one forward pass: _job() (features), encode_jobs() (the model), _take() (commit tokens).
    def _job(self, final: bool) -> dict:
        start_tok = max(0, self.committed - self.left // self.spt)
        w0 = start_tok * self.spt
        mel, n_real = self.tok.features(self.samples[w0:])
        return {"mel": mel, "n_real": n_real, "offset": w0 // (self.spt // self.cfg.pool),
                "start_tok": start_tok, "n": self.samples.numel(), "final": final}

    def _take(self, job: dict, toks: list[int]) -> list[int]:
        start_tok = job["start_tok"]
        if job["final"]:
            stable = len(toks)
        else:
            stable = min(len(toks), max(0, (job["n"] - self.lookahead) // self.spt - start_tok))
        new = toks[self.committed - start_tok: stable]
        self.committed = start_tok + max(stable, self.committed - start_tok)
        return new

    def _window_tokens(self, final: bool) -> list[int]:
        job = self._job(final)
        return self._take(job, encode_jobs(self.tok, [job])[0])

    def feed(self, samples: Tensor) -> tuple[list[int], Optional[dict]]:
        """Append samples; return tokens of completed segments and the window job now due, if any."""
        out = _fill_segments(self, samples)
        job = None
        if self.samples.numel() - self.last_encode_at >= self.step:
            self.last_encode_at = self.samples.numel()
            job = self._job(final=False)
        return out, job

    def push(self, samples: Tensor) -> list[int]:
        out, job = self.feed(samples)
        if job is not None:
            out += self._take(job, encode_jobs(self.tok, [job])[0])
        return out

    def flush(self) -> list[int]:
        return self._finish_segment() if self.samples.numel() else []

    def _finish_segment(self) -> list[int]:
        out = self._window_tokens(final=True)
        self.samples = torch.zeros(0)
        self.committed = 0
        self.last_encode_at = 0
        return out


def encode_jobs(tok: Tokenizer, jobs: Sequence[dict]) -> list[list[int]]:
    """One batched forward over several windows (each with its own length and position offset)."""
    t_max = max(j["mel"].shape[-1] for j in jobs)
    mel = torch.zeros(len(jobs), tok.config.num_mel_bins, t_max)
    mask = torch.zeros(len(jobs), t_max, dtype=torch.bool)
    for i, j in enumerate(jobs):
        mel[i, :, : j["mel"].shape[-1]] = j["mel"]
        mask[i, : j["n_real"]] = True
    offsets = torch.tensor([j["offset"] for j in jobs])
    tokens, tmask = tok.encoder.encode_tokens(mel, mask, position_offset=offsets)
    return [tokens[i][tmask[i]].tolist() for i in range(len(jobs))]


class StreamingTokenizer:
    """Tokenize audio as it arrives: ``push(samples) -> new tokens``, ``flush() -> the rest``.

    ``mode="auto"`` picks ``"exact"`` for streaming-capable models (see :func:`streaming_mode`) and
    ``"window"`` otherwise. ``lookahead_ms``/``left_context_ms``/``step_ms`` apply to the window
    mode: how much newer audio a token waits for, how much older audio is re-encoded with it, and
    how often (in audio time) the window is re-encoded.
    """

    def __init__(self, tokenizer: Tokenizer, *, mode: str = "auto", lookahead_ms: float = 1000.0,
                 left_context_ms: float = 10000.0, step_ms: float = 80.0):
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"expected a Tokenizer, got {type(tokenizer).__name__}")
        want = streaming_mode(tokenizer.config)
        if mode == "auto":
            mode = want
        if mode not in ("exact", "window"):
            raise ValueError(f"mode must be 'auto', 'exact' or 'window', got {mode!r}")
        if mode == "exact" and want != "exact":
            raise ValueError("exact streaming needs causal convolutions, block-causal or causal attention "
                             "and mel_floor_db=None in the model config; use mode='window'")
        for name, v in (("lookahead_ms", lookahead_ms), ("left_context_ms", left_context_ms), ("step_ms", step_ms)):
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        self.tokenizer = tokenizer
        self.mode = mode
        self._args = (lookahead_ms, left_context_ms, step_ms)
        self.reset()

    def reset(self) -> None:
        if self.mode == "exact":
            self._state = ExactStreamState(self.tokenizer.model)
        else:
            self._state = WindowStreamState(self.tokenizer, *self._args)

    @property
    def buffered_samples(self) -> int:
        return self._state.samples.numel()

    def push(self, samples) -> list[int]:
        with torch.no_grad():
            return self._state.push(_as_samples(samples))

    def flush(self) -> list[int]:
        """Tokens of the remaining audio; the stream then starts afresh."""
        with torch.no_grad():
            out = self._state.flush()
        self.reset()
        return out


class StreamingBatch:
    """Many independent sessions stepped together (one call serves every session's new audio)."""

    def __init__(self, tokenizer: Tokenizer, **kwargs):
        self.tokenizer = tokenizer
        self.kwargs = kwargs
        self.sessions: dict[str, StreamingTokenizer] = {}

    def open(self, session_id: str) -> None:
        if session_id in self.sessions:
            raise ValueError(f"session {session_id!r} is already open")
        self.sessions[session_id] = StreamingTokenizer(self.tokenizer, **self.kwargs)

    def push(self, chunks: dict[str, object]) -> dict[str, list[int]]:
        """Feed each session its new samples; returns each session's new tokens.

        Window mode: all sessions whose window is due are encoded in one batched forward pass.
        Exact mode: the attention blocks that became ready are run in batches across sessions,
        each session with its own key/value caches (padded and masked to a common length).
        """
        unknown = [s for s in chunks if s not in self.sessions]
        if unknown:
            raise ValueError(f"unknown session(s): {unknown}")
        samples = {s: _as_samples(x) for s, x in chunks.items()}
        out: dict[str, list[int]] = {}
        jobs: list[tuple[str, dict]] = []
        units: dict[str, list[Tensor]] = {}
        with torch.no_grad():
            for s, x in samples.items():
                state = self.sessions[s]._state
                if isinstance(state, WindowStreamState):
                    out[s], job = state.feed(x)
                    if job is not None:
                        jobs.append((s, job))
                else:
                    out[s] = state.feed(x)
                    units[s] = state.pop_full_units()
            # exact mode: the r-th ready block of every session, in batches, in order per session
            for r in range(max((len(u) for u in units.values()), default=0)):
                ready = [s for s, u in units.items() if len(u) > r]
                for b in range(0, len(ready), self.tokenizer.batch_size):
                    group = ready[b: b + self.tokenizer.batch_size]
                    states = [self.sessions[s]._state for s in group]
                    x = torch.stack([units[s][r] for s in group])
                    toks = run_units(self.tokenizer.model, states, x, torch.ones(x.shape[:2], dtype=torch.bool))
                    for s, st, t in zip(group, states, toks):
                        out[s] += t
                        st.units_done += 1
            for b in range(0, len(jobs), self.tokenizer.batch_size):
                group = jobs[b: b + self.tokenizer.batch_size]
                for (s, job), toks in zip(group, encode_jobs(self.tokenizer, [j for _, j in group])):
                    out[s] += self.sessions[s]._state._take(job, toks)
        return out

    def close(self, session_id: str) -> list[int]:
        if session_id not in self.sessions:
            raise ValueError(f"unknown session {session_id!r}")
        return self.sessions.pop(session_id).flush()
