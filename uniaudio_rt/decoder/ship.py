"""``uniaudio-rt train-decoder-ship``: copy a trained decoder run into the package as the default.

Writes ``OUT/config.yaml``, ``OUT/flow.pt``, ``OUT/hift.pt`` (the run's exported float16 decoder),
``OUT/build_stats.json`` (training config, steps, wall time, final losses, the ``evaluate-decoder``
metrics and the sha256 of the tokenizer weights whose tokens it was trained on) and a card
``OUT/README.md``. The tokenizer digest is what ties the pair together: a decoder trained on
another tokenizer's tokens decodes the shipped tokenizer's tokens into noise (tests check it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional

FILES = ("config.yaml", "flow.pt", "hift.pt")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ship_decoder(run: str, out: str, metrics_json: Optional[str] = None) -> dict:
    dec = os.path.join(run, "decoder")
    missing = [n for n in FILES + ("train_info.json",) if not os.path.exists(os.path.join(dec, n))]
    if missing:
        raise FileNotFoundError(f"{dec} lacks {missing}: train to the last step (or --export-only) first")
    metrics_path = metrics_json or os.path.join(run, "metrics.json")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"no metrics at {metrics_path}: run `uniaudio-rt evaluate-decoder --json` first")
    info = json.load(open(os.path.join(dec, "train_info.json")))
    train_cfg = json.load(open(os.path.join(run, "train_config.json")))
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    steps = [r for r in log if "step" in r]
    if not steps:
        raise ValueError(f"{run}/train_log.jsonl has no step records")
    metrics = {k: v for k, v in json.load(open(metrics_path)).items() if k != "per_clip"}
    tok_dir = info.get("tokenizer")
    if not tok_dir or not os.path.exists(os.path.join(tok_dir, "model.safetensors")):
        raise FileNotFoundError(f"the run's tokenizer ({tok_dir}) is not there to fingerprint")
    tok_stats_path = os.path.join(tok_dir, "build_stats.json")
    tok_run = json.load(open(tok_stats_path)).get("run") if os.path.exists(tok_stats_path) else None
    wall = sum(r["sec_per_step"] * (r["step"] - p) for r, p in zip(steps, [0] + [r["step"] for r in steps[:-1]]))
    stats = {"tokenizer_run": tok_run, "tokenizer_model_sha256": sha256_file(os.path.join(tok_dir, "model.safetensors")),
             "steps": info["step"], "init_from": log[0].get("init_from"), "train_clips": info.get("train_clips"),
             "train_hours": info.get("train_hours"), "train_wall_s": round(wall, 1),
             "flow_params": info["flow_params"], "hift_params": info["hift_params"],
             "final": {k: steps[-1][k] for k in ("flow_loss", "mu_mse", "mel_l1", "stft", "f0_l1_hz") if k in steps[-1]},
             "train_config": train_cfg, "metrics": metrics}
    os.makedirs(out, exist_ok=True)
    for name in FILES:
        shutil.copyfile(os.path.join(dec, name), os.path.join(out, name))
    with open(os.path.join(out, "build_stats.json"), "w") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
    _write_card(out, stats)
    return stats


def _write_card(out: str, s: dict) -> None:
    m = s["metrics"]
    mb = sum(os.path.getsize(os.path.join(out, n)) for n in FILES) / 2 ** 20
    voc = ""
    if "wer_vocoder" in m:
        voc = (f" Copy synthesis (the vocoder alone on the originals' mel): WER {m['wer_vocoder']:.3f}, "
               f"MCD {m['mcd_db_vocoder_mean']:.2f} dB.")
    warm = f" Warm-started from `{s['init_from']}`." if s.get("init_from") else ""
    text = f"""# uniaudio-rt default decoder (tokens -> 22.05 kHz audio)

**What it is.** Flow matching (token embedding -> block-causal conformer encoder -> length regulator
-> U-Net estimator, 10 Euler steps, CFG 0.7) to 80-bin mel at 22.05 kHz / hop 256, and a HiFT
vocoder (NSF source from an F0 predictor, iSTFT head), in the public CosyVoice / GLM-4-Voice layout
(config.yaml, flow.pt, hift.pt; float16): {s['flow_params'] / 1e6:.2f} M + {s['hift_params'] / 1e6:.2f} M
parameters, {mb:.1f} MB. Trained on the tokens of the package's default tokenizer (run
`{s['tokenizer_run']}`, model.safetensors sha256 `{s['tokenizer_model_sha256'][:16]}...`).

**Training.** {s['steps']} steps ({s['train_wall_s'] / 60:.0f} min on 2 CPU cores) on {s['train_clips']}
speech and voice clips ({s['train_hours']} h) of the registry corpus (docs/DATA.md).{warm}
`uniaudio-rt train-decoder --config configs/train/decoder_default.yaml`; docs/RESULTS.md has the commands.

**Quality (measured, `uniaudio-rt evaluate-decoder`).** On {m['clips']} held-out English prompts,
faster-whisper (Whisper tiny.en) WER {m['wer_original']:.3f} on the originals and
{m['wer_reconstructed']:.3f} on the reconstructions (CER {m['cer_reconstructed']:.3f}); mel-cepstral
distortion {m['mcd_db_mean']:.2f} dB.{voc} A reconstruction WER near 1 means not intelligible: this
CPU budget is far too small for a flow decoder and a vocoder. It ships so that `detokenize` /
`reconstruct` / streaming run end to end with no download; replace it with a longer-trained decoder
(same command, more steps; rerun resumes) or a public checkpoint directory (`--decoder DIR`).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)
