"""Checkpoint loading: HF-style layouts (bare, model.encoder.), GLM-4-Voice, our single file; strict errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_model
from uniaudio_rt.checkpoint import (CheckpointError, load_encoder, save_pretrained, save_single_file)
from uniaudio_rt.models import WhisperVQEncoder, glm4voice_tokenizer_config, public_uniaudio_token_config


def same_tokens(a, b, frames=160):
    mel = torch.randn(2, a.config.num_mel_bins, frames, generator=torch.Generator().manual_seed(0))
    return torch.equal(a.encode_tokens(mel)[0], b.encode_tokens(mel)[0])


@pytest.mark.parametrize("prefix", ["", "model.encoder."])
def test_roundtrip_key_layouts(tmp_path, prefix):
    m = make_model(seed=3)
    save_pretrained(m, tmp_path, prefix=prefix)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["encoder_residual_target_position"] == 3
    loaded = load_encoder(tmp_path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert same_tokens(m, loaded)


def test_full_model_prefix_ignores_decoder_keys(tmp_path):
    m = make_model(seed=4)
    sd = {"model.encoder." + k: v.contiguous() for k, v in m.state_dict().items()}
    sd["model.decoder.embed_tokens.weight"] = torch.zeros(10, 64)
    sd["proj_out.weight"] = torch.zeros(10, 64)
    save_file(sd, str(tmp_path / "model.safetensors"))
    m.config.to_json(tmp_path / "config.json")
    assert same_tokens(m, load_encoder(tmp_path))


def test_sharded_and_bin_checkpoints(tmp_path):
    m = make_model(seed=5)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(tmp_path / name))
    with open(tmp_path / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {k: n for n, ks in shards.items() for k in ks}}, f)
    m.config.to_json(tmp_path / "config.json")
    assert same_tokens(m, load_encoder(tmp_path))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(sd, bin_dir / "pytorch_model.bin")
    m.config.to_json(bin_dir / "config.json")
    assert same_tokens(m, load_encoder(bin_dir))


def test_inference_checkpoint_without_ema_buffers(tmp_path):
    m = make_model(seed=6)
    sd = {k: v.contiguous() for k, v in m.state_dict().items() if k not in ("ema_count", "ema_weight")}
    save_file(sd, str(tmp_path / "model.safetensors"))
    m.config.to_json(tmp_path / "config.json")
    loaded = load_encoder(tmp_path)
    assert torch.equal(loaded.ema_weight, m.codebook.weight.float())


def test_glm4voice_layout_loads(tmp_path):
    """GLM-4-Voice tokenizer layout (bare keys, pooling 4 at layer 16, block-causal, causal convs),
    shrunk to a small width with the same structure."""
    cfg = glm4voice_tokenizer_config()
    d = cfg.to_dict()
    d.update(d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=128)
    from uniaudio_rt.models import WhisperVQConfig
    small = WhisperVQConfig.from_dict(d)
    m = WhisperVQEncoder(small).eval()
    save_pretrained(m, tmp_path, dtype=torch.bfloat16)
    loaded = load_encoder(tmp_path, for_tokens=True)
    assert len(loaded.layers) == 16
    mel = torch.randn(1, 128, 400)
    tokens, mask = loaded.encode_tokens(mel)
    assert tokens.shape == (1, 50)  # 400 mel frames -> 200 -> pooled by 4
    assert set(k for k in m.state_dict() if k.startswith("residual_")) == set()


def test_public_uat_config_prunes_dead_branch(tmp_path):
    cfg = public_uniaudio_token_config()
    d = cfg.to_dict()
    d.update(d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64)
    from uniaudio_rt.models import WhisperVQConfig
    m = WhisperVQEncoder(WhisperVQConfig.from_dict(d))
    save_pretrained(m, tmp_path, prefix="model.encoder.")
    loaded = load_encoder(tmp_path, for_tokens=True)
    assert len(loaded.layers) == 16 and loaded.residual_gate is None
    full = load_encoder(tmp_path)
    assert len(full.layers) == 32 and full.residual_gate is not None
    assert same_tokens(full, loaded, frames=200)


def test_single_file_format(tmp_path):
    m = make_model(seed=7)
    save_single_file(m, tmp_path / "m.safetensors")
    assert same_tokens(m, load_encoder(tmp_path / "m.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="single-file checkpoint must be saved by uniaudio-rt"):
        load_encoder(tmp_path / "foreign.safetensors")


def _write(tmp_path, m, sd):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    m.config.to_json(tmp_path / "config.json")


def test_strict_errors_name_keys(tmp_path):
    m = make_model()
    sd = dict(m.state_dict())
    del sd["layers.1.fc1.weight"]
    sd["layers.9.fc1.weight"] = torch.zeros(3)
    sd["codebook.weight"] = torch.zeros(127, 64)
    _write(tmp_path, m, sd)
    with pytest.raises(CheckpointError) as e:
        load_encoder(tmp_path)
    msg = str(e.value)
    assert "1 missing key(s): layers.1.fc1.weight" in msg
    assert "1 unexpected key(s): layers.9.fc1.weight" in msg
    assert "codebook.weight: checkpoint (127, 64) vs model (128, 64)" in msg


def test_wrong_checkpoint_kinds(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_encoder(tmp_path / "absent")
    (tmp_path / "a").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_encoder(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text('{"hidden_size": 768, "model_type": "bert"}')
    with pytest.raises(CheckpointError, match="is this a WhisperVQ"):
        load_encoder(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_encoder(tmp_path / "a")
    m = make_model()
    m.config.to_json(tmp_path / "a" / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_encoder(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_encoder(tmp_path / "a")
