"""Does a prompt of the same speaker help the flow? (docs/DECODER.md, "Sampler settings".)

For each of the first N held-out English prompts (evaluate-decoder's clips, same order and noise
seeds), decodes its tokens with the flow conditioned on another held-out prompt of the same
speaker: that clip's first ``--prompt-tokens`` tokens and their mel in the flow's ``cond`` (as the
flow was trained, with a prefix of a clip's own mel half of the time). Writes an evaluate-decoder
style JSON (per-clip ASR text and MCD, no reference passes) that ``decoder_sampler_compare.py``
compares with an ``evaluate-decoder --limit N --json`` run of the same decoder.

    python bench/decoder_speaker_prompt.py --corpus corpus --limit 80 --json runs/prompt/p75.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from uniaudio_rt.decoder import mel as dmel  # noqa: E402
from uniaudio_rt.decoder.detokenizer import Detokenizer  # noqa: E402
from uniaudio_rt.decoder.evaluate import eval_rows, load_asr, transcribe, waveform_mcd  # noqa: E402
from uniaudio_rt.tokenizer import Tokenizer  # noqa: E402
from uniaudio_rt.train.loop import load_clip_audio  # noqa: E402
from uniaudio_rt.train.targets import error_rate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus directory with an eval_wer split")
    ap.add_argument("--decoder", default=None, help="decoder directory (default: the shipped one)")
    ap.add_argument("--limit", type=int, default=80, help="the first N clips are decoded")
    ap.add_argument("--prompt-tokens", type=int, default=75, help="prompt length in tokens (25 a second)")
    ap.add_argument("--prompt-offset", type=int, default=100,
                    help="clip k is prompted with clip (k + offset) mod the clip count (>= limit keeps them apart)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (clip k uses seed + k, as evaluate-decoder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--asr-no-fallback", action="store_true", help="deterministic ASR (evaluate-decoder's option)")
    ap.add_argument("--json", required=True, help="output JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = eval_rows(args.corpus, None, 5)
    if not 0 < args.limit <= len(rows) or args.prompt_tokens < 1:
        raise SystemExit(f"--limit must be in 1..{len(rows)} and --prompt-tokens >= 1")
    tok = Tokenizer.from_pretrained()
    det = Detokenizer.from_pretrained(args.decoder)
    asr = load_asr(None, "int8", args.threads)
    load = load_clip_audio(args.corpus)
    audios = [load(r) for r in rows]
    tokens = tok.encode_batch(audios, 16000)
    per_clip, t0 = [], time.perf_counter()
    for k in range(args.limit):
        j = (k + args.prompt_offset) % len(rows)
        if j == k:
            raise SystemExit("--prompt-offset prompts a clip with itself")
        pt = tokens[j][:args.prompt_tokens]
        _, pmel = dmel.token_aligned(audios[j][: int(len(pt) / tok.frame_rate * 16000)], len(pt), det.flow.cfg)
        gen = det(torch.tensor(tokens[k]), torch.tensor([pt]), pmel.T[None],
                  generator=torch.Generator().manual_seed(args.seed + k))[0].numpy()
        ref22, _ = dmel.token_aligned(audios[k], len(tokens[k]), det.flow.cfg)
        hyp = transcribe(asr, dmel.resample(gen, det.sample_rate, 16000), 5, fallback=not args.asr_no_fallback)
        per_clip.append({"id": rows[k]["id"], "duration": rows[k]["duration"], "reference": rows[k]["transcript"],
                         "prompt_id": rows[j]["id"], "asr_reconstructed": hyp,
                         "wer_reconstructed": error_rate([rows[k]["transcript"]], [hyp], "word"),
                         "mcd_db": waveform_mcd(ref22, gen)})
        print(f"\r{k + 1}/{args.limit} clips, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    refs, hyps = [c["reference"] for c in per_clip], [c["asr_reconstructed"] for c in per_clip]
    mcd = [c["mcd_db"] for c in per_clip]
    res = {"clips": len(per_clip), "audio_s": round(sum(c["duration"] for c in per_clip), 2),
           "wer_reconstructed": error_rate(refs, hyps, "word"), "cer_reconstructed": error_rate(refs, hyps, "char"),
           "mcd_db_mean": float(np.mean(mcd)), "mcd_db_median": float(np.median(mcd)),
           "sampling": {"n_timesteps": None, "cfg_rate": None, "temperature": 1.0},
           "speaker_prompt": {"tokens": args.prompt_tokens, "offset": args.prompt_offset}, "seed": args.seed,
           "asr_fallback": not args.asr_no_fallback, "per_clip": per_clip}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, ensure_ascii=False)
    print(json.dumps({k: v for k, v in res.items() if k != "per_clip"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
