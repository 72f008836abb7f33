"""The SAP training model: WhisperVQ encoder (tokens) + Whisper text decoder (SAP supervision).

The decoder cross-attends the quantized stream (straight-through estimator into the encoder) and is
trained with teacher forcing on the rendered SAP target. Its output projection is tied to the frozen
token embedding and restricted to the ids of the training targets, end of text and the first
``base_vocab`` BPE ids (bytes and the most frequent merges, so text the targets never spelled can
still be generated): the softmax costs about 10k columns instead of 51,864, and generation is
restricted to the same ids.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.encoder import WhisperVQEncoder


def build_encoder(ct2_dir: str, vocab_size: int, sae: bool, sae_source: int = 1, ema_decay: float = 0.99,
                  restart_interval: int = 25, commit_coefficient: float = 0.25,
                  commit_normalize: bool = False, sae_norm_init: str = "whisper") -> WhisperVQEncoder:
    """Whisper encoder (real weights) in the WhisperVQ layout: avg pooling 2 after the last layer
    (25 Hz), quantizer at the last layer, optionally the SAE branch from ``sae_source`` into it.

    The SAE's output LayerNorm sits before the quantizer, and Whisper's final LayerNorm follows the
    quantizer (what the SAP decoder attends). ``sae_norm_init="whisper"`` starts the SAE norm as a
    copy of that final norm, so the decoder initially sees Whisper's normalisation applied twice
    (its gain squared: 0.44-12 per channel for tiny.en); ``"identity"`` starts it at weight 1, bias 0,
    so ``layer_norm(sae_norm(x)) == layer_norm(x)`` and the decoder starts on the features it was
    trained on, as without the SAE."""
    from ..convert.whisper_ct2 import ct2_whisper_dims, load_ct2_whisper_encoder
    from ..convert.ctranslate2_format import read_ct2_model
    from .config import check_sae_norm_init

    check_sae_norm_init(sae_norm_init)  # before the weights are read

    n = ct2_whisper_dims(read_ct2_model(ct2_dir))["encoder_layers"]
    residual = dict(encoder_residual_source_position=sae_source, encoder_residual_target_position=n,
                    use_residual_adapter=True, use_residual_gate=True) if sae else \
        dict(encoder_residual_source_position=None, encoder_residual_target_position=None,
             use_residual_adapter=False, use_residual_gate=False)
    model, _ = load_ct2_whisper_encoder(
        ct2_dir, pooling_kernel_size=2, pooling_type="avg", pooling_position=n, quantize_vocab_size=vocab_size,
        quantize_position=n, quantize_ema_decay=ema_decay, quantize_restart_interval=restart_interval,
        quantize_commit_coefficient=commit_coefficient, quantize_commit_normalize=commit_normalize,
        **residual)
    if model.residual_output_norm is not None:
        with torch.no_grad():
            if sae_norm_init == "whisper":  # the quantizer starts on Whisper's normalised features
                model.residual_output_norm.load_state_dict(model.layer_norm.state_dict())
            else:  # LayerNorm's own init: weight 1, bias 0
                model.residual_output_norm.reset_parameters()
    return model


# EncoderOutput training diagnostics a step reports (logged as batch means)
DIAGNOSTICS = ("quantize_spread", "quantize_relative_commit", "sae_gate_mean", "sae_residual_ratio")


class SAPModel(nn.Module):
    def __init__(self, encoder: WhisperVQEncoder, decoder: nn.Module, vocab_ids: Sequence[int], start: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.start = start
        ids = torch.as_tensor(sorted(set(int(i) for i in vocab_ids)), dtype=torch.long)
        self.register_buffer("vocab_ids", ids, persistent=False)
        remap = torch.full((decoder.embed_tokens.num_embeddings,), -1, dtype=torch.long)
        remap[ids] = torch.arange(len(ids))
        self.register_buffer("remap", remap, persistent=False)

    def output_weight(self) -> Tensor:
        return self.decoder.embed_tokens.weight[self.vocab_ids]

    def encode(self, feats: Tensor, frame_mask: Tensor):
        """Cached frozen-front features (B, T, D) at position ``start`` -> EncoderOutput after the
        quantizer and the final LayerNorm (what the decoder attends)."""
        return self.encoder.forward_from(feats, frame_mask, self.start)

    def forward(self, feats: Tensor, frame_mask: Tensor, tokens_in: Tensor, targets: Tensor,
                target_mask: Tensor) -> dict[str, Tensor]:
        enc = self.encode(feats, frame_mask)
        hidden = self.decoder(tokens_in, enc.hidden_states, enc.frame_mask)
        logits = hidden @ self.output_weight().t()
        tgt = self.remap[targets]
        if bool(((tgt < 0) & target_mask).any()):
            raise ValueError("a target token is outside the training vocabulary")
        ce = F.cross_entropy(logits.flatten(0, 1), tgt.clamp_min(0).flatten(), reduction="none")
        m = target_mask.flatten().float()
        ce = (ce * m).sum() / m.sum().clamp_min(1.0)
        q = enc.quantize_loss if enc.quantize_loss is not None else ce.new_zeros(())
        out = {"loss": ce + q, "ce": ce.detach(), "quantize": q.detach(),
               "active_codes": torch.tensor(enc.num_active_codes or 0)}
        for k in DIAGNOSTICS:
            v = getattr(enc, k)
            if v is not None:
                out[k] = torch.tensor(v)
        return out

    @torch.no_grad()
    def generate(self, memory: Tensor, memory_mask: Tensor, prompt: list[int], eot: int,
                 max_new_tokens: int = 160, no_repeat_ngram: int = 0) -> list[list[int]]:
        """Greedy decoding restricted to the training vocabulary (KV-cached in the decoder);
        ``no_repeat_ngram`` as in ``WhisperTextDecoder.generate``."""
        suppress = torch.ones(self.decoder.embed_tokens.num_embeddings, dtype=torch.bool)
        suppress[self.vocab_ids] = False
        return self.decoder.generate(memory, memory_mask, prompt, eot, max_new_tokens=max_new_tokens,
                                     suppress=suppress.nonzero()[:, 0].tolist(), no_repeat_ngram=no_repeat_ngram)
