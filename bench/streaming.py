"""Streaming tokenization: agreement with offline tokens, latency, and concurrent real-time sessions.

    python bench/streaming.py --model DIR            # a checkpoint (e.g. the shipped default)
    python bench/streaming.py --public               # public-size architecture, random weights
    python bench/streaming.py --causal-demo          # a streaming-capable (exact mode) tiny config

Reports, per configuration:
  * agreement of window-mode tokens with offline ``Tokenizer.encode`` on real speech (asterisk
    English prompts), for several look-aheads (the added latency), with a fixed left context;
  * compute per 80 ms hop (median and p95 over a real clip), first-token latency (audio received
    until the first token is released, plus the compute of that push);
  * the largest number of sessions that one StreamingBatch step serves within the 80 ms hop
    (real-time) on this machine, with 2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from real_audio import asterisk_dir  # noqa: E402
from uniaudio_rt.audio import to_mono_16k  # noqa: E402
from uniaudio_rt.streaming import StreamingBatch, StreamingTokenizer  # noqa: E402
from uniaudio_rt.tokenizer import Tokenizer  # noqa: E402

HOP_MS = 80.0


def speech_clips(n):
    d = asterisk_dir()
    files = sorted(f for f in os.listdir(d) if f.endswith(".wav"))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    return [to_mono_16k(os.path.join(d, files[i])) for i in pick]


def stream_once(tok, wav, **kw):
    st = StreamingTokenizer(tok, step_ms=HOP_MS, **kw)
    hop = int(HOP_MS * 16)
    out, costs, first = [], [], None
    for i in range(0, wav.numel(), hop):
        t0 = time.perf_counter()
        new = st.push(wav[i: i + hop])
        dt = time.perf_counter() - t0
        costs.append(dt)
        if new and first is None:
            first = (i + min(hop, wav.numel() - i)) / 16000 + dt
        out += new
    out += st.flush()
    return out, costs, first


def agreement(tok, clips, lookaheads, left_ms):
    rows = []
    offline = [tok.encode(w, 16000) for w in clips]
    for la in lookaheads:
        eq = tot = 0
        for w, ref in zip(clips, offline):
            got, _, _ = stream_once(tok, w, lookahead_ms=la, left_context_ms=left_ms)
            assert len(got) == len(ref)
            eq += sum(a == b for a, b in zip(got, ref))
            tot += len(ref)
        rows.append((la, eq / tot, tot))
    return rows


def max_sessions(tok, wav, limit=64, **kw):
    """Largest N whose StreamingBatch step over N sessions fits in one hop (median of the steps)."""
    hop = int(HOP_MS * 16)

    def step_cost(n):
        b = StreamingBatch(tok, step_ms=HOP_MS, **kw)
        for s in range(n):
            b.open(str(s))
        costs = []
        for i in range(0, min(wav.numel(), 16000 * 4), hop):
            t0 = time.perf_counter()
            b.push({str(s): wav[i: i + hop] for s in range(n)})
            costs.append(time.perf_counter() - t0)
        return float(np.median(costs[len(costs) // 2:]))  # steady state: second half

    best, n = 0, 1
    while n <= limit:
        c = step_cost(n)
        print(f"    {n:3d} sessions: {c * 1000:.1f} ms per {HOP_MS:g} ms hop", file=sys.stderr, flush=True)
        if c > HOP_MS / 1000:
            break
        best, n = n, n * 2
    if best and best < limit:  # refine between best and 2*best
        lo, hi = best, min(2 * best, limit)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if step_cost(mid) <= HOP_MS / 1000:
                lo = mid
            else:
                hi = mid
        best = lo
    return best


def report(name, tok, args, out):
    clips = speech_clips(args.clips)
    long = torch.cat(clips)[: 16000 * 20]
    mode = StreamingTokenizer(tok).mode
    out.append(f"### {name}\n\nmode: `{mode}`; {args.threads} threads; hop {HOP_MS:g} ms; "
               f"{len(clips)} real English prompts ({sum(c.numel() for c in clips) / 16000:.0f} s)\n")
    if mode == "window":
        rows = agreement(tok, clips, [float(x) for x in args.lookaheads.split(",")], args.left_ms)
        out.append(f"Window mode, left context {args.left_ms:g} ms: agreement with offline tokens\n")
        out.append("| look-ahead (added latency) | token agreement | tokens |\n|---|---|---|")
        out += [f"| {la:g} ms | {a * 100:.2f}% | {n} |" for la, a, n in rows]
        out.append("")
        kw = dict(lookahead_ms=args.default_lookahead, left_context_ms=args.left_ms)
    else:
        ref = [tok.encode(w, 16000) for w in clips]
        got = [stream_once(tok, w)[0] for w in clips]
        same = sum(a == b for a, b in zip(got, ref))
        out.append(f"Exact mode: {same}/{len(clips)} clips give tokens identical to offline.\n")
        kw = {}
    _, costs, first = stream_once(tok, long, **kw)
    c = np.asarray(costs) * 1000
    n = max_sessions(tok, long, **kw)
    out.append(f"Per {HOP_MS:g} ms hop ({'look-ahead %g ms' % kw['lookahead_ms'] if kw else 'exact'}): "
               f"compute median {np.median(c):.1f} ms, p95 {np.percentile(c, 95):.1f} ms, max {c.max():.1f} ms; "
               f"first token after {first:.3f} s; real-time sessions per StreamingBatch step on this "
               f"machine: **{n}**\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--public", action="store_true")
    p.add_argument("--causal-demo", action="store_true")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--lookaheads", default="0,160,320,640,1280,2560")
    p.add_argument("--default-lookahead", type=float, default=640.0)
    p.add_argument("--left-ms", type=float, default=4000.0)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="append the markdown to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out: list[str] = []
    if args.model is not None:
        report(f"{args.model} ({args.precision})", Tokenizer.from_pretrained(args.model, precision=args.precision), args, out)
    if args.public:
        from uniaudio_rt.models import WhisperVQEncoder, public_uniaudio_token_config

        torch.manual_seed(0)
        m = WhisperVQEncoder(public_uniaudio_token_config(), tokens_only=True)
        with torch.no_grad():
            m.codebook.weight.normal_()
        report(f"public-size UniAudio-Token, random weights ({args.precision})",
               Tokenizer(m, precision=args.precision, copy_model=False), args, out)
    if args.causal_demo:
        from conftest import make_model

        m = make_model(seed=1, d_model=384, encoder_attention_heads=6, encoder_ffn_dim=1536,
                       encoder_causal_convolution=True, quantize_causal_block_size=8, mel_floor_db=None,
                       quantize_vocab_size=1024)
        report("streaming-capable tiny config (d=384, 4 layers, block 8 = 160 ms; random weights)",
               Tokenizer(m, precision=args.precision, copy_model=False), args, out)
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(f"\n`python bench/streaming.py {' '.join(sys.argv[1:])}`\n\n{text}\n")


if __name__ == "__main__":
    main()
