"""Detokenizer on random tiny weights: token -> mel -> wav end to end, and stream() with bounded state."""

import pytest
import torch

from uniaudio_rt.decoder.detokenizer import Detokenizer, SamplingConfig, StreamConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tiny models run faster on one thread


def tokens(t, seed=0):
    return torch.randint(0, 50, (t,), generator=torch.Generator().manual_seed(seed))


def test_one_shot_token_to_wav():
    d = Detokenizer.random_tiny()
    wav = d(tokens(13), generator=torch.Generator().manual_seed(0))
    assert wav.shape == (1, d.flow.cfg.mel_frames(13) * d.hift.cfg.upsample_factor)
    assert torch.isfinite(wav).all() and wav.abs().max() <= d.hift.cfg.audio_limit


@pytest.mark.parametrize("cuts", [[3, 4, 27, 28, 45, 60], [60], [1, 2, 3, 10, 11, 59, 60]])
def test_vocoder_stream_equals_one_shot(cuts):
    """With left/right context covering the tiny HiFT's receptive field, chunked == one-shot exactly
    (NSF phase carried, left-context source reused, iSTFT tail carried)."""
    d = Detokenizer.random_tiny(stream_config=StreamConfig(hift_left=8, hift_lookahead=8))
    mel = torch.randn(1, 16, 60, generator=torch.Generator().manual_seed(0))
    one, _ = d.hift.inference(mel, generator=torch.Generator().manual_seed(1), add_noise=False)
    state = d.vocoder_state(1, torch.Generator().manual_seed(1))
    parts, lo = [], 0
    for hi in cuts:
        wav, state = d.vocoder_step(state, mel[:, :, lo:hi], add_noise=False)
        parts.append(wav)
        assert state.mel.shape[-1] <= 8 + 8 + (hi - lo)  # bounded: left context + lookahead + one chunk
        lo = hi
        assert state.source.shape[-1] <= 8 * d.hift.cfg.upsample_factor
    wav, state = d.vocoder_step(state, mel[:, :, :0], final=True, add_noise=False)
    parts.append(wav)
    torch.testing.assert_close(torch.cat(parts, -1), one, atol=1e-5, rtol=1e-5)


def test_vocoder_latency_is_the_lookahead():
    d = Detokenizer.random_tiny(stream_config=StreamConfig(hift_left=8, hift_lookahead=8))
    state = d.vocoder_state(1)
    wav, state = d.vocoder_step(state, torch.randn(1, 16, 8))
    assert wav.shape[-1] == 0 and state.emitted == 0
    wav, state = d.vocoder_step(state, torch.randn(1, 16, 5))
    assert state.emitted == 5 and wav.shape[-1] == 5 * 32 - 8  # minus n_fft // 2 held by the iSTFT


def test_flow_step_waits_for_complete_blocks_and_bounds_state():
    sc = StreamConfig(prompt_tokens=6, encoder_left_blocks=2)
    d = Detokenizer.random_tiny(stream_config=sc)
    block = d.flow.cfg.encoder.block_size
    state = d.flow_state()
    mel, state = d.flow_step(state, tokens(block - 1)[None])
    assert mel.shape[-1] == 0 and state.pending.shape[1] == block - 1 and state.n_tokens == 0
    total = block - 1
    for i in range(6):
        mel, state = d.flow_step(state, tokens(5, seed=i)[None], generator=torch.Generator().manual_seed(i))
        total += 5
        assert state.n_tokens == total // block * block
        assert state.kv[0][0].shape[2] <= sc.encoder_left_blocks * block
        assert state.h.shape[1] <= sc.prompt_tokens
        assert state.mel.shape[-1] == (d.flow.cfg.mel_frames(state.n_tokens) -
                                       d.flow.cfg.mel_frames(state.window_start))
        assert torch.isfinite(mel).all()
    mel, state = d.flow_step(state, tokens(0)[None], final=True)
    assert state.n_tokens == total and state.pending.shape[1] == 0


def test_stream_end_to_end():
    d = Detokenizer.random_tiny(stream_config=StreamConfig(prompt_tokens=8, hift_left=8, hift_lookahead=8))
    tok = tokens(37)
    chunks = [tok[:5], tok[5:6], tok[6:20], tok[20:21], tok[21:]]
    out = list(d.stream(chunks, generator=torch.Generator().manual_seed(0)))
    assert len(out) >= 3  # audio arrives before the end of the stream
    wav = torch.cat(out, -1)
    assert wav.shape == (1, d.flow.cfg.mel_frames(37) * d.hift.cfg.upsample_factor)
    assert torch.isfinite(wav).all()
    again = torch.cat(list(d.stream(chunks, generator=torch.Generator().manual_seed(0))), -1)
    assert torch.equal(wav, again)
    assert list(d.stream([])) == []


def test_stream_with_full_attention_encoder_and_batch():
    """block_size 0 (the plain ConformerEncoder): every chunk is encoded at once; batch of 2."""
    from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
    from uniaudio_rt.decoder.flow import FlowDecoder
    from uniaudio_rt.decoder.hift import HiFTGenerator

    torch.manual_seed(0)
    d = Detokenizer(FlowDecoder(FlowConfig.tiny(block_size=0)), HiFTGenerator(HiFTConfig.tiny()),
                    StreamConfig(prompt_tokens=8, hift_left=8, hift_lookahead=8))
    tok = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    out = list(d.stream([tok[:, :7], tok[:, 7:8], tok[:, 8:]], generator=torch.Generator().manual_seed(0)))
    wav = torch.cat(out, -1)
    assert wav.shape == (2, d.flow.cfg.mel_frames(20) * 32) and torch.isfinite(wav).all()


def test_stream_config_is_checked():
    with pytest.raises(ValueError, match="StreamConfig.hift_lookahead must be >= 0, got -1"):
        StreamConfig(hift_lookahead=-1)


def test_sampling_config_reaches_the_sampler():
    """n_timesteps, cfg_rate and temperature change the one-shot and the streamed output as the Euler
    sampler says: an explicit setting equal to the config's default gives the same audio, temperature 0
    makes the output independent of the noise, and the streamed flow uses the same settings."""
    t = tokens(16)
    base = Detokenizer.random_tiny()
    cfm = base.flow.cfg.cfm
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = base(t, generator=g())
    same = Detokenizer(base.flow, base.hift, sampling=SamplingConfig(cfm.n_timesteps, cfm.inference_cfg_rate, 1.0))
    assert torch.equal(same(t, generator=g()), ref)
    for s in (SamplingConfig(n_timesteps=cfm.n_timesteps + 3), SamplingConfig(cfg_rate=0.0),
              SamplingConfig(temperature=0.5)):
        assert not torch.allclose(Detokenizer(base.flow, base.hift, sampling=s)(t, generator=g()), ref)
    # temperature 0: x_0 = 0, so the mel does not depend on the generator (HiFT's own noise does)
    cold = Detokenizer(base.flow, base.hift, sampling=SamplingConfig(temperature=0.0))
    mel = lambda s: cold.flow.inference(t[None], generator=torch.Generator().manual_seed(s),  # noqa: E731
                                        **cold.sampling.kwargs())
    assert torch.equal(mel(1), mel(2))
    # the reference Euler loop by hand, no guidance, 2 steps from x_0 = 0
    from uniaudio_rt.decoder.flow import t_schedule

    with torch.inference_mode():
        mu = base.flow.mu(t[None])
        spks = base.flow.speaker(None, 1, mu.device)
        x = torch.zeros_like(mu)
        ts = t_schedule(2, cfm.t_scheduler)
        for k in range(1, 3):
            x = x + float(ts[k] - ts[k - 1]) * base.flow.decoder.estimator(x, mu, ts[k - 1], spks, torch.zeros_like(mu))
    got = base.flow.inference(t[None], n_timesteps=2, cfg_rate=0.0, temperature=0.0)
    torch.testing.assert_close(got, x)
    # streaming uses the detokenizer's sampler: cold streamed mel is seed-independent too
    def streamed_mel(seed):
        fs = cold.flow_state()
        out = []
        for c in (t[None, :8], t[None, 8:]):
            m, fs = cold.flow_step(fs, c, generator=torch.Generator().manual_seed(seed))
            out.append(m)
        m, fs = cold.flow_step(fs, t[None, :0], final=True, generator=torch.Generator().manual_seed(seed))
        return torch.cat(out + [m], dim=-1)
    assert torch.equal(streamed_mel(1), streamed_mel(2))


@pytest.mark.parametrize("kwargs,msg", [({"n_timesteps": 0}, "n_timesteps must be a positive integer"),
                                        ({"n_timesteps": 2.5}, "n_timesteps must be a positive integer"),
                                        ({"cfg_rate": -0.1}, "cfg_rate must be a finite number >= 0"),
                                        ({"temperature": float("nan")}, "temperature must be a finite number >= 0")])
def test_sampling_config_is_checked(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SamplingConfig(**kwargs)


def test_segmented_decode_is_bounded_and_as_long_as_one_shot():
    """Detokenizer.segmented: the flow never sees more than one segment plus the prompt window (so time
    and memory grow linearly with the input), while the one-shot decode runs the flow over all of it;
    the waveform has the one-shot length and the segments are decoded in order through stream()."""
    sc = StreamConfig(prompt_tokens=8, hift_left=8, hift_lookahead=8)
    d = Detokenizer.random_tiny(stream_config=sc)
    seen = []
    forward = d.flow.decoder.forward
    d.flow.decoder.forward = lambda mu, *a, **k: seen.append(mu.shape[-1]) or forward(mu, *a, **k)
    tok = tokens(97)
    one = d(tok, generator=torch.Generator().manual_seed(0))
    assert seen == [d.flow.cfg.mel_frames(97)]
    seen.clear()
    wrapped = []
    seg = d.segmented(tok, 12, generator=torch.Generator().manual_seed(0),
                      wrap=lambda s: wrapped.extend(s) or iter(s))
    assert seg.shape == one.shape and torch.isfinite(seg).all()
    assert [s.shape[-1] for s in wrapped] == [12] * 8 + [1]
    block = d.flow.cfg.encoder.block_size
    bound = d.flow.cfg.mel_frames(sc.prompt_tokens + 12 + block)
    assert len(seen) >= 8 and max(seen) <= bound < d.flow.cfg.mel_frames(97)
    same = d.segmented(tok, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seg, same)
    streamed = torch.cat(list(d.stream(tok.split(12), generator=torch.Generator().manual_seed(0))), -1)
    assert torch.equal(seg, streamed)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="segment_tokens must be a positive integer"):
            d.segmented(tok, bad)
