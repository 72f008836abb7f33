"""Streaming token-to-audio decode: first-audio latency and per-chunk cost, bounded state.

    python bench/decoder_streaming.py [--seconds 1,10,60] [--chunk-tokens 25] [--threads 2] [--decoder DIR]

Public-size decoder modules (CosyVoice / GLM-4-Voice flow matching + HiFT; random weights, speed
does not depend on values), or with ``--decoder`` a trained decoder directory (``default``: the one
shipped in the package), at 25 tokens/s (UniAudio-Token's rate). For each token-stream length the
tokens arrive in chunks of ``--chunk-tokens``; reported: compute until the first audio chunk is
yielded (first-audio latency, not counting the time the tokens take to arrive), per-chunk compute
(median, p95, and the mean over the last 5 chunks against the first 5: a bounded-state stream stays
flat while the stream grows), real-time factor, and the size of the carried state at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig  # noqa: E402
from uniaudio_rt.decoder.detokenizer import Detokenizer  # noqa: E402
from uniaudio_rt.decoder.flow import FlowDecoder  # noqa: E402
from uniaudio_rt.decoder.hift import HiFTGenerator  # noqa: E402


def state_mb(obj) -> float:
    seen, total = set(), 0

    def walk(o):
        nonlocal total
        if isinstance(o, torch.Tensor):
            if id(o) not in seen:
                seen.add(id(o))
                total += o.numel() * o.element_size()
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif hasattr(o, "__dict__"):
            for v in vars(o).values():
                walk(v)

    walk(obj)
    return total / 2 ** 20


def run(det: Detokenizer, n_tokens: int, chunk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, det.flow.cfg.vocab_size, (1, n_tokens), generator=g)
    fs = det.flow_state(1)
    vs = det.vocoder_state(1, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        spks = det.flow.speaker(None, 1, tokens.device)
    costs, first_audio, samples, t_start = [], None, 0, time.perf_counter()
    for i in range(0, n_tokens, chunk):
        t0 = time.perf_counter()
        mel, fs = det.flow_step(fs, tokens[:, i:i + chunk], spks=spks, generator=g)
        wav, vs = det.vocoder_step(vs, mel, generator=g)
        costs.append(time.perf_counter() - t0)
        samples += wav.shape[-1]
        if first_audio is None and wav.shape[-1]:
            first_audio = time.perf_counter() - t_start
    t0 = time.perf_counter()
    mel, fs = det.flow_step(fs, fs.pending[:, :0], final=True, spks=spks, generator=g)
    wav, vs = det.vocoder_step(vs, mel, final=True, generator=g)
    flush = time.perf_counter() - t0
    samples += wav.shape[-1]
    if first_audio is None:
        first_audio = time.perf_counter() - t_start
    total = sum(costs) + flush
    audio_s = samples / det.sample_rate
    return dict(first=first_audio, median=float(np.median(costs)), p95=float(np.percentile(costs, 95)),
                head=float(np.mean(costs[:5])), tail=float(np.mean(costs[-5:])), flush=flush,
                rtf=total / audio_s, audio_s=audio_s, state=state_mb(fs) + state_mb(vs))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", default="1,10,60")
    p.add_argument("--chunk-tokens", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decoder", default=None,
                   help="decoder directory, or 'default' (the shipped one); default: public sizes, random weights")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="the flow's prompt window in tokens (default: StreamConfig's, 60)")
    p.add_argument("--out", default=None, help="append the markdown table to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.decoder:
        det = Detokenizer.from_pretrained(None if args.decoder == "default" else args.decoder)
        what = f"Decoder {args.decoder} ({sum(p.numel() for m in (det.flow, det.hift) for p in m.parameters()) / 1e6:.2f} M)"
    else:
        det = Detokenizer(FlowDecoder(FlowConfig(input_frame_rate=25.0)), HiFTGenerator(HiFTConfig()))
        what = "Public-size flow + HiFT (random weights)"
    det.flow.eval(), det.hift.eval()
    if args.prompt_tokens is not None:
        det.stream_config = dataclasses.replace(det.stream_config, prompt_tokens=args.prompt_tokens)
    run(det, args.chunk_tokens, args.chunk_tokens)  # warm-up
    cfg = det.stream_config
    lines = [f"`python bench/decoder_streaming.py {' '.join(sys.argv[1:])}`", "",
             f"{what}, random tokens at 25 tokens/s, chunks of {args.chunk_tokens} tokens "
             f"({args.chunk_tokens / 25:.2f} s), {args.threads} threads; prompt window {cfg.prompt_tokens} tokens, "
             f"encoder cache {cfg.encoder_left_blocks} blocks, vocoder context {cfg.hift_left}+{cfg.hift_lookahead} "
             f"frames.", "",
             "| tokens (audio s) | first audio after (compute) | per-chunk median | p95 | first 5 chunks | last 5 chunks "
             "| final flush | RTF | carried state MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in [float(v) for v in args.seconds.split(",")]:
        n = int(round(s * 25))
        r = run(det, n, args.chunk_tokens)
        lines.append(f"| {n} ({r['audio_s']:.1f}) | {r['first']:.2f} s | {r['median']:.2f} s | {r['p95']:.2f} s | "
                     f"{r['head']:.2f} s | {r['tail']:.2f} s | {r['flush']:.2f} s | {r['rtf']:.2f} | {r['state']:.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
