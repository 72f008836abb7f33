"""Where in frequency the flow's prior ``mu`` misses the held-out English prompts.

For each decoder given, on the first N held-out English prompts (evaluate-decoder's clips), prints
the mean squared error per log-mel value of ``mu`` (the flow encoder's mel estimate from the
default tokenizer's tokens) against the original's mel, split into low (bins 0-39), middle (40-59)
and high (60-79) mel bins, and the mean signed error (mu - original) in eight 10-bin bands. A
negative high-band bias means the flow renders speech darker than the original, e.g. after
training on band-limited (11,025 Hz) audio.

Usage: python bench/decoder_prior_bands.py DECODER_DIR [DECODER_DIR ...] [--corpus corpus] [--clips 30]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from uniaudio_rt.decoder import mel as dmel
    from uniaudio_rt.decoder.evaluate import eval_rows, prior_residual
    from uniaudio_rt.decoder.loader import load_flow
    from uniaudio_rt.tokenizer import Tokenizer
    from uniaudio_rt.train.loop import load_clip_audio

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("decoders", nargs="+", help="decoder directories (config.yaml, flow.pt, hift.pt)")
    p.add_argument("--corpus", default="corpus")
    p.add_argument("--clips", type=int, default=30, help="first N held-out English prompts")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = eval_rows(args.corpus, args.clips)
    load = load_clip_audio(args.corpus)
    audios = [load(r) for r in rows]
    tokens = Tokenizer.from_pretrained().encode_batch(audios, 16000)
    print(f"{len(rows)} held-out prompts; MSE per log-mel value and mean signed error (mu - original)")
    for d in args.decoders:
        flow = load_flow(d).eval().float()
        sq, signed, frames = np.zeros(80), np.zeros(80), 0
        for a, t in zip(audios, tokens):
            e = prior_residual(flow, t, dmel.token_aligned(a, len(t), flow.cfg)[1]).numpy()
            sq += (e ** 2).sum(1)
            signed += e.sum(1)
            frames += e.shape[1]
        sq, signed = sq / frames, signed / frames
        print(f"{d}: mse {sq.mean():.2f} | bins 0-39 {sq[:40].mean():.2f}, 40-59 {sq[40:60].mean():.2f}, "
              f"60-79 {sq[60:].mean():.2f} | bias per 10 bins "
              + " ".join(f"{b:+.2f}" for b in signed.reshape(8, 10).mean(1)))


if __name__ == "__main__":
    main()
