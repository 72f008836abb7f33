"""The training-parity encoder against transformers' Whisper and against independent references."""

import numpy as np
import pytest
import torch

from uniaudio_rt.models import WhisperVQConfig, WhisperVQEncoder, vector_quantize_ref
from uniaudio_rt.models.encoder import EncoderOutput, attention_mask

transformers = pytest.importorskip("transformers")
from transformers import WhisperConfig  # noqa: E402
from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: E402

TINY = dict(num_mel_bins=80, d_model=64, encoder_layers=3, encoder_attention_heads=4,
            encoder_ffn_dim=128, max_source_positions=150)


def hf_encoder(**kw):
    torch.manual_seed(0)
    return WhisperEncoder(WhisperConfig(**{**TINY, **kw})).eval()


def randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "embed_positions" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("norm.weight") else 0.0))
    return module


@pytest.mark.parametrize("frames", [300, 120])
def test_transformer_stack_matches_transformers(frames):
    hf = randomize(hf_encoder())
    ours = WhisperVQEncoder(WhisperVQConfig(**TINY)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    mel = torch.randn(2, 80, frames)
    with torch.no_grad():
        # the full stack: convs, positions, all layers, final LayerNorm
        if frames == 2 * TINY["max_source_positions"]:
            ref = hf(mel).last_hidden_state
        else:  # HF insists on full-length input; run its pieces on the shorter input
            x = torch.nn.functional.gelu(hf.conv2(torch.nn.functional.gelu(hf.conv1(mel)))).transpose(1, 2)
            x = x + hf.embed_positions.weight[: x.shape[1]]
            for layer in hf.layers:
                x = layer(x, None)
                x = x[0] if isinstance(x, tuple) else x
            ref = hf.layer_norm(x)
        got = ours(mel).hidden_states
    assert (got - ref).abs().max().item() <= 1e-5


def test_each_layer_matches_transformers():
    hf = randomize(hf_encoder())
    ours = WhisperVQEncoder(WhisperVQConfig(**TINY)).eval()
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(3, 37, 64)
    with torch.no_grad():
        for a, b in zip(ours.layers, hf.layers):
            ref = b(x, None)
            ref = ref[0] if isinstance(ref, tuple) else ref
            assert (a(x) - ref).abs().max().item() <= 1e-5


def block_causal_reference(frame_mask, block):
    """Loop-built block-causal mask: query i sees key j iff j <= i or j is in i's block, and j is real."""
    b, t = frame_mask.shape
    out = np.zeros((b, 1, t, t), dtype=bool)
    for n in range(b):
        for i in range(t):
            for j in range(t):
                out[n, 0, i, j] = bool(frame_mask[n, j]) and (j <= i or j // block == i // block)
    return torch.from_numpy(out)


@pytest.mark.parametrize("t,block", [(10, 3), (17, 5), (8, 8)])
def test_block_causal_mask(t, block):
    fm = torch.ones(2, t, dtype=torch.bool)
    fm[1, t - 3:] = False
    assert torch.equal(attention_mask(fm, block_size=block), block_causal_reference(fm, block))
    causal = attention_mask(fm, causal=True)
    assert torch.equal(causal, block_causal_reference(fm, 1))


def numpy_nearest(x, codebook):
    x = x.detach().double().numpy().reshape(-1, x.shape[-1])
    c = codebook.detach().double().numpy()
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return d.argmin(1), d


def test_vector_quantize_matches_numpy_nearest_neighbour():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 50, 32, generator=g)
    cb = torch.randn(300, 32, generator=g)
    codes, idx = vector_quantize_ref(x, cb)
    ref, _ = numpy_nearest(x, cb)
    assert np.array_equal(idx.reshape(-1).numpy(), ref)
    assert torch.equal(codes, cb[idx])


def test_vector_quantize_ties_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    _, idx = vector_quantize_ref(x, cb)
    assert idx.tolist() == [0, 1, 0]


SAE_CFG = dict(TINY, encoder_layers=4, pooling_kernel_size=2, pooling_type="avg", pooling_position=0,
               quantize_vocab_size=97, quantize_position=3, encoder_residual_source_position=1,
               encoder_residual_target_position=3, use_residual_adapter=True, use_residual_gate=True)


def manual_forward(m, mel):
    """Independent re-statement of the UniAudio-Token forward up to the quantizer (no masks)."""
    f = torch.nn.functional
    x = f.gelu(m.conv2(f.gelu(m.conv1(mel)))).transpose(1, 2)
    x = x + m.embed_positions.weight[: x.shape[1]]
    x = f.avg_pool1d(x.transpose(1, 2), 2).transpose(1, 2)
    x = m.layers[0](x)
    shallow = x
    x = m.layers[2](m.layers[1](x))
    a = m.residual_adapter[2](f.gelu(m.residual_adapter[0](shallow)))
    gate = torch.sigmoid(m.residual_gate[2](torch.tanh(m.residual_gate[0](torch.cat([x, shallow], -1)))))
    y = f.layer_norm(x + gate * a, (x.shape[-1],), m.residual_output_norm.weight, m.residual_output_norm.bias)
    return y


def test_sae_quantizer_tokens_match_independent_computation():
    torch.manual_seed(0)
    m = randomize(WhisperVQEncoder(WhisperVQConfig(**SAE_CFG)), seed=5).eval()
    mel = torch.randn(2, 80, 160)
    with torch.no_grad():
        out = m(mel, stop_at_quantizer=True)
        y = manual_forward(m, mel)
    assert (out.pre_quant_states - y).abs().max().item() <= 1e-5
    ref, _ = numpy_nearest(y, m.codebook.weight)
    assert np.array_equal(out.token_ids.reshape(-1).numpy(), ref)
    assert out.token_ids.shape == (2, 40)  # 160 mel frames -> 80 (conv) -> 40 (pool)


def test_dead_sae_branch_is_skipped_for_tokens():
    """Public UAT layout: SAE target after the quantizer. Tokens must not depend on it or on later layers."""
    cfg = WhisperVQConfig(**dict(SAE_CFG, quantize_position=2, encoder_residual_target_position=4))
    torch.manual_seed(0)
    m = randomize(WhisperVQEncoder(cfg), seed=7).eval()
    mel = torch.randn(1, 80, 96)
    calls = []
    hooks = [m.layers[i].register_forward_hook(lambda *a, i=i: calls.append(i)) for i in range(4)]
    hooks.append(m.residual_gate.register_forward_hook(lambda *a: calls.append("sae")))
    with torch.no_grad():
        tokens, _ = m.encode_tokens(mel)
        assert calls == [0, 1]
        full = m(mel)
    assert "sae" in calls and 3 in calls
    assert torch.equal(tokens, full.token_ids)
    for h in hooks:
        h.remove()


def test_padding_mask_makes_batched_equal_single():
    cfg = WhisperVQConfig(**dict(SAE_CFG, quantize_causal_block_size=None))
    m = randomize(WhisperVQEncoder(cfg), seed=2).eval()
    g = torch.Generator().manual_seed(0)
    short = torch.randn(1, 80, 64, generator=g)
    long = torch.randn(1, 80, 160, generator=g)
    batch = torch.zeros(2, 80, 160)
    batch[0, :, :64] = short[0]
    batch[1] = long[0]
    mask = torch.zeros(2, 160, dtype=torch.bool)
    mask[0, :64] = True
    mask[1] = True
    with torch.no_grad():
        tb, mb = m.encode_tokens(batch, mask)
        ts, _ = m.encode_tokens(short)
        tl, _ = m.encode_tokens(long)
        hb = m(batch, mask, stop_at_quantizer=True).pre_quant_states
        hs = m(short, stop_at_quantizer=True).pre_quant_states
    assert int(mb[0].sum()) == 16
    assert torch.equal(tb[0][mb[0]], ts[0])
    assert torch.equal(tb[1], tl[0])
    assert (hb[0, :16] - hs[0]).abs().max().item() <= 1e-5


def test_causal_convolution_and_block_causal_attention_do_not_look_ahead():
    cfg = WhisperVQConfig(**dict(TINY, encoder_layers=2, pooling_kernel_size=2, pooling_type="avg",
                                 pooling_position=1, quantize_vocab_size=50, quantize_position=2,
                                 quantize_causal_block_size=8, encoder_causal_convolution=True))
    m = randomize(WhisperVQEncoder(cfg), seed=4).eval()
    mel = torch.randn(1, 80, 64)
    changed = mel.clone()
    changed[..., 48:] = torch.randn(1, 80, 16)  # alter everything from block 3 (conv frames 24..) on
    with torch.no_grad():
        a = m(mel, stop_at_quantizer=True).pre_quant_states
        b = m(changed, stop_at_quantizer=True).pre_quant_states
    # pooled frames 0..11 belong to blocks (of 4 pooled frames) 0..2, all before the change
    assert (a[:, :12] - b[:, :12]).abs().max().item() <= 1e-6
    assert (a[:, 12:] - b[:, 12:]).abs().max().item() > 1e-3


def test_training_mode_ema_commit_restart_and_straight_through():
    cfg = WhisperVQConfig(**dict(TINY, encoder_layers=2, quantize_vocab_size=64, quantize_position=2,
                                 quantize_ema_decay=0.9, quantize_restart_interval=2))
    torch.manual_seed(0)
    m = WhisperVQEncoder(cfg).train()
    before = m.codebook.weight.detach().clone()
    mel = torch.randn(2, 80, 40)
    out = m(mel, stop_at_quantizer=False)
    assert out.quantize_loss is not None and out.quantize_loss.item() > 0
    assert 1 <= out.num_active_codes <= 64
    assert not torch.equal(before, m.codebook.weight)  # EMA moved the codebook
    out.hidden_states.sum().backward()
    assert m.conv1.weight.grad is not None and m.conv1.weight.grad.abs().sum() > 0  # straight-through
    # second step hits the restart interval: dead codes are reseeded from real frames
    m.zero_grad()
    m(mel)
    assert m.quantize_ema_count == 2
    assert bool((m.ema_count >= cfg.quantize_ema_decay ** 2).all())


def test_normalized_commitment_does_not_reward_squeezing_the_vectors():
    """Scaling the quantized vectors (and the codebook with them) by s scales the plain commitment
    by s^2; divided by the vectors' spread it stays the same. Diagnostics report both."""
    torch.manual_seed(0)
    x = torch.randn(2, 30, 64)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    losses = {}
    for normalize in (False, True):
        for s in (1.0, 0.1):
            cfg = WhisperVQConfig(**dict(TINY, encoder_layers=1, quantize_vocab_size=16, quantize_position=1,
                                         quantize_ema_decay=0.9, quantize_commit_normalize=normalize))
            torch.manual_seed(1)
            m = WhisperVQEncoder(cfg).train()
            with torch.no_grad():
                m.codebook.weight.mul_(s)
            out = EncoderOutput(hidden_states=x, frame_mask=mask)
            y = (x * s).requires_grad_()
            m._quantize(y, mask, out)
            out.quantize_loss.backward()
            assert y.grad.abs().sum() > 0
            m_ = mask.reshape(-1)
            flat = (x * s).reshape(-1, 64)[m_]
            spread = ((flat - flat.mean(0)) ** 2).mean()
            assert out.quantize_spread == pytest.approx(float(spread), rel=1e-5)
            losses[normalize, s] = out.quantize_loss.item()
            assert out.quantize_relative_commit == pytest.approx(losses[normalize, s] / 0.25 / (1.0 if normalize else float(spread)), rel=1e-4)
    assert losses[False, 0.1] == pytest.approx(losses[False, 1.0] * 0.01, rel=1e-4)
    assert losses[True, 0.1] == pytest.approx(losses[True, 1.0], rel=1e-4)


def test_sae_diagnostics_in_training_mode():
    cfg = WhisperVQConfig(**dict(TINY, quantize_vocab_size=16, quantize_position=3, quantize_ema_decay=0.9,
                                 encoder_residual_source_position=1, encoder_residual_target_position=3,
                                 use_residual_adapter=True, use_residual_gate=True))
    torch.manual_seed(0)
    m = WhisperVQEncoder(cfg).train()
    out = m(torch.randn(1, 80, 40))
    assert out.sae_residual_ratio == 0.0          # the adapter's last layer starts at zero
    assert 0.0 < out.sae_gate_mean < 1.0
    with torch.no_grad():
        m.residual_adapter[2].bias.fill_(1.0)
    out = m(torch.randn(1, 80, 40))
    assert out.sae_residual_ratio > 0.0
    assert m.eval()(torch.randn(1, 80, 40)).sae_gate_mean is None   # training only


def test_training_mode_without_ema_has_codebook_loss():
    cfg = WhisperVQConfig(**dict(TINY, encoder_layers=1, quantize_vocab_size=16, quantize_position=1))
    m = WhisperVQEncoder(cfg).train()
    out = m(torch.randn(1, 80, 20))
    out.quantize_loss.backward()
    assert m.codebook.weight.grad is not None and m.codebook.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad,msg", [
    (dict(d_model=65), "multiple of encoder_attention_heads"),
    (dict(pooling_type="median"), "pooling_type"),
    (dict(encoder_residual_source_position=2), "both be set"),
    (dict(encoder_residual_source_position=3, encoder_residual_target_position=2), "source < target"),
    (dict(quantize_vocab_size=10, quantize_position=9), "quantize_position"),
])
def test_config_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        WhisperVQConfig(**dict(TINY, **bad))


def test_config_roundtrip_keeps_unknown_fields():
    d = dict(SAE_CFG, vocab_size=51865, decoder_layers=4, model_type="whisper")
    cfg = WhisperVQConfig.from_dict(d)
    assert cfg.extra["decoder_layers"] == 4
    back = cfg.to_dict()
    for k, v in d.items():
        assert back[k] == v


def test_too_long_input_is_rejected():
    m = WhisperVQEncoder(WhisperVQConfig(**TINY))
    with pytest.raises(ValueError, match="positions for at most 150"):
        m(torch.randn(1, 80, 302))
    with pytest.raises(ValueError, match="mel must be"):
        m(torch.randn(1, 81, 30))
