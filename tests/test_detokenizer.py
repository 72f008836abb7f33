"""Detokenizer on random tiny weights: token -> mel -> wav end to end, and stream() with bounded state."""

import pytest
import torch

from uniaudio_rt.decoder.detokenizer import Detokenizer, StreamConfig


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
