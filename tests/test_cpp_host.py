"""The C++ TorchScript host, compiled against the torch wheel's libtorch, gives Python's tokens."""

import json
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import compile_libtorch_host, make_model
from uniaudio_rt.audio import to_mono_16k
from uniaudio_rt.onnx_export import export_torchscript
from uniaudio_rt.tokenizer import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "export", "cpp", "tokenize_torchscript.cpp")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return compile_libtorch_host(SRC, str(tmp_path_factory.mktemp("cpp") / "tokenize_torchscript"))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    model = make_model(seed=31)
    d = str(tmp_path_factory.mktemp("ts"))
    export_torchscript(model, d)
    return model, d


def run_host(*args):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["tokens"]


def test_cpp_host_mel_path_is_exact(host, scripted, speech_files, tmp_path):
    model, d = scripted
    tok = Tokenizer(model)
    for p in speech_files[:2]:
        mel, n_real = tok.features(to_mono_16k(p))
        assert n_real == -(-to_mono_16k(p).numel() // 160)
        f = tmp_path / "mel.f32"
        mel.numpy().astype(np.float32).tofile(f)
        got = run_host(host, "--mel", os.path.join(d, "tokenizer_mel.pt"), str(f), str(mel.shape[0]),
                       str(mel.shape[1]), str(n_real))
        assert got == tok.encode(p)


def test_cpp_host_wav_matches_python(host, scripted, speech_files, tmp_path):
    model, d = scripted
    tok = Tokenizer(model)
    agree = total = 0
    for i, p in enumerate(speech_files):
        wav = to_mono_16k(p)
        path = tmp_path / f"s{i}.wav"
        sf.write(path, wav.numpy(), 16000, subtype="FLOAT")
        got = run_host(host, os.path.join(d, "tokenizer_wave.pt"), str(path))
        # exactly what the same traced module gives in Python
        ts = torch.jit.load(os.path.join(d, "tokenizer_wave.pt"))
        n = wav.numel()
        x = torch.nn.functional.pad(wav, (0, (-n) % 640))[None]
        t, l = ts(x, torch.tensor([n]))
        assert got == t[0, : int(l[0])].tolist()
        # and the Python tokenizer (torch.stft front end) on >= 99% of frames
        ref = tok.encode(str(path))
        assert len(got) == len(ref)
        agree += sum(a == b for a, b in zip(got, ref))
        total += len(ref)
    assert agree / total >= 0.99


def test_cpp_host_rejects_bad_wav(host, scripted, tmp_path, speech_files):
    _, d = scripted
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    r = subprocess.run([host, os.path.join(d, "tokenizer_wave.pt"), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "error:" in r.stderr
    r = subprocess.run([host, os.path.join(d, "tokenizer_wave.pt"), speech_files[0]], capture_output=True, text=True)
    assert r.returncode == 1 and "expected mono 16 kHz" in r.stderr  # the asterisk file is 8 kHz
