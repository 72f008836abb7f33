"""Decoder streaming graphs in ONNX Runtime (tiny random decoder): each graph equals its PyTorch piece at two
chunk lengths, OrtDetokenizer.stream equals Detokenizer.stream for the same tokens and random draws, the
sidecar describes the graphs, bad inputs are refused by name. One export (through the CLI) for the module."""

import json
import os

import numpy as np
import onnx
import pytest
import torch
from test_decoder_cli import decoder_dir

from uniaudio_rt.cli import main
from uniaudio_rt.decoder import ops
from uniaudio_rt.decoder.detokenizer import Detokenizer, StreamConfig
from uniaudio_rt.decoder.onnx_export import GRAPHS, OrtDetokenizer, TorchRandom, export_decoder, overlap_add

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnxdec")
    dec = decoder_dir(tmp)
    out = tmp / "onnx"
    assert main(["export", "onnx-decoder", "--decoder", str(dec), "--out", str(out)]) == 0
    return dec, out, Detokenizer.from_pretrained(str(dec)), OrtDetokenizer(str(out), num_threads=1)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def close(got, want, atol=1e-4):
    np.testing.assert_allclose(got, want.detach().numpy() if isinstance(want, torch.Tensor) else want,
                               atol=atol, rtol=1e-4)


@pytest.mark.parametrize("n, cache", [(4, 0), (7, 8)])
def test_flow_encoder_graph(exported, n, cache):
    _, _, det, ort_det = exported
    flow, e = det.flow, ort_det.sidecar["encoder"]
    tokens = torch.randint(0, 50, (2, n), generator=torch.Generator().manual_seed(n))
    k, v = randn(e["layers"], 2, e["heads"], cache, e["head_dim"], seed=1), randn(e["layers"], 2, e["heads"], cache,
                                                                                   e["head_dim"], seed=2)
    with torch.no_grad():
        h, kv = flow.encoder(flow.input_embedding(tokens), offset=cache, kv_caches=[(k[i], v[i]) for i in range(len(k))])
    got = ort_det.run("flow_encoder", tokens=tokens.numpy(), k_cache=k.numpy(), v_cache=v.numpy())
    close(got[0], h)
    close(got[1], torch.stack([a for a, _ in kv]))
    close(got[2], torch.stack([b for _, b in kv]))


@pytest.mark.parametrize("rate", [25.0, 12.5])
def test_flow_condition_graph(exported, rate):
    """Every window length, at the tiny and the public token rate: the nearest upsampling picks PyTorch's
    source frames (ONNX Resize alone differs for some lengths, e.g. 16 tokens -> 110 frames at 12.5 Hz)."""
    _, _, det, ort_det = exported
    flow = det.flow
    for window in range(1, 70):
        h, emb = randn(2, window, 32, seed=window), randn(2, 12, seed=1)
        frames = int(window / rate * 22050 / 256)
        with torch.no_grad():
            mu = flow.length_regulator(flow.encoder_proj(h), frames).transpose(1, 2)
            spks = flow.speaker(emb, 2, None)
        got = ort_det.run("flow_condition", h=h.numpy(), cond=np.zeros((2, 16, frames), np.float32),
                          embedding=emb.numpy())
        close(got[0], mu)
        close(got[1], spks)


@pytest.mark.parametrize("frames", [2, 13, 20])
def test_flow_estimator_graph(exported, frames):
    _, _, det, ort_det = exported
    est, rate = det.flow.decoder.estimator, det.flow.cfg.cfm.inference_cfg_rate
    x, mu, cond, spks = randn(2, 16, frames), randn(2, 16, frames, seed=1), randn(2, 16, frames, seed=2), randn(2, 16, seed=3)
    t, dt = torch.tensor([0.25]), torch.tensor([0.125])
    with torch.no_grad():
        v_c, v_u = est(torch.cat([x, x]), torch.cat([mu, 0 * mu]), t, torch.cat([spks, 0 * spks]),
                       torch.cat([cond, 0 * cond])).chunk(2)
    want = ops.cfg_euler_step_ref(x, v_c, v_u, 0.125, rate)
    got, = ort_det.run("flow_estimator", x=x.numpy(), mu=mu.numpy(), cond=cond.numpy(), spks=spks.numpy(),
                       t=t.numpy(), dt=dt.numpy())
    close(got, want)


@pytest.mark.parametrize("frames", [1, 9, 16])
def test_hift_graphs(exported, frames):
    _, _, det, ort_det = exported
    hift, c = det.hift, det.hift.cfg
    mel = randn(2, 16, frames)
    with torch.no_grad():
        f0 = hift.f0_predictor(mel)
    got_f0, = ort_det.run("hift_f0", mel=mel.numpy())
    close(got_f0, f0)
    # source: the graph takes the noise the PyTorch module draws from its generator
    f0 = torch.rand(2, frames, generator=torch.Generator().manual_seed(4)) * 400 - 50     # some unvoiced frames
    state = type(det.vocoder_state(2).nsf)(torch.rand(2, 3, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64))
    with torch.no_grad():
        src, st = hift.m_source(f0, state, torch.Generator().manual_seed(5))
    noise = torch.randn(2, 3, frames * c.upsample_factor, generator=torch.Generator().manual_seed(5))
    got_src, got_phase = ort_det.run("hift_source", f0=f0.numpy(), phase=state.phase.numpy(),
                                     phase_offset=state.phase_offset.numpy(), noise=noise.numpy())
    close(got_src, src, atol=1e-5)
    close(got_phase, st.phase, atol=1e-9)
    # decode + host overlap-add == decode + ops.istft_ola_ref (torch.istft)
    with torch.no_grad():
        x = hift.decode(mel, src)
    want, want_tail = ops.istft_ola_ref(x, hift.stft_window, c.hop_len, torch.zeros(2, c.n_fft - c.hop_len), 0, True)
    frames_out, = ort_det.run("hift_decode", mel=mel.numpy(), source=src.numpy())
    got, _ = overlap_add(frames_out, ort_det.window, c.hop_len, np.zeros((2, c.n_fft - c.hop_len), np.float32), 0, True)
    close(got, want)


def _chunks(tokens, cuts):
    return [tokens[:, a:b] for a, b in zip([0] + cuts[:-1], cuts)]


@pytest.mark.parametrize("cuts", [[5, 9, 20, 37], [1, 2, 3, 16, 30, 37]])
def test_ort_stream_equals_pytorch_stream(exported, cuts):
    """Small windows so the key/value caches are trimmed and the prompt window slides."""
    dec, out, _, _ = exported
    sc = StreamConfig(prompt_tokens=8, encoder_left_blocks=2, hift_left=8, hift_lookahead=8)
    det = Detokenizer.from_pretrained(str(dec), stream_config=sc)
    ort_det = OrtDetokenizer(str(out), num_threads=1, stream_config=sc)
    tokens = torch.randint(0, 50, (2, cuts[-1]), generator=torch.Generator().manual_seed(len(cuts)))
    emb = randn(2, 12, seed=7)
    want = list(det.stream(_chunks(tokens, cuts), embedding=emb, generator=torch.Generator().manual_seed(3)))
    got = list(ort_det.stream(_chunks(tokens, cuts), embedding=emb, rng=TorchRandom(torch.Generator().manual_seed(3))))
    assert [w.shape[-1] for w in got] == [w.shape[-1] for w in want]
    close(np.concatenate(got, -1), torch.cat(want, -1))


def test_ort_stream_numpy_random(exported):
    _, _, det, ort_det = exported
    wav = np.concatenate(list(ort_det.stream([np.arange(10), np.arange(10, 21)], rng=None)), -1)
    assert wav.shape == (1, det.flow.cfg.mel_frames(21) * det.hift.cfg.upsample_factor)
    assert np.isfinite(wav).all() and np.abs(wav).max() <= det.hift.cfg.audio_limit


def test_sidecar(exported):
    _, out, det, _ = exported
    s = json.loads((out / "decoder.json").read_text())
    assert s["format"] == "uniaudio-rt-onnx-decoder/1" and s["opset"] == 18
    assert (s["sample_rate"], s["token_rate"], s["mel_bins"], s["hop_length"]) == (22050, 25.0, 16, 256)
    assert s["encoder"] == {"layers": 2, "heads": 2, "head_dim": 16, "block_size": 4, "output_size": 32}
    assert len(s["flow"]["t_span"]) == det.flow.cfg.cfm.n_timesteps + 1
    assert s["hift"]["upsample_factor"] == det.hift.cfg.upsample_factor and len(s["hift"]["window"]) == s["hift"]["n_fft"]
    assert set(s["state"]) >= {"k_cache", "v_cache", "h_window", "mel_window", "phase", "phase_offset", "istft_tail"}
    chunk_axes = {"flow_encoder": ("tokens", 1), "flow_condition": ("cond", 2), "flow_estimator": ("x", 2),
                  "hift_f0": ("mel", 2), "hift_source": ("f0", 1), "hift_decode": ("mel", 2)}
    for name, g in s["graphs"].items():
        assert (g["inputs"], g["outputs"]) == tuple(map(list, GRAPHS[name]))
        m = onnx.load(str(out / g["file"]))
        assert not m.graph.initializer or all(not t.external_data for t in m.graph.initializer)
        assert m.opset_import[0].version >= 18
        assert [i.name for i in m.graph.input] == g["inputs"] and [o.name for o in m.graph.output] == g["outputs"]
        inp, axis = chunk_axes[name]
        dims = {i.name: i.type.tensor_type.shape.dim for i in m.graph.input}
        assert dims[inp][axis].dim_param and dims[inp][0].dim_param, (name, "chunk and batch axes must be dynamic")


def test_bad_inputs(exported, tmp_path):
    dec, out, det, ort_det = exported
    with pytest.raises(FileNotFoundError, match="decoder.json"):
        OrtDetokenizer(str(tmp_path))
    (tmp_path / "decoder.json").write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ValueError, match="format"):
        OrtDetokenizer(str(tmp_path))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 50\)"):
        list(ort_det.stream([np.array([1, 2, 50])]))
    with pytest.raises(ValueError, match="integer"):
        list(ort_det.stream([np.array([1.0, 2.0])]))
    with pytest.raises(ValueError, match=r"speaker embedding must be \(1, 12\)"):
        list(ort_det.stream([np.arange(4)], embedding=np.zeros(7)))
    with pytest.raises(ValueError, match="batch 2, the stream started with 1"):
        list(ort_det.stream([np.arange(8), np.zeros((2, 4), np.int64)]))
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export_decoder(det, str(tmp_path / "x"), opset=17)
    with pytest.raises(TypeError, match="Detokenizer or a decoder directory"):
        export_decoder(42, str(tmp_path / "x"))
    with pytest.raises(SystemExit, match="needs --decoder"):
        main(["export", "onnx-decoder", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="error"):
        main(["export", "onnx-decoder", "--decoder", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert not os.path.exists(tmp_path / "x")


def test_export_refuses_specialised_axes(tmp_path, monkeypatch):
    """torch.onnx.export falls back to a fixed-shape graph when an axis cannot stay dynamic: refused."""
    from uniaudio_rt.decoder import onnx_export

    class Fixed(torch.nn.Module):
        def forward(self, mel):
            return mel.view(3, 20).sum(-1)

    monkeypatch.setitem(onnx_export.GRAPHS, "fixed", (["mel"], ["f0"]))
    with pytest.raises(RuntimeError, match=r"fixed.onnx: axes \[0\] of input 'mel' came out fixed"):
        onnx_export._export(Fixed(), (torch.randn(3, 4, 5),), str(tmp_path / "fixed.onnx"), "fixed",
                            ({0: torch.export.Dim("batch", min=1, max=64)},), 18)
