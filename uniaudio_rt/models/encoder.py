"""The WhisperVQ / UniAudio-Token encoder in plain PyTorch (training parity with the public code).

log-mel -> conv front end -> absolute positions -> Whisper transformer layers, with at fixed
positions (counted in layers, 0 = before the first layer): temporal pooling, the SAE gated residual
from a shallow layer into the deep stream, and single-codebook vector quantisation.

Parameter names follow the public HF-style ``WhisperVQEncoder`` checkpoints, so state dicts load
without renaming (see :mod:`uniaudio_rt.checkpoint`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import WhisperVQConfig
from .quantizer import vector_quantize_ref


def _tracing() -> bool:
    """True while torch.export / torch.compile / torch.jit.trace record the graph: data-dependent
    shortcuts are skipped so that the recorded graph is valid for every input."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads only on the left, so output frame t sees inputs <= t (times stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         dilation=dilation)
        self.left_padding = dilation * (kernel_size - 1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left_padding, 0)))


class MultiHeadAttention(nn.Module):
    """Whisper self-attention: biased q/v/out projections, unbiased k, scaled dot product."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

        self.qkv_proj: Optional[nn.Linear] = None  # set by fuse_qkv() for inference

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Inference: one (3D x D) projection instead of three; the k part gets a zero bias."""
        d = self.q_proj.in_features
        fused = nn.Linear(d, 3 * d).to(self.q_proj.weight.dtype)
        fused.weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
        fused.bias.copy_(torch.cat([self.q_proj.bias, torch.zeros_like(self.q_proj.bias), self.v_proj.bias]))
        self.qkv_proj = fused
        del self.q_proj, self.k_proj, self.v_proj

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, D) -> q, k, v each (B, H, T, D / H)."""
        b, t, d = x.shape
        h = self.n_head
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            return q, k, v

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        return heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, D); mask: bool, broadcastable to (B, 1, T, T), True = may attend."""
        b, t, d = x.shape
        q, k, v = self.project_qkv(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer layer (HF ``WhisperEncoderLayer`` key names)."""

    def __init__(self, cfg: WhisperVQConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn = MultiHeadAttention(d, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.activation = {"gelu": nn.GELU(), "gelu_new": nn.GELU(approximate="tanh"),
                           "relu": nn.ReLU()}[cfg.activation_function]
        self.dropout = cfg.dropout
        self.activation_dropout = cfg.activation_dropout
        self.compute_dtype: Optional[torch.dtype] = None  # e.g. bf16 weights in an fp32 stream

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if self.compute_dtype is not None and x.dtype != self.compute_dtype:
            return self._forward(x.to(self.compute_dtype), mask).to(x.dtype)
        return self._forward(x, mask)

    def _forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        y = self.self_attn(self.self_attn_layer_norm(x), mask)
        x = x + F.dropout(y, self.dropout, self.training)
        y = F.dropout(self.activation(self.fc1(self.final_layer_norm(x))), self.activation_dropout,
                      self.training)
        return x + F.dropout(self.fc2(y), self.dropout, self.training)


def attention_mask(frame_mask: Tensor, causal: bool = False,
                   block_size: Optional[int] = None) -> Tensor:
    """Boolean (B, 1, T, T) mask from a (B, T) frame mask (True/1 = real frame).

    Keys at padded frames are masked. ``causal`` allows keys <= query; ``block_size`` additionally
    allows every key in the query's block (block-causal attention, as in the GLM-4-Voice tokenizer).
    """
    keep = frame_mask.bool()
    b, t = keep.shape
    allowed = keep[:, None, None, :].expand(b, 1, t, t)
    if causal or block_size is not None:
        idx = torch.arange(t, device=keep.device)
        structure = idx[None, :] <= idx[:, None]
        if block_size is not None:
            blk = idx // block_size
            structure = structure | (blk[None, :] == blk[:, None])
        allowed = allowed & structure
    return allowed


@dataclass
class EncoderOutput:
    hidden_states: Tensor               # (B, T', D) after the last layer run
    frame_mask: Tensor                  # (B, T') bool, real frames of hidden_states
    token_ids: Optional[Tensor] = None  # (B, T_q) int64 codebook indices (padded frames included)
    token_mask: Optional[Tensor] = None  # (B, T_q) bool
    pre_quant_states: Optional[Tensor] = None  # (B, T_q, D) the vectors that were quantized
    quantize_loss: Optional[Tensor] = None
    num_active_codes: Optional[int] = None
    # training diagnostics (floats): the quantized vectors' spread (mean squared distance from the
    # batch mean, per dimension), the commitment error relative to it, and what the SAE adds
    quantize_spread: Optional[float] = None
    quantize_relative_commit: Optional[float] = None
    sae_gate_mean: Optional[float] = None
    sae_residual_ratio: Optional[float] = None   # rms(g * Adapter(x_shallow)) / rms(x_deep)


class WhisperVQEncoder(nn.Module):
    """Whisper encoder with pooling, the SAE gated residual and a single-codebook quantizer."""

    def __init__(self, cfg: WhisperVQConfig, tokens_only: bool = False):
        """``tokens_only`` builds only what the tokens depend on (see ``forward(stop_at_quantizer)``)."""
        super().__init__()
        cfg.validate()
        self.config = cfg
        d = cfg.d_model
        conv = CausalConv1d if cfg.encoder_causal_convolution else nn.Conv1d
        self.conv1 = conv(cfg.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = conv(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, d)
        self.embed_positions.requires_grad_(False)
        n_layers = cfg.quantize_position if cfg.quantize_encoder_only else cfg.encoder_layers
        if tokens_only:
            n_layers = cfg.layers_needed_for_tokens
        self.layers = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(n_layers))
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.embed_scale = math.sqrt(d) if cfg.scale_embedding else 1.0

        self.residual_adapter = self.residual_gate = self.residual_output_norm = None
        if cfg.has_residual and (cfg.residual_active_for_tokens or not tokens_only):  # SAE
            self.residual_adapter = (nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
                                     if cfg.use_residual_adapter else None)
            self.residual_gate = (nn.Sequential(nn.Linear(2 * d, d), nn.Tanh(), nn.Linear(d, d),
                                                nn.Sigmoid()) if cfg.use_residual_gate else None)
            self.residual_output_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

        self.codebook = None
        if cfg.quantize_vocab_size is not None:
            self.codebook = nn.Embedding(cfg.quantize_vocab_size, d)
            n_pos2 = math.ceil(cfg.max_source_positions / cfg.pool)
            self.embed_positions2 = nn.Embedding(n_pos2, d)
            self.embed_positions2.requires_grad_(False)
            if cfg.quantize_ema_decay is not None:
                self.codebook.weight.requires_grad_(False)
                self.register_buffer("ema_count", torch.ones(cfg.quantize_vocab_size))
                self.register_buffer("ema_weight", self.codebook.weight.detach().clone().float())
            self.quantize_ema_count = 0
        self.fast_codebook = None  # ops.Codebook set by runtime.prepare_for_inference
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.config
        self.embed_positions.weight.copy_(sinusoids(cfg.max_source_positions, cfg.d_model))
        if self.codebook is not None:
            self.embed_positions2.weight.copy_(self.embed_positions.weight[: self.embed_positions2.num_embeddings])
            if cfg.codebook_gaussian_init:
                nn.init.normal_(self.codebook.weight)
            if cfg.quantize_ema_decay is not None:
                self.ema_weight.copy_(self.codebook.weight.float())
                self.ema_count.fill_(1.0)
        if self.residual_adapter is not None:
            # Start the SAE branch as a no-op on the deep stream's direction.
            nn.init.zeros_(self.residual_adapter[2].weight)
            nn.init.zeros_(self.residual_adapter[2].bias)

    # ------------------------------------------------------------------ pieces
    def embed(self, mel: Tensor, position_offset: int | Tensor = 0) -> Tensor:
        """(B, n_mels, T_mel) -> (B, T_mel // 2, D): conv front end plus absolute positions.

        ``position_offset`` (int, or (B,) int64) shifts the positions, for windows that start
        inside a 30 s segment (streaming).
        """
        if mel.dim() != 3 or mel.shape[1] != self.config.num_mel_bins:
            raise ValueError(f"mel must be (batch, {self.config.num_mel_bins}, frames), got {tuple(mel.shape)}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        n_pos = self.embed_positions.num_embeddings
        if _tracing():  # the graph gathers with clamped indices; callers validate offsets
            last = 0
        else:
            last = int(position_offset.max()) if isinstance(position_offset, Tensor) else position_offset
        if last + t > n_pos:
            raise ValueError(f"input has {mel.shape[-1]} mel frames ({t} after the convolutions, position "
                             f"offset {last}); the model has positions for at most {n_pos} "
                             f"(30 s). Split longer audio (Tokenizer.encode does).")
        if isinstance(position_offset, Tensor):
            idx = position_offset.to(x.device)[:, None] + torch.arange(t, device=x.device)
            pos = self.embed_positions.weight[idx.clamp(max=n_pos - 1)]
        else:
            pos = self.embed_positions.weight[position_offset: position_offset + t]
        return x * self.embed_scale + pos

    def pool(self, x: Tensor) -> Tensor:
        k = self.config.pooling_kernel_size
        x = x.transpose(1, 2)
        if x.shape[-1] % k:
            x = F.pad(x, (0, k - x.shape[-1] % k))
        x = F.avg_pool1d(x, k) if self.config.pooling_type == "avg" else F.max_pool1d(x, k)
        return x.transpose(1, 2)

    def sae(self, x_deep: Tensor, x_shallow: Tensor) -> Tensor:
        """Semantic-Acoustic Equilibrium: LayerNorm(x_deep + g * Adapter(x_shallow))."""
        return self.residual_output_norm(x_deep + self._sae_residual(x_deep, x_shallow)[0])

    def _sae_residual(self, x_deep: Tensor, x_shallow: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """What the SAE adds to the deep stream, g * Adapter(x_shallow), and the gate g (None without one)."""
        a = self.residual_adapter(x_shallow) if self.residual_adapter is not None else x_shallow
        g = self.residual_gate(torch.cat([x_deep, x_shallow], dim=-1)) if self.residual_gate is not None else None
        return (a if g is None else g * a), g

    @staticmethod
    @torch.no_grad()
    def _sae_diagnostics(x_deep: Tensor, residual: Tensor, gate: Optional[Tensor], frame_mask: Tensor,
                         out: EncoderOutput) -> None:
        m = frame_mask.reshape(-1)

        def real(t: Tensor) -> Tensor:
            return t.reshape(-1, t.shape[-1])[m]

        if gate is not None:
            out.sae_gate_mean = float(real(gate).mean())
        out.sae_residual_ratio = float(real(residual).pow(2).mean().sqrt() /
                                       real(x_deep).pow(2).mean().sqrt().clamp_min(1e-12))

    def _attention_mask(self, frame_mask: Tensor, pooled: bool) -> Optional[Tensor]:
        cfg = self.config
        block = cfg.quantize_causal_block_size
        if block is not None and pooled:
            block //= cfg.pool
        if not _tracing() and block is None and not cfg.encoder_causal_attention and bool(frame_mask.all()):
            return None  # no padding, full attention: let SDPA take its fastest path
        return attention_mask(frame_mask, cfg.encoder_causal_attention, block)

    # ------------------------------------------------------------------ forward
    def forward(self, mel: Tensor, mel_mask: Optional[Tensor] = None,
                stop_at_quantizer: bool = False, position_offset: int | Tensor = 0,
                tokens_only: bool = False) -> EncoderOutput:
        """Run the encoder.

        mel: (B, n_mels, T_mel) normalised log-mel; mel_mask: (B, T_mel), 1 for real frames.
        ``stop_at_quantizer`` runs only what the tokens depend on: the layers up to the quantizer
        and, when it joins at or before the quantizer, the SAE branch.
        """
        cfg = self.config
        b, _, t_mel = mel.shape
        if mel_mask is None:
            mel_mask = torch.ones(b, t_mel, dtype=torch.bool, device=mel.device)
        elif mel_mask.shape != (b, t_mel):
            raise ValueError(f"mel_mask must be (batch, frames) = {(b, t_mel)}, got {tuple(mel_mask.shape)}")
        x = self.embed(mel, position_offset)
        frame_mask = mel_mask[:, ::2].bool()[:, : x.shape[1]]
        return self.forward_from(x, frame_mask, 0, stop_at_quantizer=stop_at_quantizer, tokens_only=tokens_only)

    def forward_from(self, x: Tensor, frame_mask: Tensor, start: int = 0, stop: Optional[int] = None,
                     stop_at_quantizer: bool = False, tokens_only: bool = False) -> EncoderOutput:
        """Run from the hidden states ``x`` (B, T, D) at layer position ``start`` (0 = after the
        embedding); ``frame_mask`` (B, T) marks real frames.

        ``stop``: return right after the layer at position ``stop`` ran, before any pooling, SAE or
        quantizer at that position (training caches the frozen lower layers this way and resumes
        with ``start=stop``). ``start`` must not be past the pooling position.
        """
        cfg = self.config
        if cfg.pooling_kernel_size is not None and start > cfg.pooling_position:
            raise ValueError(f"start={start} is past the pooling position {cfg.pooling_position}")
        if stop is not None and not start <= stop <= len(self.layers):
            raise ValueError(f"stop={stop} must be in [{start}, {len(self.layers)}]")
        pooled = False
        attn_mask = self._attention_mask(frame_mask, pooled)
        shallow: Optional[Tensor] = None
        out = EncoderOutput(x, frame_mask)

        n_layers = len(self.layers)
        if stop_at_quantizer and self.codebook is not None:
            n_layers = min(n_layers, cfg.quantize_position)

        for pos in range(start, n_layers + 1):
            if pos > start:
                skip = self.training and random.random() < cfg.encoder_layerdrop
                if not skip:
                    x = self.layers[pos - 1](x, attn_mask)
            if stop is not None and pos == stop:
                out.hidden_states = x
                return out
            if cfg.pooling_kernel_size is not None and pos == cfg.pooling_position:
                x = self.pool(x)
                if shallow is not None:
                    shallow = self.pool(shallow)
                frame_mask = frame_mask[:, :: cfg.pooling_kernel_size]
                pooled = True
                attn_mask = self._attention_mask(frame_mask, pooled)
            if cfg.has_residual:
                if pos == cfg.encoder_residual_source_position:
                    shallow = x
                elif pos == cfg.encoder_residual_target_position:
                    if shallow is None:
                        raise ValueError(f"start={start} is past the SAE source position "
                                         f"{cfg.encoder_residual_source_position}")
                    if tokens_only and self.fast_codebook is not None and pos == cfg.quantize_position:
                        from ..ops import fused_gate_vq  # native fused gate + LayerNorm + search

                        out.token_ids = fused_gate_vq(x, shallow, self, self.fast_codebook)
                        out.token_mask = frame_mask.clone()
                        break
                    residual, gate = self._sae_residual(x, shallow)
                    if self.training:
                        self._sae_diagnostics(x, residual, gate, frame_mask, out)
                    x = self.residual_output_norm(x + residual)
            if self.codebook is not None and pos == cfg.quantize_position:
                x = self._quantize(x, frame_mask, out)
                if stop_at_quantizer:
                    break
        if n_layers == cfg.encoder_layers and not cfg.quantize_encoder_only:
            x = self.layer_norm(x)
        out.hidden_states, out.frame_mask = x, frame_mask
        return out

    @torch.no_grad()
    def encode_tokens(self, mel: Tensor, mel_mask: Optional[Tensor] = None,
                      position_offset: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        """Tokens (B, T_q) int64 and their mask (B, T_q) bool; runs only what the tokens need."""
        if self.codebook is None:
            raise ValueError("this model has no quantizer (quantize_vocab_size is None)")
        out = self.forward(mel, mel_mask, stop_at_quantizer=True, position_offset=position_offset,
                           tokens_only=not _tracing())
        return out.token_ids, out.token_mask

    # ------------------------------------------------------------------ quantizer
    def _quantize(self, x: Tensor, frame_mask: Tensor, out: EncoderOutput) -> Tensor:
        cfg = self.config
        if self.fast_codebook is not None and not self.training and not _tracing():
            from ..ops import vq_argmin  # native nearest-code search, same indices

            idx = vq_argmin(x, self.fast_codebook)
            codes = self.codebook.weight[idx].to(x.dtype)
        else:
            codes, idx = vector_quantize_ref(x, self.codebook.weight)
        out.token_ids, out.token_mask, out.pre_quant_states = idx, frame_mask.clone(), x
        if self.training:
            x = self._train_quantizer(x, codes, idx, frame_mask, out)
        else:
            x = codes
        return x + self.embed_positions2.weight[: x.shape[1]]

    def _train_quantizer(self, x: Tensor, codes: Tensor, idx: Tensor, frame_mask: Tensor,
                         out: EncoderOutput) -> Tensor:
        """Commit loss, EMA codebook update with dead-code restart, straight-through estimator."""
        cfg = self.config
        k = cfg.quantize_vocab_size
        m = frame_mask.reshape(-1).float()
        onehot = F.one_hot(idx.reshape(-1), k).float() * m[:, None]
        counts = onehot.sum(0)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.all_reduce(counts)
        out.num_active_codes = int((counts > 0).sum())

        def masked_mse(a: Tensor, b: Tensor) -> Tensor:
            err = ((a - b) ** 2).mean(-1).reshape(-1)
            return (err * m).sum() / m.sum().clamp_min(1.0)

        err = masked_mse(x, codes.detach())
        mean = (x * m.reshape(x.shape[:-1])[..., None]).sum((0, 1)) / m.sum().clamp_min(1.0)
        spread = masked_mse(x, mean.expand_as(x))
        out.quantize_spread = float(spread.detach())
        out.quantize_relative_commit = float(err.detach() / spread.detach().clamp_min(1e-12))
        commit = err if cfg.use_commit_loss else x.new_zeros(())
        if cfg.quantize_commit_normalize:
            commit = commit / spread.clamp_min(1e-12)
        if cfg.quantize_ema_decay is not None:
            decay = cfg.quantize_ema_decay
            flat = x.detach().float().reshape(-1, x.shape[-1])
            dw = onehot.t() @ flat
            if distributed:
                torch.distributed.all_reduce(dw)
            with torch.no_grad():
                self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
                total = self.ema_count.sum()
                self.ema_count.copy_((self.ema_count + 1e-5) / (total + k * 1e-5) * total)
                self.ema_weight.mul_(decay).add_(dw, alpha=1 - decay)
                self.quantize_ema_count += 1
                if cfg.quantize_restart_interval and self.quantize_ema_count % cfg.quantize_restart_interval == 0:
                    self._restart_dead_codes(flat[m > 0])
                self.codebook.weight.copy_((self.ema_weight / self.ema_count[:, None]).to(self.codebook.weight.dtype))
            out.quantize_loss = cfg.quantize_loss_scale * cfg.quantize_commit_coefficient * commit
        else:
            codebook_loss = masked_mse(codes, x.detach())
            out.quantize_loss = cfg.quantize_loss_scale * (cfg.quantize_commit_coefficient * commit + codebook_loss)
        return x + (codes - x).detach()

    @torch.no_grad()
    def _restart_dead_codes(self, frames: Tensor) -> int:
        """Re-seed codes whose EMA count decayed below decay**interval with random real frames."""
        cfg = self.config
        threshold = cfg.quantize_ema_decay ** cfg.quantize_restart_interval
        dead = (self.ema_count < threshold).nonzero()[:, 0]
        n = min(len(dead), len(frames))
        if n == 0:
            return 0
        dead = dead[:n]
        pick = torch.randperm(len(frames), device=frames.device)[:n]
        self.ema_count[dead] = 1.0
        self.ema_weight[dead] = frames[pick]
        return n


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's sinusoidal position table (sin half, cos half)."""
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)
