"""Long inputs: one-shot decode against Detokenizer.segmented (what `uniaudio-rt detokenize` uses beyond
`--segment-seconds`, 30 s by default): wall time and peak memory by input length.

    python bench/decoder_long_form.py [--seconds 10,30,60,180] [--segment-seconds 30] [--threads 2]
                                      [--decoder DIR] [--skip-one-shot-above S]

The shipped decoder by default (``--decoder DIR``: another decoder directory), random tokens at the
decoder's token rate, seed 0. Each (length, mode) runs in a fresh process so its peak resident memory
(ru_maxrss) is its own; both modes load the same weights, so the difference in peak memory is the
decode's. Printed: wall seconds, real-time factor, peak MB, and the segmented/one-shot ratios measured
in this run. The two modes do not give the same waveform (the segmented flow is the streamed one), so
only cost is compared here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_run(decoder: str, seconds: float, segment_seconds: float, threads: int) -> dict:
    import torch

    from uniaudio_rt.decoder.cli import segment_tokens
    from uniaudio_rt.decoder.detokenizer import Detokenizer

    torch.set_num_threads(threads)
    det = Detokenizer.from_pretrained(decoder or None)
    n = round(seconds * det.flow.cfg.input_frame_rate)
    tokens = torch.randint(0, det.flow.cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if segment_seconds:
        wav = det.segmented(tokens, segment_tokens(det, segment_seconds), generator=g)
    else:
        wav = det(tokens, generator=g)
    wall = time.perf_counter() - t0
    return {"seconds": seconds, "segment_seconds": segment_seconds, "wall_s": wall, "rtf": wall / seconds,
            "samples": int(wav.shape[-1]), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", default="10,30,60,180", help="input lengths, comma-separated")
    ap.add_argument("--segment-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", default="", help="decoder directory (default: the shipped one)")
    ap.add_argument("--skip-one-shot-above", type=float, default=None, metavar="S",
                    help="do not run the one-shot decode on inputs longer than S seconds")
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        seconds, seg = (float(v) for v in args._one.split(":"))
        print(json.dumps(one_run(args.decoder, seconds, seg, args.threads)))
        return 0
    print(f"decoder {args.decoder or 'shipped'}, {args.threads} threads, segments of {args.segment_seconds:g} s")
    print(f"{'input s':>8} | {'one-shot s':>10} {'RTF':>5} {'peak MB':>8} | {'segmented s':>11} {'RTF':>5} "
          f"{'peak MB':>8} | {'time ratio':>10} {'memory ratio':>12}")
    for seconds in (float(s) for s in args.seconds.split(",")):
        rows = {}
        for seg in (0.0, args.segment_seconds):
            if seg == 0 and args.skip_one_shot_above is not None and seconds > args.skip_one_shot_above:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--_one", f"{seconds}:{seg}",
                   "--threads", str(args.threads), "--decoder", args.decoder]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows[seg] = json.loads(out.strip().splitlines()[-1])
        s = rows[args.segment_seconds]
        o = rows.get(0.0)
        if o is not None and o["samples"] != s["samples"]:
            raise SystemExit(f"{seconds} s: one shot gave {o['samples']} samples, segmented {s['samples']}")
        one = (f"{o['wall_s']:10.1f} {o['rtf']:5.2f} {o['peak_mb']:8.0f}" if o else f"{'-':>10} {'-':>5} {'-':>8}")
        ratio = (f"{s['wall_s'] / o['wall_s']:10.2f} {s['peak_mb'] / o['peak_mb']:12.2f}" if o
                 else f"{'-':>10} {'-':>12}")
        print(f"{seconds:8g} | {one} | {s['wall_s']:11.1f} {s['rtf']:5.2f} {s['peak_mb']:8.0f} | {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
