"""Fused SAE gate + LayerNorm + nearest-code search: C++ kernel vs the PyTorch reference, same run.

    python bench/bench_gate_vq.py [--threads 2] [--repeats 7] [--out docs/PERFORMANCE.md]

Shapes: the public UniAudio-Token quantizer (T = 750 frames = 30 s at 25 Hz, d = 1280, K = 8192)
and the shipped default model's (T = 750, d = 384, K = 1024); each with and without the gate.
Rows are LayerNorm-ed like the SAE output; codes are random normal (public size) or the shipped
codebook (default). Reference: ``torch.addmm`` + ``argmin`` (the public formula), and, with the gate,
the epilogue + LayerNorm in PyTorch before it. The gate's and adapter's GEMMs are outside both timings
(they are BLAS calls in both paths). GFLOP/s counts the 2 T K d multiply-adds of the distance GEMM;
the peaks are torch.mm's fp32 and bf16 GEMM rates measured in the same run. For context, the same
formula in torch bfloat16 (oneDNN, AMX where the CPU has it) is timed too, with its agreement: it is
not exact, so it is no substitute for the fp32 reference.

Timings are interleaved: each repeat runs the reference, the bf16 formula and every CPU path once, so
all of them see the same machine state (on a shared VM the speed of a core changes within seconds).
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


CPU_PATHS = ("amx-bf16-screen", "avx512bf16-screen", "avx2-int16-screen", "portable")


def median_time(fn, repeats):
    return interleaved_medians([fn], repeats)[0]


def interleaved_medians(fns, repeats):
    """Median time of each fn; every repeat runs all of them once, in turn."""
    for fn in fns:
        fn()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, ts):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in ts]


def set_path(path, fn):
    def run():
        ops._C.set_vq_cpu_path(path)
        try:
            return fn()
        finally:
            ops._C.set_vq_cpu_path("auto")
    return run


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
    from uniaudio_rt.runtime import cpu_has_native_bf16

    peak32 = gemm_peak(torch.float32)
    peak16 = gemm_peak(torch.bfloat16) if cpu_has_native_bf16() else float("nan")  # emulated: no roofline
    g = torch.Generator().manual_seed(0)
    shapes = [("public", 750, 1280, 8192, None)]
    try:
        from uniaudio_rt.checkpoint import load_encoder
        from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR

        shapes.append(("default", 750, 384, 1024, load_encoder(DEFAULT_MODEL_DIR).codebook.weight.detach()))
    except ValueError:
        pass
    paths = [pth for pth in CPU_PATHS if ops._C.vq_cpu_path_supported(pth)]
    rows = []
    for name, t, d, k, codes in shapes:
        cb = codes if codes is not None else torch.randn(k, d, generator=g)
        cache = ops.Codebook.from_tensor(cb)
        deep, a, gl = (torch.randn(t, d, generator=g) for _ in range(3))
        ln = ops.LayerNormParams(torch.ones(d), torch.zeros(d), 1e-5)
        x = ops.gate_ln_ref(deep, gl, a, ln)
        cbb, sqb = cb.bfloat16(), (cb.double() ** 2).sum(1).bfloat16()
        for gate in (False, True):
            if gate:
                ref = lambda: ops.gate_ln_vq_ref(deep, gl, a, ln, cb)  # noqa: E731
                fast = lambda: ops.gate_ln_vq(deep, gl, a, ln, cache, backend="cpp")  # noqa: E731
                b16 = lambda: torch.addmm(sqb, ops.gate_ln_ref(deep, gl, a, ln).bfloat16(), cbb.t(), alpha=-2).argmin(1)  # noqa: E731
            else:
                ref = lambda: ops.vq_argmin_ref(x, cb)  # noqa: E731
                fast = lambda: ops.vq_argmin(x, cache, backend="cpp")  # noqa: E731
                b16 = lambda: torch.addmm(sqb, x.bfloat16(), cbb.t(), alpha=-2).argmin(1)  # noqa: E731
            fast_paths = [pth for pth in paths if pth != "portable"]
            times = interleaved_medians([ref, b16] + [set_path(pth, fast) for pth in fast_paths], args.repeats)
            t_ref, t_b16 = times[0], times[1]
            expect = ref()
            agree_b16 = float((b16() == expect).double().mean())
            per_path = []
            for pth, tp in zip(fast_paths, times[2:]):
                per_path.append((pth, tp, bool(torch.equal(expect, set_path(pth, fast)()))))
            if "portable" in paths:  # slow: fewer repeats, outside the interleaving
                run = set_path("portable", fast)
                per_path.append(("portable", median_time(run, max(3, args.repeats // 2)), bool(torch.equal(expect, run()))))
            flops = 2 * t * k * d
            rows.append((name, t, d, k, gate, t_ref, t_b16, agree_b16, flops, per_path))
            print(f"  {name} gate={gate}: ref {t_ref * 1e3:.1f} ms, torch bf16 {t_b16 * 1e3:.1f} ms, " +
                  ", ".join(f"{pth} {tp * 1e3:.1f} ms" for pth, tp, _ in per_path), file=sys.stderr)
    peak16_txt = f"{peak16:.0f} GFLOP/s" if peak16 == peak16 else "not measured (emulated on this CPU)"
    lines = [f"{args.threads} threads, median of {args.repeats} (interleaved); CPU search path chosen here: "
             f"`{ops._C.vq_cpu_path()}`; GEMM peak measured here (2048^3 torch.mm): fp32 {peak32:.0f} GFLOP/s, "
             f"bf16 {peak16_txt}", "",
             "| shapes | T | d | K | gate | ref (addmm + argmin) ms | ref GFLOP/s (of fp32 peak) | "
             "torch bf16 addmm + argmin ms, speed-up, agreement | " +
             " | ".join(f"`{pth}` ms, speed-up, identical" for pth in paths) +
             " | best path GFLOP/s (of fp32 peak, of bf16 peak) |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(paths) + "---|"]
    for name, t, d, k, gate, t_ref, t_b16, agree_b16, flops, per_path in rows:
        best = min(tp for _, tp, _ in per_path)
        cells = [f"{tp * 1e3:.1f}, {t_ref / tp:.2f}x, {'yes' if same else 'NO'}" for _, tp, same in per_path]
        gf = flops / best / 1e9
        of16 = f", {gf / peak16 * 100:.0f}%" if peak16 == peak16 else ""
        lines.append(f"| {name} | {t} | {d} | {k} | {'yes' if gate else 'no'} | {t_ref * 1e3:.1f} | "
                     f"{flops / t_ref / 1e9:.0f} ({flops / t_ref / 1e9 / peak32 * 100:.0f}%) | "
                     f"{t_b16 * 1e3:.1f}, {t_ref / t_b16:.2f}x, {agree_b16 * 100:.1f}% | " + " | ".join(cells) +
                     f" | {gf:.0f} ({gf / peak32 * 100:.0f}%{of16}) |")
    lines.append(f"\nRows that fell back to the exact scan (too many screen candidates): {ops._C.vq_cpu_fallback_rows()}")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(f"\n`python bench/bench_gate_vq.py {' '.join(sys.argv[1:])}`\n\n{table}\n")


if __name__ == "__main__":
    main()
