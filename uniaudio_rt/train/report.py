"""Markdown ablation table from ``RUN/metrics.json`` files (``uniaudio-rt train-report``)."""

from __future__ import annotations

import json
import os

_VARIANT = {("transcript", False): "(a) transcript only, no SAE", ("sap", False): "(b) SAP, no SAE",
            ("sap", True): "(c) SAP + SAE", ("transcript", True): "transcript + SAE"}


def _f(x, fmt=".3f") -> str:
    return "–" if x is None else format(x, fmt)


def row(label: str, m: dict, steps=None, ce=None) -> str:
    ev, ge, us, asr = m["events"], m["gender"], m["usage"], m.get("asr", {})
    runs = m.get("speech_runs", {})
    probe = ev.get("probe", {})
    return (f"| {label} | {_f(steps, 'd') if steps is not None else '–'} | {_f(ce)} | {_f(ev.get('purity'))} | "
            f"{_f(ev.get('purity_mean'))} ± {_f(ev.get('purity_std'))} | {_f(ev.get('silhouette'))} | "
            f"{_f(probe.get('accuracy'))} ± {_f(probe.get('accuracy_std'))} | "
            f"{_f(ge.get('accuracy'))} ± {_f(ge.get('accuracy_std'))} | "
            f"{_f(asr.get('cer'))} | {_f(asr.get('wer'))} | {us['codes_used']} ({_f(us['usage'], '.1%')}) | "
            f"{_f(us['perplexity'], '.1f')} | {_f(runs.get('changes_per_s'), '.1f')} |")


def _r2(p: dict | None) -> str:
    return "–" if not p else f"{p['r2']:.3f} ± {p['r2_std']:.3f}"


def acoustic_row(label: str, ac: dict) -> str:
    return (f"| {label} | {_r2(ac.get('mel'))} | {_r2(ac.get('level'))} | {_r2(ac.get('log_f0'))} | "
            f"{_r2(ac.get('f0_relative'))} | {ac.get('frames', '–')} | {_r2(ac.get('events', {}).get('mel'))} | "
            f"{_r2(ac.get('events', {}).get('level'))} | {ac.get('events', {}).get('frames', '–')} |")


def acoustic_metrics(run: str) -> dict | None:
    """``acoustic`` of ``RUN/metrics.json``, else of ``RUN/acoustic.json`` (``evaluate --sets acoustic``)."""
    for name in ("metrics.json", "acoustic.json"):
        path = os.path.join(run, name)
        if os.path.exists(path):
            ac = json.load(open(path)).get("acoustic")
            if ac and "skipped" not in ac:
                return ac
    return None


def acoustic_table(rows: dict[str, dict]) -> str:
    """Frame-level code probes (``evaluate``'s acoustic set): R^2 on held-out clips ± std over folds."""
    lines = ["| tokenizer | speech: log-mel R² | level R² | log-F0 R² | F0 rel. to clip median R² | frames | "
             "events: log-mel R² | level R² | frames |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [acoustic_row(label, ac) for label, ac in rows.items()]
    return "\n".join(lines)


def table(runs: list[str], extra: dict[str, str] | None = None) -> str:
    lines = ["| tokenizer | steps | final CE | event purity | purity, 10 k-means seeds | event silhouette | "
             "event probe acc. | gender probe acc. | SAP-decoder CER | WER | codes used | perplexity | "
             "code changes/s (speech) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    acoustic = {}
    for label, path in (extra or {}).items():
        m = json.load(open(path))
        lines.append(row(label, m))
        if m.get("acoustic") and "skipped" not in m["acoustic"]:
            acoustic[label] = m["acoustic"]
    for run in runs:
        cfg = json.load(open(os.path.join(run, "train_config.json")))
        log = [json.loads(x) for x in open(os.path.join(run, "train_log.jsonl"))]
        last = [r for r in log if "step" in r][-1]
        label = _VARIANT[(cfg["target"], cfg["sae"])]
        if cfg.get("lr_sae") is not None:
            label += f", SAE lr {cfg['lr_sae']:g}"
        if cfg.get("commit_normalize"):
            label += ", normalized commitment"
        if cfg["sae"] and cfg.get("sae_norm_init", "whisper") != "whisper":
            label += f", SAE norm started at {cfg['sae_norm_init']}"
        lines.append(row(label, json.load(open(os.path.join(run, "metrics.json"))), last["step"], last["ce"]))
        ac = acoustic_metrics(run)
        if ac:
            acoustic[f"{label} ({os.path.basename(os.path.normpath(run))})"] = ac
    m = json.load(open(os.path.join(runs[-1], "metrics.json"))) if runs else None
    if m:
        lines += ["", f"Events: {m['events'].get('clips')} clips in {m['events'].get('classes')} classes "
                  f"(majority class {_f(m['events'].get('majority'))}); gender: {m['gender'].get('clips')} clips "
                  f"(majority {_f(m['gender'].get('majority'))}); CER/WER: {m.get('asr', {}).get('clips')} English prompts."]
    if acoustic:
        lines += ["", "Acoustic detail in the codes (frame-level probes, R² on held-out clips ± std over 5 folds):",
                  "", acoustic_table(acoustic)]
    return "\n".join(lines)
