"""SAP training pieces that need no model weights: targets, metrics, config, batch plan."""

import json

import pytest

from uniaudio_rt.train.config import TrainConfig
from uniaudio_rt.train.loop import BatchPlan, lr_factor, make_batches, source_repeats
from uniaudio_rt.train.targets import edit_counts, error_rate, recall_counts, recall_rate, normalize_text, parse_transcription, render_target

SAP = {"transcription": 'Please enter "your" code.',
       "paralinguistics": {"age": None, "gender": "Female", "emotion": None, "accent": "en-US",
                           "prosody": "mid pitch (184 Hz), normal rate (4.3 syl/s)",
                           "timbre": "neutral (spectral centroid 1188 Hz)"},
       "nonLinguisticEvents": []}
EVENT = {"transcription": None, "paralinguistics": {k: None for k in SAP["paralinguistics"]},
         "nonLinguisticEvents": ["dog"]}


def test_render_sap_drops_nulls_and_numbers():
    t = render_target(SAP, "sap")
    obj = json.loads(t)
    assert list(obj) == ["transcription", "paralinguistics"]
    assert obj["paralinguistics"] == {"gender": "Female", "accent": "en-US", "prosody": "mid pitch, normal rate",
                                      "timbre": "neutral"}
    assert json.loads(render_target(EVENT, "sap")) == {"nonLinguisticEvents": ["dog"]}
    assert render_target(SAP, "transcript") == SAP["transcription"]
    assert render_target(EVENT, "transcript") == ""
    with pytest.raises(ValueError):
        render_target(SAP, "bogus")


def test_parse_transcription_lenient():
    t = render_target(SAP, "sap")
    assert parse_transcription(t, "sap") == SAP["transcription"]
    assert parse_transcription(t[:32], "sap") == "Please enter "  # cut inside an escape
    assert parse_transcription('{"transcription":"half a sent', "sap") == "half a sent"
    assert parse_transcription('{"nonLinguisticEvents":["dog"]}', "sap") == ""
    assert parse_transcription("garbage", "sap") == ""
    assert parse_transcription(" hello ", "transcript") == "hello"


def test_error_rates():
    assert normalize_text("Hello, World!") == "hello world"
    assert error_rate(["hello world"], ["hello world"]) == 0.0
    assert error_rate(["abcd"], ["abed"], "char") == pytest.approx(0.25)
    assert error_rate(["a b c d"], ["a b"], "word") == pytest.approx(0.5)
    assert error_rate(["ab"], [""], "char") == pytest.approx(1.0)


def test_edit_counts_per_pair_sum_to_error_rate():
    refs, hyps = ["Hello, world", "abcd", "a b c"], ["hello word", "", "a x c d"]
    assert edit_counts(refs, hyps, "char") == [(1, 11), (4, 4), (3, 5)]
    assert edit_counts(refs, hyps, "word") == [(1, 2), (1, 1), (2, 3)]
    for unit in ("char", "word"):
        counts = edit_counts(refs, hyps, unit)
        assert error_rate(refs, hyps, unit) == pytest.approx(sum(e for e, _ in counts) / sum(n for _, n in counts))
    with pytest.raises(ValueError, match="2 references but 1"):
        edit_counts(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unit"):
        edit_counts(["a"], ["a"], "phone")


def test_recall_ignores_insertions():
    ref = "please enter your agent number"
    assert recall_counts([ref], ["please please please enter your your number number"]) == [(4, 5)]
    assert recall_counts([ref], [""]) == [(0, 5)] and recall_counts([ref], [ref.upper() + "!"]) == [(5, 5)]
    assert recall_counts([ref], ["number agent your enter please"]) == [(1, 5)]   # in order only
    assert recall_counts(["abc"], ["xaxbxc"], "char") == [(3, 3)]
    assert recall_rate([ref, "a b"], ["enter agent", "zzz"]) == pytest.approx(2 / 7)
    # an error rate grows with a loop, the recall does not
    loop = "please enter " * 10
    assert error_rate([ref], [loop], "word") > 3 and recall_rate([ref], [loop]) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="1 references but 2"):
        recall_counts([ref], ["a", "b"])


def test_config_validation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("target: sap\nsteps: 5\ncorpus: x\n")
    cfg = TrainConfig.load(str(p), steps=7)
    assert cfg.steps == 7 and cfg.corpus == "x"
    p.write_text("target: sap\nstepz: 5\n")
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.load(str(p))
    with pytest.raises(ValueError, match="target"):
        TrainConfig(target="words").validate()
    with pytest.raises(ValueError, match="frozen"):
        TrainConfig(sae=True, sae_source=0, frozen_positions=1).validate()


def test_batches_fit_cover_and_are_deterministic():
    lengths = [5, 50, 7, 120, 33, 33, 1, 90, 64, 12] * 7
    b = make_batches(lengths, 200, seed=3, epoch=0)
    assert sorted(i for x in b for i in x) == list(range(len(lengths)))
    assert all(len(x) * max(lengths[i] for i in x) <= 200 or len(x) == 1 for x in b)
    assert b == make_batches(lengths, 200, seed=3, epoch=0)
    assert b != make_batches(lengths, 200, seed=3, epoch=1)
    plan = BatchPlan(lengths, 200, 3)
    assert plan(0) == b[0] and plan(plan.per_epoch) == make_batches(lengths, 200, 3, 1)[0]
    # oversampling: clip i appears repeats[i] times per epoch, the plan is still deterministic
    reps = [1, 3, 0, 1, 2, 1, 1, 1, 1, 4] * 7
    r = make_batches(lengths, 200, seed=3, epoch=0, repeats=reps)
    assert sorted(i for x in r for i in x) == sorted(i for i, n in enumerate(reps) for _ in range(n))
    assert r == BatchPlan(lengths, 200, 3, reps)._epochs[0]
    with pytest.raises(ValueError, match="repeats"):
        make_batches(lengths, 200, 3, 0, repeats=[1])
    rows = [{"source": "a"}, {"source": "b"}, {"source": "a"}]
    assert source_repeats(rows, {}) is None and source_repeats(rows, {"a": 4}) == [4, 1, 4]
    with pytest.raises(ValueError, match="no train clips"):
        source_repeats(rows, {"c": 2})
    with pytest.raises(ValueError, match="source_repeats"):
        TrainConfig.from_dict({"source_repeats": {"a": 1.5}})
    # YAML 1.1 reads 1e-4 as a string and 1 as an int: float fields take both, a non-number is named
    cfg = TrainConfig.from_dict({"lr_decoder": "1e-4", "ema_decay": 1})
    assert cfg.lr_decoder == 1e-4 and isinstance(cfg.ema_decay, float)
    with pytest.raises(ValueError, match="lr_encoder must be a number"):
        TrainConfig.from_dict({"lr_encoder": "fast"})


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    assert all(lr_factor(s, cfg) >= lr_factor(s + 1, cfg) for s in range(10, 100))
