"""SAP targets: the validator's field names, allowed values and types; measured prosody/timbre."""

import copy
import json

import numpy as np
import pytest

from uniaudio_rt.data.decode import SAMPLE_RATE
from uniaudio_rt.data.sap import (SAPError, build_sap, count_syllables, describe_prosody, describe_timbre,
                                  measure_voice, validate_sap)
from uniaudio_rt.data.sources import event_class

GOOD = {"transcription": "hello there",
        "paralinguistics": {"age": None, "gender": "Female", "emotion": None, "accent": "en-US",
                            "prosody": "mid pitch (190 Hz)", "timbre": None},
        "nonLinguisticEvents": []}


def test_valid_sap_object_and_json_text():
    validate_sap(GOOD)
    validate_sap(json.dumps(GOOD))
    assert build_sap(transcription="hi", gender="Male", events=["dog"])["nonLinguisticEvents"] == ["dog"]


@pytest.mark.parametrize("path,value,match", [
    (("paralinguistics", "gender"), "female", "gender must be one of"),
    (("paralinguistics", "age"), "Teen", "age must be one of"),
    (("paralinguistics", "emotion"), "Joy", "emotion must be one of"),
    (("paralinguistics", "prosody"), 3.0, "prosody must be a string or null"),
    (("transcription",), 12, "transcription must be a string or null"),
    (("nonLinguisticEvents",), "dog", "nonLinguisticEvents must be a list"),
    (("nonLinguisticEvents",), [""], "nonLinguisticEvents must be a list"),
])
def test_validator_rejects_bad_values(path, value, match):
    bad = copy.deepcopy(GOOD)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SAPError, match=match):
        validate_sap(bad)


def test_validator_rejects_field_names():
    bad = copy.deepcopy(GOOD)
    bad["paralinguistics"]["sex"] = bad["paralinguistics"].pop("gender")
    with pytest.raises(SAPError, match="paralinguistics fields"):
        validate_sap(bad)
    with pytest.raises(SAPError, match="SAP fields"):
        validate_sap({**GOOD, "extra": 1})
    with pytest.raises(SAPError, match="not valid JSON"):
        validate_sap("{nope")


def _voiced(f0: float, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)).astype(np.float32)


@pytest.mark.parametrize("f0", [110.0, 180.0, 260.0])
def test_measured_f0_of_harmonic_tone(f0):
    m = measure_voice(_voiced(f0), "ta ta ta ta ta ta")
    assert abs(m.f0_median_hz - f0) / f0 < 0.03
    assert m.f0_spread_semitones < 0.5
    assert m.syllables_per_second == pytest.approx(6 / 1.5, abs=0.01)
    assert describe_prosody(m).startswith({110.0: "low", 180.0: "mid", 260.0: "high"}[f0])
    assert describe_timbre(m) is not None


def test_unvoiced_noise_has_no_prosody():
    rng = np.random.default_rng(0)
    m = measure_voice(rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1)
    assert describe_prosody(m) is None and describe_timbre(m) is None and m.syllables_per_second is None


def test_syllables_and_event_classes():
    assert count_syllables("Please enter your password") == 7
    assert count_syllables("Активировано") == 6
    assert event_class("dog_bark2") == "dog"
    assert event_class("WindMill1") == "windmill"
    assert event_class("FireStation2") == "fire station"
    assert event_class("Blacksmith1") == "blacksmith"
    assert event_class("123") is None
