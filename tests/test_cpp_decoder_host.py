"""The C++ decoder host (export/cpp/detokenize_torchscript.cpp + decoder_stream.h), compiled with g++ against the
torch wheel's libtorch, streams token chunks to the audio Python gives: Detokenizer.stream with the same torch
generator (--rng torch), and the same host loop in Python (TorchScriptDetokenizer) with the portable
SplitMixRandom (--rng splitmix, the ONNX Runtime host's only stream). Tiny random decoder; one export.
The ONNX Runtime host (detokenize_onnxruntime.cpp) is built and checked only when ONNXRUNTIME_ROOT names an
ONNX Runtime release (its C/C++ headers are in no package registry)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import compile_libtorch_host
from test_decoder_cli import decoder_dir

from uniaudio_rt.cli import main
from uniaudio_rt.decoder.detokenizer import Detokenizer, StreamConfig
from uniaudio_rt.decoder.onnx_export import GRAPHS, SplitMixRandom, TorchRandom, TorchScriptDetokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "export", "cpp", "detokenize_torchscript.cpp")
SMALL = StreamConfig(prompt_tokens=8, encoder_left_blocks=2, hift_left=8, hift_lookahead=8)  # trims and slides
SMALL_ARGS = ["--prompt-tokens", "8", "--encoder-left-blocks", "2", "--hift-left", "8", "--hift-lookahead", "8"]
ORT_ROOT = os.environ.get("ONNXRUNTIME_ROOT", "")  # an ONNX Runtime release (include/, lib/): no registry ships one


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """Compiled once per session (~15-30 s on 2 cores)."""
    return compile_libtorch_host(SRC, str(tmp_path_factory.mktemp("cppdec") / "detokenize_torchscript"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tsdec")
    dec = decoder_dir(tmp)
    out = tmp / "ts"
    assert main(["export", "torchscript-decoder", "--decoder", str(dec), "--out", str(out)]) == 0
    return dec, out


def run_host(host, ts_dir, tokens, tmp_path, *args, embedding=None):
    (tmp_path / "tokens.json").write_text(json.dumps({"tokens": list(map(int, tokens))}))
    cmd = [host, str(ts_dir), str(tmp_path / "tokens.json"), str(tmp_path / "out.wav"), *args]
    if embedding is not None:
        embedding.numpy().astype(np.float32).tofile(tmp_path / "emb.f32")
        cmd += ["--embedding", str(tmp_path / "emb.f32")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    wav, rate = sf.read(tmp_path / "out.wav", dtype="float32" if "--pcm16" not in args else "int16")
    assert rate == info["sample_rate"] == 22050 and len(wav) == info["samples"] == sum(info["chunks"])
    return wav, info


def _chunks(tokens, cuts):
    return [tokens[:, a:b] for a, b in zip([0] + cuts[:-1], cuts)]


def test_export_writes_modules_and_sidecar(exported):
    _, out = exported
    s = json.loads((out / "decoder.json").read_text())
    assert s["format"] == "uniaudio-rt-torchscript-decoder/1" and "opset" not in s
    for name, g in s["graphs"].items():
        assert g == {"file": name + ".pt", "inputs": GRAPHS[name][0], "outputs": GRAPHS[name][1]}
        assert (out / g["file"]).is_file()
    with pytest.raises(SystemExit, match="torchscript-decoder needs --decoder"):
        main(["export", "torchscript-decoder", "--out", str(out / "x")])
    with pytest.raises(FileNotFoundError, match="export torchscript-decoder"):
        TorchScriptDetokenizer(str(out / "nope"))


def test_export_refuses_a_shape_specialised_trace(exported, tmp_path, monkeypatch):
    """A module whose trace bakes a size (here int(shape)) is refused, not shipped."""
    from uniaudio_rt.decoder import onnx_export

    class Baked(torch.nn.Module):
        def forward(self, mel):
            return mel.new_zeros(mel.shape[0], int(mel.shape[-1]))

    real = onnx_export._step_modules
    monkeypatch.setattr(onnx_export, "_step_modules", lambda det: {**real(det), "hift_f0": Baked().eval()})
    with pytest.raises(RuntimeError, match=r"hift_f0.pt: the traced module gives \(1, 24\) where the eager one gives "
                                           r"\(1, 13\)"):
        onnx_export.export_decoder_torchscript(str(exported[0]), str(tmp_path / "x"))


def test_python_twin_equals_pytorch_stream(exported):
    """The traced modules in OrtDetokenizer's loop == Detokenizer.stream (batch 2, odd chunk sizes)."""
    dec, out = exported
    cuts = [1, 2, 3, 16, 30, 37]
    tokens = torch.randint(0, 50, (2, cuts[-1]), generator=torch.Generator().manual_seed(6))
    emb = torch.randn(2, 12, generator=torch.Generator().manual_seed(7))
    det = Detokenizer.from_pretrained(str(dec), stream_config=SMALL)
    want = list(det.stream(_chunks(tokens, cuts), embedding=emb, generator=torch.Generator().manual_seed(3)))
    got = list(TorchScriptDetokenizer(str(out), stream_config=SMALL).stream(
        _chunks(tokens, cuts), embedding=emb, rng=TorchRandom(torch.Generator().manual_seed(3))))
    assert [w.shape[-1] for w in got] == [w.shape[-1] for w in want]
    np.testing.assert_allclose(np.concatenate(got, -1), torch.cat(want, -1).numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cuts", [[5, 9, 20, 37], [1, 2, 3, 16, 30, 37]])
def test_cpp_equals_pytorch_stream(host, exported, tmp_path, cuts):
    """--rng torch: torch's CPU generator in C++ draws what Detokenizer.stream draws in Python; the audio
    agrees to 1e-6 (measured ~1e-7 on |wav| ~0.1) and every push yields as many samples."""
    dec, out = exported
    tokens = torch.randint(0, 50, (1, cuts[-1]), generator=torch.Generator().manual_seed(len(cuts)))
    emb = torch.randn(1, 12, generator=torch.Generator().manual_seed(7))
    det = Detokenizer.from_pretrained(str(dec), stream_config=SMALL)
    want = list(det.stream(_chunks(tokens, cuts), embedding=emb, generator=torch.Generator().manual_seed(3)))
    got, info = run_host(host, out, tokens[0], tmp_path, "--cuts", ",".join(map(str, cuts)), "--rng", "torch",
                         "--seed", "3", *SMALL_ARGS, embedding=emb)
    assert info["chunks"] == [w.shape[-1] for w in want]
    np.testing.assert_allclose(got, torch.cat(want, -1)[0].numpy(), atol=1e-6, rtol=0)


def test_cpp_splitmix_equals_python_twin(host, exported, tmp_path):
    """Default --rng splitmix, --chunk, decoder.json's own stream sizes: the same audio as TorchScriptDetokenizer
    with SplitMixRandom (bit-identical here; 1e-6 allowed for libm vs numpy in the noise's log/cos)."""
    _, out = exported
    tokens = torch.randint(0, 50, (1, 61), generator=torch.Generator().manual_seed(11))
    got, info = run_host(host, out, tokens[0], tmp_path, "--chunk", "7", "--seed", "5")
    twin = TorchScriptDetokenizer(str(out))
    want = list(twin.stream([tokens[:, i:i + 7] for i in range(0, 61, 7)], rng=SplitMixRandom(5)))
    assert info["chunks"] == [w.shape[-1] for w in want]
    want = np.concatenate(want, -1)[0]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    pcm, _ = run_host(host, out, tokens[0], tmp_path, "--chunk", "7", "--seed", "5", "--pcm16")
    np.testing.assert_array_equal(pcm, np.round(np.clip(want, -1, 1) * 32767).astype(np.int16))


def test_splitmix_random():
    """The values the C++ SplitMixRandom reproduces; a stream is one sequence whatever the draw shapes."""
    r = SplitMixRandom(0)
    np.testing.assert_array_equal(r.uniform((3,)), [0.8833108082136426, 0.43152799704850997, 0.026433771592597743])
    a, b = SplitMixRandom(5), SplitMixRandom(5)
    np.testing.assert_array_equal(np.concatenate([a.normal((2, 3)).ravel(), a.normal((4,))]), b.normal((10,)))
    z = SplitMixRandom(1).normal((200000,))
    assert z.dtype == np.float32 and abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert SplitMixRandom(1).uniform((0,)).shape == (0,)


def test_cpp_host_errors(host, exported, tmp_path):
    _, out = exported

    def run(*args):
        return subprocess.run([host, *map(str, args)], capture_output=True, text=True, timeout=300)

    (tmp_path / "t.json").write_text("[1, 2, 3]")
    (tmp_path / "big.json").write_text('{"tokens": [1, 50]}')
    r = run(out, tmp_path / "big.json", tmp_path / "o.wav")
    assert r.returncode == 1 and "token ids must be in [0, 50), got 50" in r.stderr
    r = run(tmp_path, tmp_path / "t.json", tmp_path / "o.wav")
    assert r.returncode == 1 and "decoder.json: cannot open" in r.stderr
    (tmp_path / "decoder.json").write_text('{"format": "uniaudio-rt-onnx-decoder/1"}')
    r = run(tmp_path, tmp_path / "t.json", tmp_path / "o.wav")
    assert r.returncode == 1 and "format is not uniaudio-rt-torchscript-decoder/1" in r.stderr
    r = run(out, tmp_path / "t.json", tmp_path / "o.wav", "--cuts", "1,2")
    assert r.returncode == 1 and "end at the token count (3)" in r.stderr
    r = run(out, tmp_path / "t.json", tmp_path / "o.wav", "--rng", "mt")
    assert r.returncode == 1 and "unknown --rng mt" in r.stderr
    r = run(out, tmp_path / "t.json", tmp_path / "o.wav", "--embedding", tmp_path / "t.json")
    assert r.returncode == 1 and "expected 12 float32 values" in r.stderr
    r = run(out, tmp_path / "t.json")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = run(out, tmp_path / "t.json", tmp_path / "o.wav", "--bogus")
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.skipif(not os.path.isfile(os.path.join(ORT_ROOT, "include", "onnxruntime_cxx_api.h")),
                    reason="set ONNXRUNTIME_ROOT to an ONNX Runtime release to build the ONNX Runtime host")
def test_ort_host_equals_ort_detokenizer(exported, tmp_path):
    """detokenize_onnxruntime.cpp against OrtDetokenizer with SplitMixRandom (not run in CI: no ORT headers)."""
    from uniaudio_rt.decoder.onnx_export import OrtDetokenizer, export_decoder

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = str(tmp_path / "detokenize_onnxruntime")
    src = os.path.join(os.path.dirname(SRC), "detokenize_onnxruntime.cpp")
    r = subprocess.run([cxx, "-O1", "-std=c++20", src, "-o", exe,
                        f"-I{ORT_ROOT}/include", f"-L{ORT_ROOT}/lib", "-lonnxruntime", f"-Wl,-rpath,{ORT_ROOT}/lib"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    onnx_dir = tmp_path / "onnx"
    export_decoder(str(exported[0]), str(onnx_dir))
    tokens = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(12))
    got, info = run_host(exe, onnx_dir, tokens[0], tmp_path, "--chunk", "9", "--seed", "4", "--threads", "1",
                         *SMALL_ARGS)
    want = list(OrtDetokenizer(str(onnx_dir), num_threads=1, stream_config=SMALL).stream(
        [tokens[:, i:i + 9] for i in range(0, 40, 9)], rng=SplitMixRandom(4)))
    assert info["chunks"] == [w.shape[-1] for w in want]
    np.testing.assert_allclose(got, np.concatenate(want, -1)[0], atol=1e-6, rtol=0)
