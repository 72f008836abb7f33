"""Whisper's text decoder in plain PyTorch (HF ``WhisperDecoder`` key names).

Token embeddings plus learned absolute positions -> pre-LayerNorm layers of causal self-attention,
cross-attention to the encoder output (``memory``) and a GELU MLP -> final LayerNorm. The output
projection is tied to the token embeddings (:meth:`WhisperTextDecoder.logits`).

:meth:`WhisperTextDecoder.generate` decodes greedily with a key/value cache: the cross-attention
keys and values are projected once from ``memory``, the self-attention cache grows by one position
per step. Weights of the public Whisper checkpoints load with
:func:`uniaudio_rt.convert.whisper_ct2.load_ct2_whisper_decoder`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class WhisperDecoderConfig:
    """Dimensions of a Whisper text decoder (defaults: Whisper tiny.en)."""

    vocab_size: int = 51864
    d_model: int = 384
    decoder_attention_heads: int = 6
    decoder_layers: int = 4
    decoder_ffn_dim: int = 1536
    max_target_positions: int = 448
    layer_norm_eps: float = 1e-5

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "decoder_attention_heads", "decoder_layers",
                     "decoder_ffn_dim", "max_target_positions"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"WhisperDecoderConfig.{name}={v!r}: expected a positive integer")
        if self.d_model % self.decoder_attention_heads:
            raise ValueError(f"WhisperDecoderConfig.d_model={self.d_model}: expected a multiple of "
                             f"decoder_attention_heads={self.decoder_attention_heads}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"WhisperDecoderConfig.layer_norm_eps={self.layer_norm_eps!r}: expected > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WhisperDecoderConfig":
        """Known fields of ``d`` (e.g. an HF Whisper ``config.json``); other keys are ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class DecoderAttention(nn.Module):
    """Whisper attention: biased q/v/out projections, unbiased k; keys/values may be cached."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, y: Tensor) -> Tensor:
        b, t, d = y.shape
        return y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, D) -> keys and values, each (B, H, T, D / H)."""
        return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
                is_causal: bool = False) -> Tensor:
        """Queries from x (B, L, D) attend to k, v (B, H, S, D / H); mask: bool, True = may attend."""
        b, t, d = x.shape
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(x)), k, v, attn_mask=mask,
                                             is_causal=is_causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class WhisperDecoderLayer(nn.Module):
    """Pre-LayerNorm decoder layer (HF ``WhisperDecoderLayer`` key names)."""

    def __init__(self, cfg: WhisperDecoderConfig):
        super().__init__()
        d, eps = cfg.d_model, cfg.layer_norm_eps
        self.self_attn = DecoderAttention(d, cfg.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.encoder_attn = DecoderAttention(d, cfg.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, cfg.decoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: Tensor, cache: "DecoderCache", layer: int) -> Tensor:
        """x: (B, L, D) at positions ``cache.length`` .. ``cache.length + L - 1``; appends to the cache."""
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.project_kv(h)
        past = cache.self_kv[layer]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        cache.self_kv[layer] = (k, v)
        n_new, n_past = x.shape[1], k.shape[2] - x.shape[1]
        mask, is_causal = None, False
        if n_new > 1 and n_past == 0:
            is_causal = True
        elif n_new > 1:  # several new positions after cached ones: key j is visible from query i if j <= n_past + i
            q_pos = torch.arange(n_new, device=x.device)[:, None] + n_past
            mask = torch.arange(n_past + n_new, device=x.device)[None, :] <= q_pos
        x = x + self.self_attn(h, k, v, mask, is_causal)
        ck, cv = cache.cross_kv[layer]
        x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), ck, cv, cache.memory_mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


@dataclass
class DecoderCache:
    """Keys and values of one decoding run.

    ``cross_kv``: per layer, keys and values projected from ``memory``, each (B, H, S, D / H);
    ``memory_mask``: (B, 1, 1, S) bool or None; ``self_kv``: per layer, the self-attention keys and
    values of the positions decoded so far (None before the first call).
    """

    cross_kv: list[tuple[Tensor, Tensor]]
    memory_mask: Optional[Tensor]
    self_kv: list[Optional[tuple[Tensor, Tensor]]]

    @property
    def length(self) -> int:
        """Number of positions decoded so far."""
        first = self.self_kv[0] if self.self_kv else None
        return 0 if first is None else int(first[0].shape[2])

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` (int64 indices), e.g. to drop finished sequences."""
        def pick(kv: Optional[tuple[Tensor, Tensor]]) -> Optional[tuple[Tensor, Tensor]]:
            return None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))

        self.cross_kv = [pick(kv) for kv in self.cross_kv]
        self.self_kv = [pick(kv) for kv in self.self_kv]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, rows)


class WhisperTextDecoder(nn.Module):
    """Whisper's text decoder: tokens + encoder output -> hidden states (logits via :meth:`logits`)."""

    def __init__(self, cfg: WhisperDecoderConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.max_target_positions, cfg.d_model)
        self.layers = nn.ModuleList(WhisperDecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Embeddings ~ N(0, 0.02) as in Whisper's training code (the output projection is tied)."""
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        nn.init.normal_(self.embed_positions.weight, std=0.02)

    # ------------------------------------------------------------------ checks
    def _check_memory(self, memory: Tensor, memory_mask: Optional[Tensor]) -> None:
        d = self.config.d_model
        if memory.dim() != 3 or memory.shape[-1] != d:
            raise ValueError(f"memory must be (batch, frames, {d}), got {tuple(memory.shape)}")
        if memory.shape[1] == 0:
            raise ValueError("memory has no frames")
        if memory_mask is not None:
            if memory_mask.shape != memory.shape[:2]:
                raise ValueError(f"memory_mask must be (batch, frames) = {tuple(memory.shape[:2])}, "
                                 f"got {tuple(memory_mask.shape)}")
            if not bool(memory_mask.bool().any(dim=1).all()):
                raise ValueError("memory_mask: every batch item needs at least one real frame")

    def _check_tokens(self, tokens: Tensor, start: int = 0) -> None:
        cfg = self.config
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer (batch, length) tensor, got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")
        if start + tokens.shape[1] > cfg.max_target_positions:
            raise ValueError(f"{start + tokens.shape[1]} target positions; the decoder has positions for "
                             f"at most max_target_positions={cfg.max_target_positions}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise ValueError(f"token ids must be in [0, {cfg.vocab_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    # ------------------------------------------------------------------ pieces
    def init_cache(self, memory: Tensor, memory_mask: Optional[Tensor] = None) -> DecoderCache:
        """An empty cache holding the cross-attention keys/values of ``memory`` (B, S, D).

        ``memory_mask``: (B, S) bool, True = real frame (None: all frames are real).
        """
        self._check_memory(memory, memory_mask)
        cross = [layer.encoder_attn.project_kv(memory) for layer in self.layers]
        mask = None
        if memory_mask is not None and not bool(memory_mask.all()):
            mask = memory_mask.bool()[:, None, None, :]
        return DecoderCache(cross, mask, [None] * len(self.layers))

    def decode(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Hidden states (B, L, D) of ``tokens`` (B, L) placed after the cached positions; grows the cache."""
        self._check_tokens(tokens, cache.length)
        if tokens.shape[0] != cache.cross_kv[0][0].shape[0]:
            raise ValueError(f"tokens have batch {tokens.shape[0]}, memory has {cache.cross_kv[0][0].shape[0]}")
        return self._decode(tokens, cache)

    def _decode(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """:meth:`decode` without the input checks."""
        start = cache.length
        x = self.embed_tokens(tokens) + self.embed_positions.weight[start: start + tokens.shape[1]]
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i)
        return self.layer_norm(x)

    def forward(self, tokens: Tensor, memory: Tensor, memory_mask: Optional[Tensor] = None) -> Tensor:
        """Hidden states (B, L, D) after the final LayerNorm (not logits; see :meth:`logits`).

        tokens: (B, L) int64 from position 0; causal self-attention only, so padding at the end of
        a row does not affect the positions before it. memory: (B, S, D) encoder output;
        memory_mask: (B, S) bool, True = real frame.
        """
        self._check_tokens(tokens)
        if memory.dim() == 3 and memory.shape[0] != tokens.shape[0]:
            raise ValueError(f"tokens have batch {tokens.shape[0]}, memory has {memory.shape[0]}")
        return self._decode(tokens, self.init_cache(memory, memory_mask))

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., D) hidden states -> (..., vocab_size) logits (projection tied to ``embed_tokens``)."""
        return hidden @ self.embed_tokens.weight.T

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, memory: Tensor, memory_mask: Optional[Tensor], prompt: list[int], eot: int,
                 max_new_tokens: int = 200, suppress: Sequence[int] = (),
                 no_repeat_ngram: int = 0) -> list[list[int]]:
        """Greedy decoding, batched, with a key/value cache.

        Every batch item starts from ``prompt`` and stops at ``eot`` or after ``max_new_tokens`` new
        tokens (fewer if the positions run out: at most ``max_target_positions - len(prompt) + 1``).
        ``suppress`` token ids are never chosen. ``no_repeat_ngram`` = n > 0 also never chooses a token
        that would repeat an n-gram of the item's sequence (prompt included), which stops the
        repetition loops an undertrained decoder falls into. Returns, per batch item, the new tokens
        without the prompt and without ``eot``. Equal to repeated ``argmax(logits(forward(...))[:, -1])``
        with those bans.
        """
        cfg = self.config
        if not prompt:
            raise ValueError("prompt must hold at least one token (e.g. <|startoftranscript|>)")
        if len(prompt) > cfg.max_target_positions:
            raise ValueError(f"prompt has {len(prompt)} tokens; max_target_positions={cfg.max_target_positions}")
        bad = [t for t in (*prompt, eot) if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"prompt / eot ids out of [0, {cfg.vocab_size}): {bad[:5]}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0, got {no_repeat_ngram}")
        bad = [s for s in suppress if not 0 <= s < cfg.vocab_size]
        if bad:
            raise ValueError(f"suppress ids out of [0, {cfg.vocab_size}): {bad[:5]}")
        b = memory.shape[0] if memory.dim() == 3 else 0
        out: list[list[int]] = [[] for _ in range(b)]
        max_new_tokens = min(max_new_tokens, cfg.max_target_positions - len(prompt) + 1)
        cache = self.init_cache(memory, memory_mask)
        if b == 0 or max_new_tokens == 0:
            return out
        suppress_ids = torch.tensor(sorted(set(suppress)), dtype=torch.long, device=memory.device)
        rows = torch.arange(b, device=memory.device)  # original batch index of each cache row
        tokens = torch.tensor([prompt], dtype=torch.long, device=memory.device).expand(b, -1)
        for _ in range(max_new_tokens):
            logits = self.logits(self._decode(tokens, cache)[:, -1])
            if suppress_ids.numel():
                logits.index_fill_(1, suppress_ids, float("-inf"))
            live = rows.tolist()
            if no_repeat_ngram:
                for j, r in enumerate(live):
                    banned = repeated_ngram_ends(prompt + out[r], no_repeat_ngram)
                    if banned:
                        logits[j, banned] = float("-inf")
            nxt = logits.argmax(dim=-1)
            done = nxt == eot
            for r, t in zip(live, nxt.tolist()):
                if t != eot:
                    out[r].append(t)
            if bool(done.any()):
                keep = (~done).nonzero()[:, 0]
                if keep.numel() == 0:
                    break
                cache.select(keep)
                rows, nxt = rows[keep], nxt[keep]
            tokens = nxt[:, None]
        return out


def repeated_ngram_ends(seq: Sequence[int], n: int) -> list[int]:
    """The tokens that, appended to ``seq``, would repeat one of its n-grams (none while
    ``len(seq) < n``): those following an earlier occurrence of its last n - 1 tokens."""
    if n <= 0 or len(seq) < n:
        return []
    if n == 1:
        return sorted(set(seq))
    tail = tuple(seq[len(seq) - n + 1:])
    return sorted({seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i: i + n - 1]) == tail})
