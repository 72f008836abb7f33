"""Streaming tokenization: exact for streaming-capable models, for every chunking (property test)."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_model
from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.streaming import StreamingBatch, StreamingTokenizer, streaming_mode
from uniaudio_rt.tokenizer import Tokenizer

STREAMING = dict(encoder_causal_convolution=True, quantize_causal_block_size=8, mel_floor_db=None)


@pytest.fixture(scope="module")
def speech(speech_files):
    return torch.cat([to_mono_16k(p) for p in speech_files[:2]])


@pytest.fixture(scope="module")
def stream_tok():
    return Tokenizer(make_model(seed=1, **STREAMING))


def run_stream(st_tok, wav, sizes):
    out, i, k = [], 0, 0
    while i < wav.numel():
        n = sizes[k % len(sizes)]
        out += st_tok.push(wav[i: i + n])
        i, k = i + n, k + 1
    return out + st_tok.flush()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=1, max_value=24000), min_size=1, max_size=6))
def test_exact_streaming_equals_offline_for_any_chunking(stream_tok, speech, sizes):
    expected = stream_tok.encode(speech, 16000)
    assert run_stream(StreamingTokenizer(stream_tok), speech, sizes) == expected


@pytest.mark.parametrize("over", [dict(pooling_position=2), dict(quantize_causal_block_size=None,
                                                                   encoder_causal_attention=True)])
def test_exact_streaming_other_layouts(speech, over):
    tok = Tokenizer(make_model(seed=2, **{**STREAMING, **over}))
    assert streaming_mode(tok.config) == "exact"
    assert run_stream(StreamingTokenizer(tok), speech, [777, 3]) == tok.encode(speech, 16000)


def test_exact_streaming_crosses_30s_boundary(stream_tok, speech):
    wav = speech.repeat(int(np.ceil(33 * 16000 / speech.numel())))[: 33 * 16000 + 77]
    st = StreamingTokenizer(stream_tok)
    got = run_stream(st, wav, [16000 * 7 + 13])
    assert got == stream_tok.encode(wav, 16000)
    assert st.buffered_samples == 0


def test_single_sample_pushes_and_bounded_buffer(stream_tok, speech):
    wav = speech[:9000]
    st = StreamingTokenizer(stream_tok)
    out = []
    for x in wav:
        out += st.push(x[None])
    out += st.flush()
    assert out == stream_tok.encode(wav, 16000)


def test_tokens_arrive_while_audio_streams(stream_tok, speech):
    st = StreamingTokenizer(stream_tok)
    early = st.push(speech[:32000])  # 2 s: all blocks of 8 conv frames (160 ms) but the last are done
    assert len(early) >= 2 * 25 - 8


def test_window_mode_for_full_attention_models(speech, tiny_model_dir):
    tok = Tokenizer.from_pretrained(tiny_model_dir)
    assert streaming_mode(tok.config) == "window"
    with pytest.raises(ValueError, match="exact streaming needs"):
        StreamingTokenizer(tok, mode="exact")
    offline = tok.encode(speech, 16000)
    # with a left context and look-ahead covering the whole clip, the window sees what offline sees
    full = StreamingTokenizer(tok, lookahead_ms=30000, left_context_ms=30000)
    assert run_stream(full, speech, [1280]) == offline
    short = StreamingTokenizer(tok, lookahead_ms=320, left_context_ms=1000)
    got = run_stream(short, speech, [1280])
    assert len(got) == len(offline)


def test_streaming_batch_sessions_are_independent(stream_tok, speech):
    b = StreamingBatch(stream_tok)
    b.open("a")
    b.open("b")
    out = {"a": [], "b": []}
    half = speech.numel() // 2
    for i in range(0, speech.numel(), 4000):
        r = b.push({"a": speech[i: i + 4000], "b": speech[half:][i: i + 4000]} if i < half else
                   {"a": speech[i: i + 4000]})
        for k, v in r.items():
            out[k] += v
    out["a"] += b.close("a")
    out["b"] += b.close("b")
    assert out["a"] == stream_tok.encode(speech, 16000)
    assert out["b"] == stream_tok.encode(speech[half:], 16000)
    with pytest.raises(ValueError, match="unknown session"):
        b.push({"zzz": speech[:10]})


def test_bad_stream_input(stream_tok):
    st = StreamingTokenizer(stream_tok)
    with pytest.raises(ValueError, match="mono 16 kHz"):
        st.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        st.push(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="mode must be"):
        StreamingTokenizer(stream_tok, mode="fast")
    assert st.flush() == []


def test_streaming_batch_window_mode_equals_single_sessions(tiny_model_dir, speech):
    tok = Tokenizer.from_pretrained(tiny_model_dir, batch_size=3)
    kw = dict(lookahead_ms=640, left_context_ms=2000, step_ms=160)
    starts = {"a": 0, "b": 7000, "c": 15000, "d": 22222}
    singles = {}
    for s, o in starts.items():
        singles[s] = run_stream(StreamingTokenizer(tok, **kw), speech[o:], [2560])
    b = StreamingBatch(tok, **kw)
    got = {s: [] for s in starts}
    for s in starts:
        b.open(s)
    for i in range(0, speech.numel(), 2560):
        r = b.push({s: speech[o:][i: i + 2560] for s, o in starts.items() if i < speech.numel() - o})
        for s, v in r.items():
            got[s] += v
    for s in starts:
        got[s] += b.close(s)
        assert got[s] == singles[s], s


def test_streaming_batch_exact_mode_batches_blocks(speech):
    """Four exact-mode sessions at different offsets (caches of different lengths), batch size 3."""
    tok = Tokenizer(make_model(seed=3, **STREAMING), batch_size=3)
    starts = {"a": 0, "b": 3000, "c": 11000, "d": 20000}
    b = StreamingBatch(tok)
    got = {s: [] for s in starts}
    for s in starts:
        b.open(s)
    for i in range(0, speech.numel(), 1700):
        r = b.push({s: speech[o:][i: i + 1700] for s, o in starts.items() if i < speech.numel() - o})
        for s, v in r.items():
            got[s] += v
    for s, o in starts.items():
        got[s] += b.close(s)
        assert got[s] == tok.encode(speech[o:], 16000), s
