"""SAP targets (speech + paralinguistics + non-linguistic events) per clip, and their validator.

Target layout::

    {"transcription": str | null,
     "paralinguistics": {"age", "gender", "emotion", "accent", "prosody", "timbre"},
     "nonLinguisticEvents": [str, ...]}

Labels come from the source (file names, folder names, shipped text) and are null when the source does
not state them. ``prosody`` and ``timbre`` are the only derived fields: for speech clips they describe
measurements (autocorrelation F0, RMS energy, speaking rate from the transcript, spectral centroid),
see :func:`measure_voice` and docs/DATA.md for the thresholds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .decode import SAMPLE_RATE

AGES = ("Child", "Adult", "Elderly")
GENDERS = ("Female", "Male")
EMOTIONS = ("Anger", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
PARALINGUISTIC_FIELDS = ("age", "gender", "emotion", "accent", "prosody", "timbre")
TOP_FIELDS = ("transcription", "paralinguistics", "nonLinguisticEvents")
_ALLOWED = {"age": AGES, "gender": GENDERS, "emotion": EMOTIONS}

# vowel letters (Latin incl. accents, Cyrillic, Greek) for syllable counting of a transcript
_VOWEL_GROUP = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœěůąęаеёиоуыэюяіїєαεηιουω]+", re.IGNORECASE)


class SAPError(ValueError):
    """A SAP target that breaks the schema."""


@dataclass(frozen=True)
class VoiceMeasures:
    f0_median_hz: Optional[float]  # None when fewer than 5 voiced frames
    f0_spread_semitones: Optional[float]
    voiced_fraction: float
    loudness_dbfs: float
    spectral_centroid_hz: float
    syllables_per_second: Optional[float]  # None without a transcript in a vowel-writing script


def count_syllables(text: str) -> int:
    return len(_VOWEL_GROUP.findall(text))


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    if x.size < size:
        x = np.pad(x, (0, size - x.size))
    n = 1 + (x.size - size) // hop
    idx = np.arange(size)[None, :] + hop * np.arange(n)[:, None]
    return x[idx]


def autocorrelation_lags(windowed: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 60.0,
                         fmax: float = 400.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per windowed frame (n, size): the lag (samples) of the highest normalised autocorrelation peak
    between ``sample_rate // fmax`` and ``sample_rate // fmin``, that peak's value (1 = periodic) and
    the frame's power spectrum (n, size + 1) (zero-padded to 2 * size, so the autocorrelation is linear)."""
    size = windowed.shape[1]
    lo, hi = sample_rate // int(fmax), sample_rate // int(fmin)
    if hi >= size:
        raise ValueError(f"frames of {size} samples are too short for f0 down to {fmin} Hz at {sample_rate} Hz")
    power = np.abs(np.fft.rfft(windowed, n=2 * size, axis=1)) ** 2
    ac = np.fft.irfft(power, axis=1)[:, :size]
    ac = ac / (ac[:, :1] + 1e-12)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    return lag, ac[np.arange(ac.shape[0]), lag], power


def pitch_track(x: np.ndarray, sample_rate: int, size: int, hop: int, pad: int = 0, fmin: float = 60.0,
                fmax: float = 400.0, voicing: float = 0.5, active_db: float = 30.0) -> np.ndarray:
    """Frame-wise autocorrelation F0 in Hz, 0 for unvoiced frames (the rule of :func:`measure_voice`:
    voiced = RMS within ``active_db`` of the loudest frame and normalised autocorrelation peak above
    ``voicing``). ``x`` is zero-padded by ``pad`` samples on the left (and on the right as needed);
    frame ``i`` covers padded samples ``[i * hop, i * hop + size)``. Returns ``len(x) // hop`` frames
    when ``2 * pad + hop >= size`` (``pad = (size - hop) // 2`` centres frame i on ``i * hop + hop / 2``)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size // hop
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    need = (n - 1) * hop + size
    xp = np.pad(x, (pad, max(0, need - pad - x.size)))[:need]
    raw = _frames(xp, size, hop)
    rms = np.sqrt(np.mean(raw ** 2, axis=1) + 1e-12)
    active = rms > rms.max() * 10 ** (-active_db / 20)
    lag, peak, _ = autocorrelation_lags(raw * np.hanning(size), sample_rate, fmin, fmax)
    voiced = active & (peak > voicing)
    return np.where(voiced, sample_rate / lag, 0.0).astype(np.float32)


def measure_voice(x: np.ndarray, transcript: Optional[str] = None) -> VoiceMeasures:
    """Frame-wise autocorrelation F0 (60-400 Hz, 40 ms Hann frames, 10 ms hop; a frame is active when
    its RMS is within 30 dB of the loudest frame's, voiced when also its normalised autocorrelation
    peak exceeds 0.5), RMS loudness (dBFS) of the active frames, magnitude-spectrum centroid of the
    active frames, and syllables/s from the transcript's vowel groups."""
    x = np.asarray(x, dtype=np.float64)
    size, hop = 640, 160
    raw = _frames(x, size, hop)
    fr = raw * np.hanning(size)
    rms = np.sqrt(np.mean(raw ** 2, axis=1) + 1e-12)
    active = rms > rms.max() * 10 ** (-30 / 20)
    lag, peak, power = autocorrelation_lags(fr, SAMPLE_RATE)
    voiced = active & (peak > 0.5)
    f0 = SAMPLE_RATE / lag[voiced]
    freqs = np.fft.rfftfreq(2 * size, 1 / SAMPLE_RATE)
    magnitude = np.sqrt(power[active]).sum(axis=0)
    centroid = float((freqs * magnitude).sum() / (magnitude.sum() + 1e-12))
    loud = float(20 * np.log10(np.sqrt(np.mean(raw[active] ** 2)) + 1e-9))
    duration = x.size / SAMPLE_RATE
    syl = count_syllables(transcript) if transcript else 0
    return VoiceMeasures(
        f0_median_hz=float(np.median(f0)) if f0.size >= 5 else None,
        f0_spread_semitones=float(np.std(12 * np.log2(f0 / np.median(f0)))) if f0.size >= 5 else None,
        voiced_fraction=float(voiced.mean()),
        loudness_dbfs=round(loud, 1),
        spectral_centroid_hz=round(centroid, 1),
        syllables_per_second=round(syl / duration, 2) if syl and duration > 0 else None)


def describe_prosody(m: VoiceMeasures) -> Optional[str]:
    """Words for measured pitch level, pitch movement, speaking rate and loudness; None if unvoiced."""
    if m.f0_median_hz is None:
        return None
    f0 = m.f0_median_hz
    level = "low" if f0 < 140 else "mid" if f0 < 220 else "high"
    spread = m.f0_spread_semitones
    movement = "flat" if spread < 2 else "moderate" if spread < 4 else "expressive"
    parts = [f"{level} pitch ({f0:.0f} Hz)", f"{movement} intonation ({spread:.1f} st)"]
    if m.syllables_per_second is not None:
        r = m.syllables_per_second
        parts.append(f"{'slow' if r < 3 else 'normal' if r < 5.5 else 'fast'} rate ({r:.1f} syl/s)")
    db = m.loudness_dbfs
    parts.append(f"{'quiet' if db < -30 else 'moderate' if db < -18 else 'loud'} ({db:.0f} dBFS)")
    return ", ".join(parts)


def describe_timbre(m: VoiceMeasures) -> Optional[str]:
    if m.f0_median_hz is None:
        return None
    c = m.spectral_centroid_hz
    return f"{'dark' if c < 1000 else 'neutral' if c < 2000 else 'bright'} (spectral centroid {c:.0f} Hz)"


def build_sap(transcription: Optional[str] = None, gender: Optional[str] = None, age: Optional[str] = None,
              emotion: Optional[str] = None, accent: Optional[str] = None, prosody: Optional[str] = None,
              timbre: Optional[str] = None, events: Optional[list[str]] = None) -> dict[str, Any]:
    sap = {"transcription": transcription,
           "paralinguistics": {"age": age, "gender": gender, "emotion": emotion, "accent": accent,
                               "prosody": prosody, "timbre": timbre},
           "nonLinguisticEvents": list(events or [])}
    validate_sap(sap)
    return sap


def validate_sap(sap: Any) -> None:
    """Raise SAPError naming the first field that breaks the schema (names, types, allowed values)."""
    if isinstance(sap, (str, bytes)):
        try:
            sap = json.loads(sap)
        except json.JSONDecodeError as e:
            raise SAPError(f"SAP is not valid JSON: {e}") from None
    if not isinstance(sap, dict):
        raise SAPError(f"SAP must be an object, got {type(sap).__name__}")
    if set(sap) != set(TOP_FIELDS):
        raise SAPError(f"SAP fields must be {list(TOP_FIELDS)}, got {sorted(sap)}")
    if sap["transcription"] is not None and not isinstance(sap["transcription"], str):
        raise SAPError(f"transcription must be a string or null, got {sap['transcription']!r}")
    para = sap["paralinguistics"]
    if not isinstance(para, dict) or set(para) != set(PARALINGUISTIC_FIELDS):
        got = sorted(para) if isinstance(para, dict) else type(para).__name__
        raise SAPError(f"paralinguistics fields must be {list(PARALINGUISTIC_FIELDS)}, got {got}")
    for key in PARALINGUISTIC_FIELDS:
        value = para[key]
        if value is None:
            continue
        if not isinstance(value, str):
            raise SAPError(f"paralinguistics.{key} must be a string or null, got {value!r}")
        if key in _ALLOWED and value not in _ALLOWED[key]:
            raise SAPError(f"paralinguistics.{key} must be one of {list(_ALLOWED[key])} or null, got {value!r}")
    events = sap["nonLinguisticEvents"]
    if not isinstance(events, list) or not all(isinstance(e, str) and e for e in events):
        raise SAPError(f"nonLinguisticEvents must be a list of non-empty strings, got {events!r}")
