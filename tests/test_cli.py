"""The uniaudio-rt command line."""

import json
import os
import subprocess
import sys

import numpy as np

from uniaudio_rt.cli import main
from uniaudio_rt.tokenizer import Tokenizer


def test_tokenize_json_jsonl_npy(tiny_model_dir, speech_files, tmp_path, capsys):
    tok = Tokenizer.from_pretrained(tiny_model_dir)
    expected = {p: tok.encode(p) for p in speech_files[:2]}

    assert main(["tokenize", "--model", tiny_model_dir, "--no-progress", *speech_files[:2]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == expected and out["frame_rate"] == 25.0 and out["vocab_size"] == 128

    jl = tmp_path / "t.jsonl"
    assert main(["tokenize", "--model", tiny_model_dir, "-o", str(jl), "--no-progress", *speech_files[:2]]) == 0
    rows = [json.loads(line) for line in jl.read_text().splitlines()]
    assert {r["path"]: r["tokens"] for r in rows} == expected

    d = tmp_path / "npy"
    assert main(["tokenize", "--model", tiny_model_dir, "--format", "npy", "-o", str(d), "--no-progress",
                 *speech_files[:2]]) == 0
    index = json.loads((d / "index.json").read_text())
    for p, name in index["files"].items():
        assert np.load(d / name).tolist() == expected[p]


def test_tokenize_reports_bad_files_and_keeps_good_ones(tiny_model_dir, speech_files, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    rc = main(["tokenize", "--model", tiny_model_dir, "--no-progress", str(bad), speech_files[0]])
    captured = capsys.readouterr()
    assert rc == 1
    out = json.loads(captured.out)
    assert speech_files[0] in out["tokens"] and str(bad) in out["errors"]
    assert "cannot decode audio" in captured.err


def test_cli_entry_point_help_and_bad_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "uniaudio_rt.cli", "tokenize", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--model" in r.stdout and "--format" in r.stdout
    r = subprocess.run([sys.executable, "-m", "uniaudio_rt.cli", "tokenize", "--model", str(tmp_path), "x.wav"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "missing config.json" in r.stderr
    r = subprocess.run([sys.executable, "-m", "uniaudio_rt.cli"], capture_output=True, text=True)
    assert r.returncode == 2 and "tokenize" in r.stdout


def test_stream_command_reports_latency_and_tokens(tiny_model_dir, speech_files, capsys):
    assert main(["stream", "--model", tiny_model_dir, "--chunk-ms", "80", "--lookahead-ms", "30000",
                 "--left-context-ms", "30000", speech_files[0]]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert lines[0].startswith("chunk     1") and " ms" in lines[0]
    result = json.loads(lines[-1])
    assert result["tokens"] == Tokenizer.from_pretrained(tiny_model_dir).encode(speech_files[0])
    assert "compute per chunk" in cap.err and "first token after" in cap.err
