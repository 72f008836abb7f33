"""Decoder training-parity modules on tiny random configs: shapes, block causality, sampler determinism,
state-dict round trips (both HiFT spellings, weight-norm folding), safe config.yaml reading."""

import copy
import os
import warnings

import pytest
import torch

from uniaudio_rt.decoder import ops
from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
from uniaudio_rt.decoder.flow import FlowDecoder, block_causal_mask, t_schedule
from uniaudio_rt.decoder.hift import HiFTGenerator
from uniaudio_rt.decoder.loader import (fold_weight_norm, flow_config_from_yaml, hift_config_from_yaml, load_decoder,
                                        load_into, prepare_state_dict, read_config)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tiny models run faster on one thread


def make_flow(seed=0, **kw):
    torch.manual_seed(seed)
    return FlowDecoder(FlowConfig.tiny(**kw)).eval()


def make_hift(seed=0):
    torch.manual_seed(seed)
    return HiFTGenerator(HiFTConfig.tiny()).eval()


def tokens(b=2, t=12, seed=0):
    return torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- flow
def test_flow_shapes():
    flow = make_flow()
    tok = tokens(2, 11)
    mel = flow.inference(tok, generator=torch.Generator().manual_seed(0))
    assert mel.shape == (2, 16, flow.cfg.mel_frames(11)) == (2, 16, int(11 / 25 * 22050 / 256))
    assert torch.isfinite(mel).all()


def test_block_causal_mask():
    m = block_causal_mask(6, 6, 2)
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert m[3].tolist() == [True, True, True, True, False, False]
    assert block_causal_mask(3, 3, 0) is None


def test_encoder_is_block_causal():
    flow = make_flow(block_size=4)
    tok = tokens(1, 12)
    changed = tok.clone()
    changed[:, 8:] = (changed[:, 8:] + 7) % 50
    with torch.no_grad():
        a, _ = flow.encoder(flow.input_embedding(tok))
        b, _ = flow.encoder(flow.input_embedding(changed))
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)  # earlier blocks unchanged
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3
    # within a block, attention is bidirectional: changing token 9 changes output 8
    c = tok.clone()
    c[:, 9] = (c[:, 9] + 1) % 50
    with torch.no_grad():
        d, _ = flow.encoder(flow.input_embedding(c))
    assert (a[:, 8] - d[:, 8]).abs().max() > 1e-4


def test_full_attention_encoder_is_not_causal():
    flow = make_flow(block_size=0)
    tok = tokens(1, 12)
    changed = tok.clone()
    changed[:, 11] = (changed[:, 11] + 1) % 50
    with torch.no_grad():
        a, _ = flow.encoder(flow.input_embedding(tok))
        b, _ = flow.encoder(flow.input_embedding(changed))
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-5


def test_encoder_block_by_block_with_cache_equals_full():
    flow = make_flow(block_size=4)
    x = flow.input_embedding(tokens(2, 12))
    with torch.no_grad():
        full, _ = flow.encoder(x)
        caches, parts = None, []
        for lo in range(0, 12, 4):
            y, caches = flow.encoder(x[:, lo:lo + 4], offset=lo, kv_caches=caches)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="offset=2 is not a multiple of block_size=4"):
        flow.encoder(x[:, :2], offset=2, kv_caches=caches)


def test_rel_position_attention_matches_espnet_rel_shift():
    """The gather formulation equals the ESPnet rel_shift (pad, reshape, slice) on a (T, 2T-1) score matrix."""
    t = 5
    bd = torch.randn(1, 2, t, 2 * t - 1)
    pad = torch.cat([torch.zeros(1, 2, t, 1), bd], -1).view(1, 2, 2 * t, t)
    shifted = pad[:, :, 1:].reshape(1, 2, t, 2 * t - 1)[:, :, :, :t]
    qi, kj = torch.arange(t)[:, None], torch.arange(t)[None]
    gathered = bd.gather(-1, (t - 1 - (qi - kj)).expand(1, 2, t, t))
    torch.testing.assert_close(gathered, shifted)


def test_cfm_sampler_is_deterministic_with_fixed_noise():
    flow = make_flow()
    tok = tokens(1, 10)
    n = flow.cfg.mel_frames(10)
    noise = torch.randn(1, 16, n, generator=torch.Generator().manual_seed(5))
    a = flow.inference(tok, noise=noise, backend="ref")
    b = flow.inference(tok, noise=noise, backend="ref")
    assert torch.equal(a, b)
    if ops.native_available():
        torch.testing.assert_close(flow.inference(tok, noise=noise, backend="native"), a, atol=1e-5, rtol=1e-5)


def test_cfm_euler_cfg_by_hand():
    """Two Euler steps on the cosine schedule with guidance 0.7, written out with the estimator."""
    flow = make_flow()
    tok = tokens(1, 6)
    mu = flow.mu(tok)
    spks = flow.speaker(None, 1, "cpu")
    cond = torch.zeros_like(mu)
    x = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    got = flow.decoder(mu, spks, cond, noise=x, n_timesteps=2, backend="ref")
    t = t_schedule(2, "cosine")
    assert torch.allclose(t, torch.tensor([0.0, 1 - torch.cos(torch.tensor(torch.pi / 4)), 1.0]))
    est = flow.decoder.estimator
    with torch.no_grad():
        for i in range(2):
            vc = est(x, mu, t[i], spks, cond)
            vu = est(x, torch.zeros_like(mu), t[i], torch.zeros_like(spks), torch.zeros_like(cond))
            x = x + (t[i + 1] - t[i]) * (1.7 * vc - 0.7 * vu)
    torch.testing.assert_close(got, x, atol=1e-5, rtol=1e-5)


def test_prompt_frames_are_cut_from_the_output():
    flow = make_flow()
    prompt_tok, tok = tokens(1, 4, seed=1), tokens(1, 8)
    n_total = flow.cfg.mel_frames(12)
    prompt_feat = torch.randn(1, 5, 16)
    mel = flow.inference(tok, prompt_tokens=prompt_tok, prompt_feat=prompt_feat,
                         noise=torch.randn(1, 16, n_total, generator=torch.Generator().manual_seed(0)))
    assert mel.shape == (1, 16, n_total - 5)


def test_flow_rejects_bad_tokens():
    flow = make_flow()
    with pytest.raises(ValueError, match="token id 50 >= vocab_size 50"):
        flow.inference(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match=r"speaker embedding has size 3, expected 12"):
        flow.inference(tokens(1, 4), embedding=torch.ones(1, 3))


# ----------------------------------------------------------------------------- hift
def test_hift_shapes_and_determinism():
    hift = make_hift()
    mel = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(0))
    wav, src = hift.inference(mel, generator=torch.Generator().manual_seed(3))
    assert wav.shape == (2, 7 * hift.cfg.upsample_factor) and src.shape == (2, 1, 7 * hift.cfg.upsample_factor)
    assert wav.abs().max() <= hift.cfg.audio_limit
    wav2, _ = hift.inference(mel, generator=torch.Generator().manual_seed(3))
    assert torch.equal(wav, wav2)


def test_hift_trains():
    """Gradients flow through the vocoder (the ops use their differentiable references under autograd)."""
    hift = make_hift().train()
    mel = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    wav, _ = hift(mel, generator=torch.Generator().manual_seed(1))
    wav.pow(2).sum().backward()
    assert mel.grad is not None and hift.conv_post.weight.grad.abs().sum() > 0
    assert hift.m_source.l_linear.weight.grad is not None


def test_hift_head_equals_torch_istft():
    hift = make_hift()
    mel = torch.randn(1, 16, 5, generator=torch.Generator().manual_seed(0))
    src, _ = hift.source(mel, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = hift.decode(mel, src)
    n_fft, hop = hift.cfg.n_fft, hift.cfg.hop_len
    nb = n_fft // 2 + 1
    mag, ph = torch.exp(x[:, :nb]).clamp(max=1e2), torch.sin(x[:, nb:])
    want = torch.istft(torch.complex(mag * torch.cos(ph), mag * torch.sin(ph)), n_fft, hop, n_fft,
                       window=hift.stft_window).clamp(-0.99, 0.99)
    got, _ = hift.inference(mel, cache_source=src)  # cache_source covering the whole signal fixes the source
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- checkpoints
def _conv_modules(m):
    return [mod for mod in m.modules() if isinstance(mod, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]


def weight_norm_state(module, style: str):
    """The state dict the public training code saves: every conv under weight norm, v scaled (folding
    must undo the scale)."""
    m = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for conv in _conv_modules(m):
            if style == "old":
                torch.nn.utils.weight_norm(conv)
            else:
                torch.nn.utils.parametrizations.weight_norm(conv)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    for k in sd:
        if k.endswith(("weight_v", "original1")):
            sd[k] = sd[k] * 3.0
    return sd


def test_fold_weight_norm_matches_torch():
    g = torch.rand(4, 1, 1) + 0.5
    v = torch.randn(4, 3, 5)  # a ConvTranspose1d weight (in, out, k), normed over dims 1, 2
    torch.testing.assert_close(fold_weight_norm(g, v), torch._weight_norm(v, g, 0))


@pytest.mark.parametrize("style", ["old", "new"])
@pytest.mark.parametrize("spelling", ["conv_pre", "pre_conv"])
def test_hift_round_trip_both_spellings_and_weight_norm(style, spelling):
    hift = make_hift(seed=1)
    sd = weight_norm_state(hift, style)
    assert any("weight_g" in k or "original0" in k for k in sd)
    if spelling == "pre_conv":
        ren = {"conv_pre.": "pre_conv.", "conv_post.": "post_conv.", "m_source.": "source."}
        sd = {next((new + k[len(old):] for old, new in ren.items() if k.startswith(old)), k): v for k, v in sd.items()}
        assert any(k.startswith("pre_conv.") for k in sd) and any(k.startswith("source.") for k in sd)
    fresh = make_hift(seed=2)
    load_into(fresh, prepare_state_dict(sd, "hift"), "hift.pt")
    mel = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(0))
    a, _ = hift.inference(mel, generator=torch.Generator().manual_seed(1))
    b, _ = fresh.inference(mel, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_flow_round_trip_strict():
    flow = make_flow(seed=1)
    sd = {"module." + k: v for k, v in flow.state_dict().items()}
    fresh = make_flow(seed=2)
    load_into(fresh, prepare_state_dict(sd, "flow"))
    for k, v in flow.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    keys = set(flow.state_dict())
    assert "decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight" in keys
    assert "encoder.encoders.0.self_attn.pos_bias_u" in keys
    assert "length_regulator.model.6.weight" in keys


def test_load_errors_name_the_keys():
    flow = make_flow()
    sd = flow.state_dict()
    bad = dict(sd)
    del bad["encoder_proj.weight"]
    bad["encoder.extra.weight"] = torch.zeros(1)
    bad["input_embedding.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError) as e:
        load_into(make_flow(), bad, "flow.pt")
    msg = str(e.value)
    assert "missing keys: encoder_proj.weight" in msg
    assert "unexpected keys: encoder.extra.weight" in msg
    assert "input_embedding.weight: checkpoint (3, 3) vs model (50, 32)" in msg
    with pytest.raises(ValueError, match="weight norm of 'conv_pre' is incomplete"):
        prepare_state_dict({"conv_pre.weight_g": torch.ones(2, 1, 1)}, "hift")


TINY_YAML = """
sample_rate: 22050
__set_seed1: !apply:random.seed [1986]
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 32
    output_size: 16
    spk_embed_dim: 12
    output_type: 'mel'
    vocab_size: 50
    input_frame_rate: 25
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: 32
        attention_heads: 2
        linear_units: 48
        num_blocks: 2
        dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        input_size: 32
        use_cnn_module: False
        macaron_style: False
        block_size: 4
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 16
        sampling_ratios: [1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 48
        n_spks: 1
        spk_emb_dim: 16
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 64
            out_channels: 16
            channels: [32, 32]
            dropout: 0.0
            attention_head_dim: 8
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
            act_fn: 'gelu'
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 16
    base_channels: 16
    nb_harmonics: 2
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [4, 2]
    upsample_kernel_sizes: [8, 4]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3]
    resblock_dilation_sizes: [[1, 3]]
    source_resblock_kernel_sizes: [3, 3]
    source_resblock_dilation_sizes: [[1], [1]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 16
        cond_channels: 8
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1024
    sampling_rate: !ref <sample_rate>
"""


def test_read_config_is_data_only():
    cfg = read_config(TINY_YAML)
    assert cfg["flow"]["__class__"] == "cosyvoice.flow.flow.MaskedDiffWithXvec"
    assert cfg["feat_extractor"] == {"__name__": "matcha.utils.audio.mel_spectrogram", "n_fft": 1024,
                                     "sampling_rate": 22050}
    assert cfg["__set_seed1"] == {"__apply__": "random.seed", "__args__": [1986]}
    expected = FlowConfig.tiny()
    expected.cfm.n_timesteps = 10  # not in the yaml: the public inference code uses 10 steps
    assert flow_config_from_yaml(cfg) == expected
    assert hift_config_from_yaml(cfg) == HiFTConfig.tiny()
    with pytest.raises(ValueError, match=r"'!ref <nope>' names no top-level key"):
        read_config("a: 1\nb: !ref <nope>\n")


def test_load_decoder_from_directory(tmp_path):
    flow, hift = make_flow(seed=3), make_hift(seed=3)
    (tmp_path / "config.yaml").write_text(TINY_YAML)
    torch.save(flow.state_dict(), tmp_path / "flow.pt")
    sd = weight_norm_state(hift, "old")
    torch.save({("pre_conv." + k[len("conv_pre."):] if k.startswith("conv_pre.") else k): v for k, v in sd.items()},
               tmp_path / "hift.pt")
    flow2, hift2 = load_decoder(str(tmp_path))
    assert flow2.cfg.cfm.n_timesteps == 10
    flow2.cfg.cfm.n_timesteps = flow.cfg.cfm.n_timesteps
    tok = tokens(1, 8)
    noise = torch.randn(1, 16, flow.cfg.mel_frames(8), generator=torch.Generator().manual_seed(0))
    mel = flow.inference(tok, noise=noise)
    torch.testing.assert_close(flow2.inference(tok, noise=noise), mel)
    a, _ = hift.inference(mel, generator=torch.Generator().manual_seed(0))
    b, _ = hift2.inference(mel, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    from uniaudio_rt.decoder.detokenizer import Detokenizer

    det = Detokenizer.from_pretrained(str(tmp_path))
    assert det(tok, generator=torch.Generator().manual_seed(0)).shape == (1, det.flow.cfg.mel_frames(8) * 32)
    os.remove(tmp_path / "hift.pt")
    with pytest.raises(FileNotFoundError, match="hift.pt"):
        load_decoder(str(tmp_path))
