"""The decoder shipped in the package: loads with no argument, matches the default tokenizer,
fits the size budget with it, and reconstructs real speech through the CLI without --decoder."""

import json
import os

import pytest
import soundfile as sf

from uniaudio_rt.cli import main
from uniaudio_rt.decoder.detokenizer import DEFAULT_DECODER_DIR, Detokenizer
from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR, Tokenizer

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(DEFAULT_DECODER_DIR, "config.yaml")),
                                reason="no decoder shipped")


def _size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def test_default_decoder_fits_and_matches_the_tokenizer():
    det = Detokenizer.from_pretrained()
    tok = Tokenizer.from_pretrained()
    assert det.flow.cfg.vocab_size == tok.vocab_size
    assert det.flow.cfg.input_frame_rate == tok.frame_rate
    assert _size(DEFAULT_DECODER_DIR) + _size(DEFAULT_MODEL_DIR) <= 40 * 2 ** 20
    with open(os.path.join(DEFAULT_DECODER_DIR, "build_stats.json")) as f:
        stats = json.load(f)
    with open(os.path.join(DEFAULT_MODEL_DIR, "build_stats.json")) as f:
        tok_stats = json.load(f)
    assert stats["tokenizer_run"] == tok_stats["run"]
    # trained on exactly these tokenizer weights (a retrained tokenizer needs a retrained decoder)
    from uniaudio_rt.decoder.ship import sha256_file

    assert stats["tokenizer_model_sha256"] == sha256_file(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors"))
    assert {"wer_original", "wer_reconstructed", "mcd_db_mean", "wer_vocoder"} <= set(stats["metrics"])
    # the quality it reports was measured on exactly these files
    from uniaudio_rt.decoder.ship import file_digests

    assert stats["metrics"]["files_sha256"] == file_digests(DEFAULT_DECODER_DIR)


def test_reconstruct_cli_uses_the_shipped_decoder(tmp_path, speech_files, one_torch_thread):
    out = tmp_path / "r.wav"
    assert main(["reconstruct", str(speech_files[0]), "-o", str(out)]) == 0
    wav, sr = sf.read(out)
    src = sf.info(speech_files[0])
    assert sr == 22050
    assert abs(len(wav) / sr - src.duration) < 0.1
    assert wav.std() > 1e-3  # not silence
