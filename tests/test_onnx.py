"""ONNX export + ONNX Runtime backend: tokens identical to the PyTorch path."""

import json
import os

import numpy as np
import pytest
import torch

from conftest import make_model
from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.tokenizer import Tokenizer

ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime onnx onnxscript (CI does)")
pytest.importorskip("onnxscript")
from uniaudio_rt.onnx_export import LogMelGraph, export_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = make_model(seed=21)
    d = str(tmp_path_factory.mktemp("onnx"))
    export_tokenizer(model, d, with_mel=True)
    return model, d


def test_sidecar(exported):
    _, d = exported
    with open(os.path.join(d, "tokenizer.json")) as f:
        s = json.load(f)
    assert s["sample_rate"] == 16000 and s["frame_rate"] == 25.0 and s["codebook_size"] == 128
    assert s["opset"] >= 18 and s["inputs"]["mel"] == ["mel", "mel_lengths", "position_offset"]
    assert s["outputs"] == ["tokens", "token_lengths"] and s["samples_per_token"] == 640
    for g in s["graphs"].values():
        assert os.path.getsize(os.path.join(d, g)) > 100_000  # weights embedded, no external data
    assert not [f for f in os.listdir(d) if f.endswith(".data")]


def test_ort_backend_identical_on_real_audio(exported, speech_files):
    model, d = exported
    pt = Tokenizer(model)
    ox = Tokenizer(model, backend="onnxruntime", onnx_dir=d)
    assert ox.encode_batch(speech_files) == pt.encode_batch(speech_files)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_ort_dynamic_lengths_and_batches(exported, speech_files, batch):
    """Lengths from 1 s to 30 s in one padded batch; every row equal to the PyTorch path."""
    model, d = exported
    speech = torch.cat([to_mono_16k(p) for p in speech_files])
    speech = speech.repeat(int(np.ceil(30 * 16000 / speech.numel())))
    seconds = np.linspace(1, 30, batch) if batch > 1 else [30]
    clips = [speech[int(i * 1111): int(i * 1111) + int(s * 16000) - 37 * i] for i, s in enumerate(seconds)]
    pt = Tokenizer(model, batch_size=batch)
    ox = Tokenizer(model, batch_size=batch, backend="onnxruntime", onnx_dir=d)
    assert ox.encode_batch(clips, 16000) == pt.encode_batch(clips, 16000)


def test_waveform_graph_matches(exported, speech_files):
    """log-mel inside the graph (conv1d DFT basis): close to the torch.stft front end; tokens agree."""
    model, d = exported
    pt = Tokenizer(model)
    wavs = [to_mono_16k(p) for p in speech_files]
    s_max = max(-(-w.numel() // 640) * 640 for w in wavs)
    batch = torch.zeros(len(wavs), s_max)
    for i, w in enumerate(wavs):
        batch[i, : w.numel()] = w
    lengths = torch.tensor([w.numel() for w in wavs])
    mel, mel_len = LogMelGraph(model.config)(batch, lengths)
    for i, w in enumerate(wavs):
        ref, n_real = pt.features(w)
        assert int(mel_len[i]) == n_real
        assert (mel[i, :, : ref.shape[-1]] - ref).abs().max() <= 1e-3
    sess = ort.InferenceSession(os.path.join(d, "tokenizer_wave.onnx"))
    toks, lens = sess.run(None, {"waveform": batch.numpy(), "lengths": lengths.numpy()})
    agree = tot = 0
    for i, p in enumerate(speech_files):
        ref = pt.encode(p)
        got = toks[i, : lens[i]].tolist()
        assert len(got) == len(ref)
        agree += sum(a == b for a, b in zip(got, ref))
        tot += len(ref)
    assert agree / tot >= 0.99


def test_public_width_architecture(tmp_path, speech_files):
    """Public UniAudio-Token widths (128 mels, d=1280, 20 heads, ffn 5120, pool 2 at 0, 8192 codes, SAE
    after the quantizer) with random weights, cut to 2 layers to keep the test fast: identical tokens."""
    from uniaudio_rt.models import WhisperVQConfig, WhisperVQEncoder, public_uniaudio_token_config

    d = public_uniaudio_token_config().to_dict()
    d.update(encoder_layers=3, quantize_position=2, encoder_residual_target_position=3)
    torch.manual_seed(0)
    m = WhisperVQEncoder(WhisperVQConfig.from_dict(d), tokens_only=True).eval()
    with torch.no_grad():
        m.codebook.weight.normal_()
    export_tokenizer(m, str(tmp_path))
    pt = Tokenizer(m, batch_size=4)
    ox = Tokenizer(m, batch_size=4, backend="onnxruntime", onnx_dir=str(tmp_path))
    assert ox.encode_batch(speech_files) == pt.encode_batch(speech_files)


def test_cli_export_and_bad_args(tmp_path, tiny_model_dir):
    from uniaudio_rt.cli import main

    assert main(["export", "onnx", "--model", tiny_model_dir, "--out", str(tmp_path / "o")]) == 0
    assert os.path.exists(tmp_path / "o" / "tokenizer.onnx")
    ox = Tokenizer.from_pretrained(tiny_model_dir, backend="onnxruntime", onnx_dir=str(tmp_path / "o"))
    assert ox.backend == "onnxruntime"
    with pytest.raises(ValueError, match="backend must be"):
        Tokenizer.from_pretrained(tiny_model_dir, backend="tensorrt")
    with pytest.raises(ValueError, match="fp32 graph"):
        Tokenizer.from_pretrained(tiny_model_dir, backend="onnxruntime", precision="bf16")
    with pytest.raises(SystemExit, match="opset must be >= 18"):
        main(["export", "onnx", "--model", tiny_model_dir, "--out", str(tmp_path / "p"), "--opset", "17"])
