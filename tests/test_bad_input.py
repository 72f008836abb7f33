"""Bad input must raise a ValueError that names the problem."""

import numpy as np
import pytest
import torch

from uniaudio_rt.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return Tokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("audio,sr,msg", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.array([0.0, np.nan, 0.1], np.float32), 16000, "NaN/inf"),
    (np.array([0.0, np.inf], np.float32), 16000, "NaN/inf"),
    (np.zeros((2, 3, 100), np.float32), 16000, "expected \\(samples,\\)"),
    (np.zeros((16000, 2), np.float32), 16000, "looks like \\(samples, channels\\)"),
    (np.zeros(1000, np.complex64), 16000, "real-valued"),
    (np.zeros(1000, np.float32), None, "sample_rate is required"),
    (np.zeros(1000, np.float32), 0, "outside the supported range"),
    (np.zeros(1000, np.float32), -16000, "outside the supported range"),
    (np.zeros(1000, np.float32), 22050.5, "positive integer"),
    (np.zeros(1000, np.float32), "16k", "positive integer"),
    (torch.zeros(0), 16000, "empty"),
    ([0.1, 0.2], 16000, "expected a path, numpy array or torch tensor"),
])
def test_bad_arrays(tok, audio, sr, msg):
    with pytest.raises(ValueError, match=msg):
        tok.encode(audio, sr)


def test_corrupt_file(tok, tmp_path):
    p = tmp_path / "corrupt.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    with pytest.raises(ValueError, match="cannot decode audio"):
        tok.encode(str(p))


def test_missing_file_and_directory(tok, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        tok.encode(str(tmp_path / "nope.wav"))
    with pytest.raises(ValueError, match="is a directory"):
        tok.encode(str(tmp_path))


def test_encode_batch_needs_a_sequence(tok):
    with pytest.raises(ValueError, match="sequence of inputs"):
        tok.encode_batch(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="2 sample rates for 1 inputs"):
        tok.encode_batch([np.zeros(100, np.float32)], [16000, 8000])
