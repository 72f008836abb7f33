"""Log-mel front end against transformers.WhisperFeatureExtractor, on real speech."""

import numpy as np
import pytest
import torch

from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.mel import log_mel_spectrogram, mel_filters

transformers = pytest.importorskip("transformers")
from transformers import WhisperFeatureExtractor  # noqa: E402


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_matches_whisper_feature_extractor(speech_files, n_mels):
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    for path in speech_files[:3]:
        wav = to_mono_16k(path)
        ref = fe(wav.numpy(), sampling_rate=16000, return_tensors="np", padding="longest",
                 pad_to_multiple_of=640).input_features[0]
        padded = torch.nn.functional.pad(wav, (0, (-wav.numel()) % 640))
        ours = log_mel_spectrogram(padded, n_mels).numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-4, path


def test_mel_30s_window_matches(speech_files):
    """The classic Whisper input: audio zero-padded to 30 s, 3000 frames."""
    fe = WhisperFeatureExtractor(feature_size=80)
    wav = to_mono_16k(speech_files[0])
    ref = fe(wav.numpy(), sampling_rate=16000, return_tensors="np").input_features[0]
    ours = log_mel_spectrogram(torch.nn.functional.pad(wav, (0, 480000 - wav.numel())), 80).numpy()
    assert ours.shape == (80, 3000)
    assert np.abs(ours - ref).max() <= 1e-4


def test_mel_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    for n in (80, 128):
        ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n, min_frequency=0.0,
                              max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
        assert np.abs(mel_filters(n) - ref.T).max() <= 1e-7


def test_batched_mel_equals_single():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16000, generator=g) * 0.1, torch.randn(16000, generator=g) * 0.3
    both = log_mel_spectrogram(torch.stack([a, b]))
    assert torch.allclose(both[0], log_mel_spectrogram(a)) and torch.allclose(both[1], log_mel_spectrogram(b))


def test_streaming_safe_floor_option_has_no_global_dependency():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32000, generator=g) * 1e-4
    loud = x.clone()
    loud[16000:] *= 1e4  # a loud second half raises the max-8 floor over the quiet first half ...
    whisper_a, whisper_b = log_mel_spectrogram(x), log_mel_spectrogram(loud)
    assert not torch.allclose(whisper_a[:, :90], whisper_b[:, :90])
    # ... but not without the floor
    assert torch.allclose(log_mel_spectrogram(x, floor_db=None)[:, :90],
                          log_mel_spectrogram(loud, floor_db=None)[:, :90])
