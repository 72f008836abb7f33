"""How well a corpus source's transcripts match its audio: faster-whisper tiny.en (the offline ASR of
docs/DECODER.md) on a seeded random sample of the source's clips, character and word error rate of
the ASR text against each clip's transcript (both case-folded, punctuation removed), and the share
of clips with CER above 0.5 (a line that is not what the clip says).

Usage: python bench/transcript_agreement.py SOURCE [--corpus corpus] [--n 60] [--seed 0] [--min-words 3]
"""

from __future__ import annotations

import argparse
import random

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-words", type=int, default=3, help="only clips whose transcript has this many words")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=10, help="print this many (worst first) clips")
    args = ap.parse_args()

    from uniaudio_rt.data.manifest import read_manifest
    from uniaudio_rt.decoder.evaluate import load_asr, transcribe
    from uniaudio_rt.train.loop import load_clip_audio
    from uniaudio_rt.train.targets import error_rate

    rows = [r for r in read_manifest(args.corpus)
            if r["source"] == args.source and len((r["transcript"] or "").split()) >= args.min_words]
    if not rows:
        raise SystemExit(f"no clip of source {args.source!r} with a transcript of {args.min_words}+ words")
    sample = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    asr = load_asr(None, "int8", args.threads)
    load = load_clip_audio(args.corpus)
    refs, hyps, cers = [], [], []
    for r in sample:
        hyp = transcribe(asr, load(r), 5)
        refs.append(r["transcript"])
        hyps.append(hyp)
        cers.append(error_rate([r["transcript"]], [hyp], "char"))
    cers_a = np.asarray(cers)
    print(f"{args.source}: {len(sample)} of {len(rows)} clips ({args.min_words}+ words), seed {args.seed}")
    print(f"  corpus CER {error_rate(refs, hyps, 'char'):.3f}  WER {error_rate(refs, hyps, 'word'):.3f}  "
          f"median clip CER {np.median(cers_a):.3f}  clips with CER > 0.5: {int((cers_a > 0.5).sum())}")
    for i in np.argsort(-cers_a)[: args.show]:
        print(f"  {cers_a[i]:.2f}  {sample[i]['origin']}  | {refs[i]} | {hyps[i]}")


if __name__ == "__main__":
    main()
