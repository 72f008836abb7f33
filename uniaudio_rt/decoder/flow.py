"""Flow-matching half of the decoder: tokens -> 80-bin mel at 22050 Hz / hop 256.

Training-parity modules for the public CosyVoice / GLM-4-Voice ``flow.pt``: module attribute names
follow the public checkpoint's state-dict keys (``encoder.encoders.0.self_attn.linear_q.weight``,
``decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight``, ...), so a checkpoint loads with
``load_state_dict(strict=True)`` after loader.prepare_state_dict.

    tokens -> input_embedding -> BlockConformerEncoder -> encoder_proj
           -> InterpolateRegulator (nearest upsampling to mel frames + convs)  = mu
    noise  -> ConditionalCFM: Euler over a cosine t-schedule, classifier-free guidance,
              velocity from ConditionalDecoder(x, mu, t, spks, cond)            = mel

Padding masks are not modelled: every item of a batch has the same length (the inference case).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .config import CFMConfig, EncoderConfig, EstimatorConfig, FlowConfig, LengthRegulatorConfig


# ----------------------------------------------------------------------------- conformer encoder
def block_causal_mask(n_queries: int, n_keys: int, block_size: int, offset: int = 0,
                      device=None) -> Optional[Tensor]:
    """(n_queries, n_keys) bool, True = may attend. Query i (absolute position offset + i) sees every
    key at or before it and every key of its own block of ``block_size``; ``block_size`` 0 = no mask."""
    if block_size <= 0:
        return None
    q = torch.arange(offset, offset + n_queries, device=device)[:, None]
    k = torch.arange(n_keys, device=device)[None, :]
    return (k <= q) | (k // block_size == q // block_size)


def relative_positions(length: int, d_model: int, device=None, dtype=torch.float32) -> Tensor:
    """ESPnet relative positional table (1, 2*length-1, d_model); row r holds distance length-1-r."""
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(2 * length - 1, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe[None].to(dtype)


class LinearEmbed(nn.Module):
    """Linear + LayerNorm input layer (``embed.out``), then x * sqrt(d) and the relative position table."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5))
        self.scale = math.sqrt(odim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(x) * self.scale


class RelPositionAttention(nn.Module):
    """Transformer-XL style self-attention with relative positions (keys ``linear_*``, ``pos_bias_*``)."""

    def __init__(self, n_state: int, n_head: int, key_bias: bool = True):
        super().__init__()
        self.n_head, self.d_k = n_head, n_state // n_head
        self.linear_q = nn.Linear(n_state, n_state)
        self.linear_k = nn.Linear(n_state, n_state, bias=key_bias)
        self.linear_v = nn.Linear(n_state, n_state)
        self.linear_out = nn.Linear(n_state, n_state)
        self.linear_pos = nn.Linear(n_state, n_state, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_head, self.d_k)

    def forward(self, x: Tensor, pos: Tensor, mask: Optional[Tensor], offset: int = 0,
                kv_cache: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, D) at absolute positions offset..offset+T-1; kv_cache: keys/values of positions 0..offset-1.
        ``pos`` is the table for the full key length (offset + T). Returns output and the new cache."""
        q = self._heads(self.linear_q(x))
        k = self._heads(self.linear_k(x)).transpose(1, 2)
        v = self._heads(self.linear_v(x)).transpose(1, 2)
        if kv_cache is not None:
            k, v = torch.cat([kv_cache[0], k], 2), torch.cat([kv_cache[1], v], 2)
        n_keys = k.shape[2]
        p = self._heads(self.linear_pos(pos)).transpose(1, 2)             # (1, H, 2*n_keys-1, d_k)
        content = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        position = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)
        # score[i, j] uses distance (offset + i) - j, stored at row n_keys - 1 - distance of the table
        qi = torch.arange(offset, offset + x.shape[1], device=x.device)[:, None]
        kj = torch.arange(n_keys, device=x.device)[None, :]
        index = (n_keys - 1 - (qi - kj)).expand(*position.shape[:2], -1, -1)
        position = position.gather(-1, index)
        scores = (content + position) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.linear_out(out), (k, v)


class FeedForward(nn.Module):
    def __init__(self, n_state: int, n_hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(n_state, n_hidden)
        self.w_2 = nn.Linear(n_hidden, n_state)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Self-attention + feed-forward (no macaron, no conv module: as in the public flow encoder)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.self_attn = RelPositionAttention(cfg.output_size, cfg.attention_heads, cfg.key_bias)
        self.feed_forward = FeedForward(cfg.output_size, cfg.linear_units)
        self.norm_ff = nn.LayerNorm(cfg.output_size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(cfg.output_size, eps=1e-5)
        self.normalize_before = cfg.normalize_before

    def forward(self, x, pos, mask, offset=0, kv_cache=None):
        h = self.norm_mha(x) if self.normalize_before else x
        a, new_cache = self.self_attn(h, pos, mask, offset, kv_cache)
        x = x + a
        if not self.normalize_before:
            x = self.norm_mha(x)
        h = self.norm_ff(x) if self.normalize_before else x
        x = x + self.feed_forward(h)
        if not self.normalize_before:
            x = self.norm_ff(x)
        return x, new_cache


class BlockConformerEncoder(nn.Module):
    """Conformer over token embeddings with a block-causal attention mask: outputs of a block depend only
    on tokens of that block and earlier ones, so a streaming caller can cache the encoded prefix."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = LinearEmbed(cfg.input_size, cfg.output_size)
        self.encoders = nn.ModuleList([ConformerLayer(cfg) for _ in range(cfg.num_blocks)])
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def forward(self, x: Tensor, offset: int = 0, kv_caches: Optional[list] = None) -> tuple[Tensor, list]:
        """x (B, T, input_size) at absolute positions offset..offset+T-1 -> (B, T, output_size) and the
        per-layer key/value caches covering positions 0..offset+T-1. ``offset`` must be a block boundary
        when caches are used (a block's queries must see their whole block)."""
        if kv_caches is not None and self.cfg.block_size > 0 and offset % self.cfg.block_size:
            raise ValueError(f"offset={offset} is not a multiple of block_size={self.cfg.block_size}")
        x = self.embed(x)
        n_keys = offset + x.shape[1]
        pos = relative_positions(n_keys, self.cfg.output_size, x.device, x.dtype)
        mask = block_causal_mask(x.shape[1], n_keys, self.cfg.block_size, offset, x.device)
        new_caches = []
        for i, layer in enumerate(self.encoders):
            x, c = layer(x, pos, mask, offset, None if kv_caches is None else kv_caches[i])
            new_caches.append(c)
        if self.cfg.normalize_before:
            x = self.after_norm(x)
        return x, new_caches


# ----------------------------------------------------------------------------- length regulator
class InterpolateRegulator(nn.Module):
    """Nearest-neighbour upsampling from token rate to mel frames, then (Conv1d, GroupNorm, Mish) x N, Conv1d."""

    def __init__(self, cfg: LengthRegulatorConfig):
        super().__init__()
        layers = []
        for _ in cfg.sampling_ratios:
            layers += [nn.Conv1d(cfg.channels, cfg.channels, 3, 1, 1), nn.GroupNorm(cfg.groups, cfg.channels), nn.Mish()]
        layers.append(nn.Conv1d(cfg.channels, cfg.out_channels or cfg.channels, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, n_frames: int) -> Tensor:
        """x (B, T_tokens, C) -> (B, n_frames, C)."""
        x = F.interpolate(x.transpose(1, 2), size=n_frames, mode="nearest")
        return self.model(x).transpose(1, 2)


# ----------------------------------------------------------------------------- velocity estimator
def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of the flow time t (scalar or (B,)) -> (B or 1, dim)."""
    t = t.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_channels: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(t)))


class Block1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block1D(dim, dim_out, groups)
        self.block2 = Block1D(dim_out, dim_out, groups)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.block1(x) + self.mlp(t).unsqueeze(-1)
        return self.block2(h) + self.res_conv(x)


class Downsample1D(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample1D(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Attention(nn.Module):
    """Multi-head self-attention with the diffusers key names (to_q/to_k/to_v without bias, to_out.0)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (m(x).view(b, t, self.heads, -1).transpose(1, 2) for m in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(b, t, -1))


class GELUProjection(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForwardGELU(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # ``net.1`` is a dropout in the training code; Identity keeps the key indices of net.0 / net.2
        self.net = nn.ModuleList([GELUProjection(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward (diffusers BasicTransformerBlock, no cross-attention)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForwardGELU(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class ConditionalDecoder(nn.Module):
    """U-Net over time: [ResnetBlock1D + transformer blocks + down/up-sampling] with skip connections.
    Input channels = x, mu, spks, cond stacked (4 x 80 = 320 for the public model)."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        time_dim = ch[0] * 4
        self.time_mlp = TimestepMLP(cfg.in_channels, time_dim)

        def transformers(dim):
            return nn.ModuleList([TransformerBlock(dim, cfg.num_heads, cfg.attention_head_dim) for _ in range(cfg.n_blocks)])

        self.down_blocks = nn.ModuleList()
        c_out = cfg.in_channels
        for i, c in enumerate(ch):
            c_in, c_out = c_out, c
            last = i == len(ch) - 1
            down = nn.Conv1d(c_out, c_out, 3, padding=1) if last else Downsample1D(c_out)
            self.down_blocks.append(nn.ModuleList([ResnetBlock1D(c_in, c_out, time_dim), transformers(c_out), down]))
        self.mid_blocks = nn.ModuleList(
            [nn.ModuleList([ResnetBlock1D(ch[-1], ch[-1], time_dim), transformers(ch[-1])]) for _ in range(cfg.num_mid_blocks)])
        up_ch = ch[::-1] + (ch[0],)
        self.up_blocks = nn.ModuleList()
        for i in range(len(up_ch) - 1):
            c_out = up_ch[i + 1]
            last = i == len(up_ch) - 2
            up = nn.Conv1d(c_out, c_out, 3, padding=1) if last else Upsample1D(c_out)
            self.up_blocks.append(nn.ModuleList([ResnetBlock1D(up_ch[i] * 2, c_out, time_dim), transformers(c_out), up]))
        self.final_block = Block1D(up_ch[-1], up_ch[-1])
        self.final_proj = nn.Conv1d(up_ch[-1], cfg.out_channels, 1)

    @staticmethod
    def _transformers(blocks: nn.ModuleList, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        for block in blocks:
            x = block(x)
        return x.transpose(1, 2)

    def forward(self, x: Tensor, mu: Tensor, t: Tensor, spks: Optional[Tensor] = None,
                cond: Optional[Tensor] = None) -> Tensor:
        """x, mu, cond (B, C, T); spks (B, C); t scalar or (B,) -> velocity (B, out_channels, T)."""
        t = self.time_mlp(timestep_embedding(t, self.cfg.in_channels))
        parts = [x, mu]
        if spks is not None:
            parts.append(spks[:, :, None].expand(-1, -1, x.shape[-1]))
        if cond is not None:
            parts.append(cond)
        x = torch.cat(parts, dim=1)
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"estimator input has {x.shape[1]} channels, expected in_channels={self.cfg.in_channels}")
        return self.unet(x, t)

    def unet(self, x: Tensor, t: Tensor) -> Tensor:
        """The U-Net trunk on the stacked input (B, in_channels, T) and the time embedding."""
        skips = []
        for resnet, blocks, down in self.down_blocks:
            x = self._transformers(blocks, resnet(x, t))
            skips.append(x)
            x = down(x)
        for resnet, blocks in self.mid_blocks:
            x = self._transformers(blocks, resnet(x, t))
        for resnet, blocks, up in self.up_blocks:
            skip = skips.pop()
            crop = torch.arange(skip.shape[-1], device=x.device)  # a gather: exports without a length guard
            x = torch.cat([x.index_select(2, crop), skip], dim=1)
            x = up(self._transformers(blocks, resnet(x, t)))
        return self.final_proj(self.final_block(x))


# ----------------------------------------------------------------------------- flow matching
def t_schedule(n_timesteps: int, scheduler: str = "cosine", device=None) -> Tensor:
    """Flow times 0 = t_0 < ... < t_n = 1; cosine: t = 1 - cos(pi/2 * s) on a uniform s grid."""
    t = torch.linspace(0, 1, n_timesteps + 1, device=device)
    return 1 - torch.cos(t * 0.5 * torch.pi) if scheduler == "cosine" else t


class ConditionalCFM(nn.Module):
    """Euler ODE solver with classifier-free guidance; the estimator's weights live under ``estimator``."""

    def __init__(self, cfg: CFMConfig, estimator_cfg: EstimatorConfig):
        super().__init__()
        self.cfg = cfg
        self.estimator = ConditionalDecoder(estimator_cfg)

    @torch.inference_mode()
    def forward(self, mu: Tensor, spks: Optional[Tensor], cond: Optional[Tensor], noise: Optional[Tensor] = None,
                n_timesteps: Optional[int] = None, temperature: float = 1.0, cfg_rate: Optional[float] = None,
                generator: Optional[torch.Generator] = None, backend: str = "auto") -> Tensor:
        """mu, cond (B, 80, T); spks (B, 80) -> mel (B, 80, T). ``noise`` (B, 80, T) fixes x_0; otherwise
        x_0 is standard normal noise times ``temperature``. ``n_timesteps`` and ``cfg_rate`` override the
        config's Euler step count and classifier-free guidance rate."""
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype) * temperature
        elif noise.shape != mu.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, mu has {tuple(mu.shape)}")
        t_span = t_schedule(n_timesteps or self.cfg.n_timesteps, self.cfg.t_scheduler, mu.device)
        x = noise
        rate = float(self.cfg.inference_cfg_rate if cfg_rate is None else cfg_rate)
        zeros = torch.zeros_like
        for step in range(1, len(t_span)):
            t, dt = t_span[step - 1], float(t_span[step] - t_span[step - 1])
            if rate > 0:  # conditional and unconditional velocity in one batch of 2B
                v = self.estimator(torch.cat([x, x]), torch.cat([mu, zeros(mu)]), t,
                                   None if spks is None else torch.cat([spks, zeros(spks)]),
                                   None if cond is None else torch.cat([cond, zeros(cond)]))
                v_cond, v_uncond = v.chunk(2)
                x = ops.cfg_euler_step(x, v_cond, v_uncond, dt, rate, backend=backend)
            else:
                x = x + dt * self.estimator(x, mu, t, spks, cond)
        return x


class FlowDecoder(nn.Module):
    """MaskedDiffWithXvec inference: speech tokens (+ optional prompt) -> mel (B, 80, T_mel)."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = BlockConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.length_regulator = InterpolateRegulator(cfg.length_regulator)
        self.decoder = ConditionalCFM(cfg.cfm, cfg.estimator)

    def speaker(self, embedding: Optional[Tensor], batch: int, device) -> Tensor:
        if embedding is None:
            embedding = torch.zeros(batch, self.cfg.spk_embed_dim, device=device)
        if embedding.shape[-1] != self.cfg.spk_embed_dim:
            raise ValueError(f"speaker embedding has size {embedding.shape[-1]}, expected {self.cfg.spk_embed_dim}")
        return self.spk_embed_affine_layer(F.normalize(embedding, dim=1))

    def check_tokens(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        if tokens.numel() and int(tokens.max()) >= self.cfg.vocab_size:
            raise ValueError(f"token id {int(tokens.max())} >= vocab_size {self.cfg.vocab_size}")
        return tokens.clamp(min=0)

    def mu(self, tokens: Tensor, n_frames: Optional[int] = None) -> Tensor:
        """Encoder + regulator: tokens (B, T) -> mu (B, 80, n_frames)."""
        h, _ = self.encoder(self.input_embedding(self.check_tokens(tokens)))
        h = self.encoder_proj(h)
        return self.length_regulator(h, n_frames or self.cfg.mel_frames(tokens.shape[1])).transpose(1, 2)

    @torch.inference_mode()
    def inference(self, tokens: Tensor, prompt_tokens: Optional[Tensor] = None, prompt_feat: Optional[Tensor] = None,
                  embedding: Optional[Tensor] = None, noise: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None, backend: str = "auto",
                  n_timesteps: Optional[int] = None, temperature: float = 1.0,
                  cfg_rate: Optional[float] = None) -> Tensor:
        """tokens (B, T) -> mel (B, 80, T_mel) of the non-prompt part. ``prompt_feat`` (B, T_p, 80) conditions
        the first T_p frames; ``noise`` (B, 80, T_total) fixes the sampler's x_0; ``n_timesteps``,
        ``temperature``, ``cfg_rate``: the sampler's settings (ConditionalCFM.forward)."""
        b = tokens.shape[0]
        if prompt_tokens is not None and prompt_tokens.shape[1]:
            tokens = torch.cat([prompt_tokens.to(tokens), tokens], dim=1)
        mu = self.mu(tokens)
        cond = torch.zeros_like(mu)
        n_prompt = 0
        if prompt_feat is not None and prompt_feat.shape[1]:
            n_prompt = prompt_feat.shape[1]
            if prompt_feat.shape[-1] != self.cfg.output_size or n_prompt > mu.shape[-1]:
                raise ValueError(f"prompt_feat has shape {tuple(prompt_feat.shape)}, expected (B, <= {mu.shape[-1]}, "
                                 f"{self.cfg.output_size})")
            cond[:, :, :n_prompt] = prompt_feat.transpose(1, 2)
        mel = self.decoder(mu, self.speaker(embedding, b, tokens.device), cond, noise=noise, generator=generator,
                           backend=backend, n_timesteps=n_timesteps, temperature=temperature, cfg_rate=cfg_rate)
        return mel[:, :, n_prompt:]
