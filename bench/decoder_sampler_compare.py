"""Compare evaluate-decoder runs of one decoder made with different sampler settings (docs/DECODER.md,
"Sampler settings"): a markdown row per JSON with the reconstruction WER / CER, the corpus-CER
difference against the first JSON with a 95% paired bootstrap interval over the clips, the word
recall (reference words recovered in order; insertions such as ASR loops cost nothing) and its
difference likewise, the MCD and the number of clips where the ASR heard anything.

    python bench/decoder_sampler_compare.py runs/sweep/default.json runs/sweep/cfg15.json ...

All files must hold the same clips in the same order (same --limit, same corpus), so the difference
is paired clip by clip. ``--clips A:B`` restricts every figure to a range of them (WER, CER and MCD
are recomputed from the per-clip rows), e.g. the clips a first sweep on ``--limit 80`` did not see.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from uniaudio_rt.train.targets import edit_counts, error_rate, recall_counts  # noqa: E402


def per_clip_counts(per_clip: list[dict], counts=edit_counts, unit: str = "char") -> tuple[np.ndarray, np.ndarray]:
    """Per clip: ``counts`` (train.targets.edit_counts: edit distance; recall_counts: reference units
    recovered in order, insertions such as an ASR loop free) of the reconstruction's ASR text against
    the reference, and the reference's length in ``unit``s."""
    pairs = counts([c["reference"] for c in per_clip], [c["asr_reconstructed"] for c in per_clip], unit)
    return (np.asarray([x for x, _ in pairs], dtype=np.float64),
            np.asarray([n for _, n in pairs], dtype=np.float64))


def paired(base: np.ndarray, new: np.ndarray, length: np.ndarray, idx: np.ndarray) -> str:
    """The corpus-rate difference new - base with its 95% paired bootstrap interval over clips."""
    boot = (new[idx].sum(1) - base[idx].sum(1)) / length[idx].sum(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return f"{(new.sum() - base.sum()) / length.sum():+.3f} ({lo:+.3f} to {hi:+.3f})"


def label(m: dict) -> str:
    s = m.get("sampling") or {}
    parts = [f"{s['n_timesteps']} steps" if s.get("n_timesteps") is not None else None,
             f"rate {s['cfg_rate']:g}" if s.get("cfg_rate") is not None else None,
             f"temperature {s['temperature']:g}" if float(s.get("temperature", 1.0)) != 1.0 else None]
    if m.get("speaker_prompt"):   # bench/decoder_speaker_prompt.py
        parts.append(f"{m['speaker_prompt']['tokens']}-token prompt of the same speaker")
    return ", ".join(p for p in parts if p) or "decoder default"


def clip_range(text: str) -> slice:
    """'A:B' (Python slice of the clips in the JSON order; either end may be left out)."""
    try:
        lo, hi = text.split(":")
        return slice(int(lo) if lo else None, int(hi) if hi else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clips takes A:B (e.g. 80: or 0:80), not {text!r}") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("json", nargs="+", help="evaluate-decoder --json outputs; the first is the baseline")
    ap.add_argument("--clips", type=clip_range, default=slice(None),
                    help="only these clips, A:B in the JSON order (e.g. 80: for the clips after a first --limit 80)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = ap.parse_args()
    runs = [json.load(open(p)) for p in args.json]
    ids = [c["id"] for c in runs[0]["per_clip"]]
    for p, m in zip(args.json, runs):
        if [c["id"] for c in m["per_clip"]] != ids:
            raise SystemExit(f"{p} holds other clips than {args.json[0]}: compare runs with the same --limit and corpus")
    clips = [m["per_clip"][args.clips] for m in runs]
    if not clips[0]:
        raise SystemExit(f"--clips selects none of the {len(ids)} clips")
    base, length = per_clip_counts(clips[0])
    base_hits, words = per_clip_counts(clips[0], recall_counts, "word")
    n = len(clips[0])
    idx = np.random.default_rng(args.seed).integers(0, n, (args.resamples, n))
    print(f"{n} clips ({args.clips.start or 0} to {(args.clips.stop or len(ids)) - 1} of {len(ids)}), "
          f"{sum(c['duration'] for c in clips[0]):.1f} s")
    print("| sampler | WER | CER | CER - baseline (95% CI) | word recall | recall - baseline (95% CI) "
          "| MCD mean / median (dB) | ASR non-empty |")
    print("|---|---:|---:|---|---:|---|---:|---:|")
    for k, (m, per_clip) in enumerate(zip(runs, clips)):
        err, _ = per_clip_counts(per_clip)
        hits, _ = per_clip_counts(per_clip, recall_counts, "word")
        wer = error_rate([c["reference"] for c in per_clip], [c["asr_reconstructed"] for c in per_clip], "word")
        mcd = np.asarray([c["mcd_db"] for c in per_clip])
        diff = "–" if k == 0 else paired(base, err, length, idx)
        rdiff = "–" if k == 0 else paired(base_hits, hits, words, idx)
        nonempty = sum(bool(c["asr_reconstructed"].strip()) for c in per_clip)
        print(f"| {label(m)} | {wer:.3f} | {err.sum() / length.sum():.3f} | {diff} | {hits.sum() / words.sum():.3f} | "
              f"{rdiff} | {mcd.mean():.2f} / {np.median(mcd):.2f} | {nonempty} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
