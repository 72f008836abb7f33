"""`uniaudio-rt detokenize` / `reconstruct` with a (tiny, random) decoder directory in the public layout."""

import json

import numpy as np
import soundfile as sf
import torch
from test_decoder_modules import TINY_YAML, make_flow, make_hift

from uniaudio_rt.cli import main


def decoder_dir(tmp_path):
    d = tmp_path / "decoder"
    d.mkdir()
    (d / "config.yaml").write_text(TINY_YAML)
    torch.save(make_flow(seed=1).state_dict(), d / "flow.pt")
    torch.save(make_hift(seed=1).state_dict(), d / "hift.pt")
    return d


def test_detokenize_json_npy_and_errors(tmp_path, capsys):
    dec = decoder_dir(tmp_path)
    (tmp_path / "t.json").write_text(json.dumps({"tokens": {"a.wav": [1, 2, 3, 4, 5, 6, 7, 8]}, "errors": {}}))
    out = tmp_path / "a.wav"
    assert main(["detokenize", str(tmp_path / "t.json"), "-o", str(out), "--decoder", str(dec)]) == 0
    wav, rate = sf.read(out)
    assert rate == 22050 and wav.ndim == 1 and len(wav) > 0 and np.isfinite(wav).all()
    np.save(tmp_path / "t.npy", np.array([3, 4, 5, 6], dtype=np.int32))
    assert main(["detokenize", str(tmp_path / "t.npy"), "-o", str(tmp_path / "b.wav"), "--decoder", str(dec)]) == 0
    # bad inputs: clear message, exit status 2, nothing written
    (tmp_path / "bad.json").write_text("[1, -2]")
    assert main(["detokenize", str(tmp_path / "bad.json"), "-o", str(tmp_path / "c.wav"), "--decoder", str(dec)]) == 2
    assert "non-negative integers" in capsys.readouterr().err
    (tmp_path / "big.json").write_text("[1, 99999]")
    assert main(["detokenize", str(tmp_path / "big.json"), "-o", str(tmp_path / "c.wav"), "--decoder", str(dec)]) == 2
    assert "outside the decoder's vocabulary of 50" in capsys.readouterr().err
    for name, text, msg in (("junk.json", "tokens: 1 2 3", "neither JSON nor JSON lines"), ("empty.json", "\n", "empty file")):
        (tmp_path / name).write_text(text)
        assert main(["detokenize", str(tmp_path / name), "-o", str(tmp_path / "c.wav"), "--decoder", str(dec)]) == 2
        assert f"{name}: {msg}" in capsys.readouterr().err
    assert main(["detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "c.wav"), "--decoder",
                 str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / "c.wav"), "--decoder", str(dec),
                 "--flow-steps", "0"]) == 2
    assert "n_timesteps must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "c.wav").exists()
    # sampler options: temperature 0 makes the flow independent of --seed, so only HiFT's noise differs
    for name, seed in (("d.wav", "1"), ("e.wav", "2")):
        assert main(["detokenize", str(tmp_path / "t.json"), "-o", str(tmp_path / name), "--decoder", str(dec),
                     "--flow-steps", "3", "--cfg-rate", "0", "--temperature", "0", "--seed", seed]) == 0
    d, e = sf.read(tmp_path / "d.wav")[0], sf.read(tmp_path / "e.wav")[0]
    assert d.shape == e.shape and np.isfinite(d).all()


def test_reconstruct_real_speech(tmp_path, speech_files):
    # the tiny decoder's vocabulary (50) is smaller than the default tokenizer's codebook: the
    # command must refuse rather than index out of range
    dec = decoder_dir(tmp_path)
    rc = main(["reconstruct", str(speech_files[0]), "-o", str(tmp_path / "r.wav"), "--decoder", str(dec)])
    assert rc == 2 and not (tmp_path / "r.wav").exists()


def test_reconstruct_real_speech_end_to_end(tmp_path, speech_files):
    from uniaudio_rt.decoder.flow import FlowDecoder
    from uniaudio_rt.decoder.loader import flow_config_from_yaml, read_config

    d = decoder_dir(tmp_path)
    yaml_text = TINY_YAML.replace("vocab_size: 50", "vocab_size: 1024")  # the default codebook size
    (d / "config.yaml").write_text(yaml_text)
    torch.manual_seed(2)
    torch.save(FlowDecoder(flow_config_from_yaml(read_config(yaml_text))).state_dict(), d / "flow.pt")
    out = tmp_path / "r.wav"
    assert main(["reconstruct", str(speech_files[0]), "-o", str(out), "--decoder", str(d)]) == 0
    wav, rate = sf.read(out)
    from uniaudio_rt.decoder.detokenizer import Detokenizer
    from uniaudio_rt.tokenizer import Tokenizer

    n = len(Tokenizer.from_pretrained().encode(str(speech_files[0])))
    det = Detokenizer.from_pretrained(str(d))
    # every token becomes its mel frames, every mel frame 32 samples of the tiny vocoder
    assert rate == det.sample_rate and len(wav) == det.flow.cfg.mel_frames(n) * 32 and np.isfinite(wav).all()


def test_detokenize_segments_long_inputs(tmp_path, capsys):
    """--segment-seconds: inputs up to S seconds decode one shot (as with 0), longer ones in S-second
    segments (Detokenizer.segmented), with the one-shot's length; bad values are refused."""
    dec = decoder_dir(tmp_path)
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 50, 20).tolist(), rng.integers(0, 50, 80).tolist()   # 0.8 s, 3.2 s at 25 Hz
    (tmp_path / "s.json").write_text(json.dumps(short))
    (tmp_path / "l.json").write_text(json.dumps(long))
    run = lambda src, out, *extra: main(["detokenize", str(tmp_path / src), "-o", str(tmp_path / out),   # noqa: E731
                                          "--decoder", str(dec), *extra])
    assert run("s.json", "s30.wav") == 0 and run("s.json", "s0.wav", "--segment-seconds", "0") == 0
    assert np.array_equal(sf.read(tmp_path / "s30.wav")[0], sf.read(tmp_path / "s0.wav")[0])
    assert run("l.json", "l1.wav", "--segment-seconds", "1") == 0 and run("l.json", "l0.wav", "--segment-seconds", "0") == 0
    seg, one = sf.read(tmp_path / "l1.wav")[0], sf.read(tmp_path / "l0.wav")[0]
    assert seg.shape == one.shape and not np.array_equal(seg, one) and np.isfinite(seg).all()
    assert run("l.json", "l30.wav") == 0 and np.array_equal(sf.read(tmp_path / "l30.wav")[0], one)
    for bad in ("0.5", "-1", "nan"):
        assert run("l.json", "x.wav", "--segment-seconds", bad) == 2
        assert "--segment-seconds must be 0 (one shot) or at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
