"""Fused SAE gate + LayerNorm + nearest-code search: C++ kernel vs the PyTorch reference, same run.

    python bench/bench_gate_vq.py [--threads 2] [--repeats 7] [--out docs/PERFORMANCE.md]

Shapes: the public UniAudio-Token quantizer (T = 750 frames = 30 s at 25 Hz, d = 1280, K = 8192)
and the shipped default model's (T = 750, d = 384, K = 1024); each with and without the gate.
Rows are LayerNorm-ed like the SAE output; codes are random normal (public size) or the shipped
codebook (default). Reference: ``torch.addmm`` + ``argmin`` (the public formula), and, with the gate,
the epilogue + LayerNorm in PyTorch before it. The gate's and adapter's GEMMs are outside both timings
(they are BLAS calls in both paths). GFLOP/s counts the 2 T K d multiply-adds of the distance GEMM;
the peaks are torch.mm's fp32 and bf16 GEMM rates measured in the same run.
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

from uniaudio_rt import ops  # noqa: E402


def median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def gemm_peak(dtype):
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
    return 2 * 2048 ** 3 / median_time(lambda: a @ b, 5) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if ops._C is None:
        raise SystemExit("the native extension is not built (pip install --no-build-isolation -e .)")
    peak32, peak16 = gemm_peak(torch.float32), gemm_peak(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    shapes = [("public", 750, 1280, 8192, None)]
    try:
        from uniaudio_rt.checkpoint import load_encoder
        from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR

        shapes.append(("default", 750, 384, 1024, load_encoder(DEFAULT_MODEL_DIR).codebook.weight.detach()))
    except ValueError:
        pass
    rows = []
    for name, t, d, k, codes in shapes:
        cb = codes if codes is not None else torch.randn(k, d, generator=g)
        cache = ops.Codebook.from_tensor(cb)
        deep, a, gl = (torch.randn(t, d, generator=g) for _ in range(3))
        ln = ops.LayerNormParams(torch.ones(d), torch.zeros(d), 1e-5)
        x = ops.gate_ln_ref(deep, gl, a, ln)
        for gate in (False, True):
            if gate:
                ref = lambda: ops.gate_ln_vq_ref(deep, gl, a, ln, cb)  # noqa: E731
                fast = lambda: ops.gate_ln_vq(deep, gl, a, ln, cache, backend="cpp")  # noqa: E731
            else:
                ref = lambda: ops.vq_argmin_ref(x, cb)  # noqa: E731
                fast = lambda: ops.vq_argmin(x, cache, backend="cpp")  # noqa: E731
            same = bool(torch.equal(ref(), fast()))
            t_ref, t_fast = median_time(ref, args.repeats), median_time(fast, args.repeats)
            ops._C.set_vq_cpu_force_portable(True)
            t_port = median_time(fast, max(3, args.repeats // 2))
            same_port = bool(torch.equal(ref(), fast()))
            ops._C.set_vq_cpu_force_portable(False)
            flops = 2 * t * k * d
            rows.append((name, t, d, k, "yes" if gate else "no", t_ref * 1e3, t_fast * 1e3, t_ref / t_fast,
                         same, flops / t_ref / 1e9, flops / t_fast / 1e9, t_port * 1e3, same_port))
            print(f"  {name} gate={gate}: ref {t_ref * 1e3:.1f} ms, cpp {t_fast * 1e3:.1f} ms", file=sys.stderr)
    lines = [f"{args.threads} threads, median of {args.repeats}; CPU path `{ops._C.vq_cpu_path()}`; GEMM peak "
             f"measured here: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", "",
             "| shapes | T | d | K | gate | ref ms | C++ ms | speed-up | identical indices | ref GFLOP/s | "
             "C++ GFLOP/s (of bf16 peak) | portable C++ ms | portable identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[6]:.1f} | {r[7]:.2f}x | "
                     f"{'yes' if r[8] else 'NO'} | {r[9]:.0f} ({r[9] / peak32 * 100:.0f}% of fp32) | "
                     f"{r[10]:.0f} ({r[10] / peak16 * 100:.0f}%) | {r[11]:.1f} | {'yes' if r[12] else 'NO'} |")
    lines.append(f"\nRows that fell back to the exact scan (too many bf16 candidates): {ops._C.vq_cpu_fallback_rows()}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(f"\n`python bench/bench_gate_vq.py {' '.join(sys.argv[1:])}`\n\n{table}\n")


if __name__ == "__main__":
    main()
