"""Nearest-code search on small calls (a streaming hop re-quantizes a few frames): every CPU path
against the PyTorch reference, same run.

    python bench/bench_vq_small.py [--rows 2,25,100] [--calls 51] [--threads 2]

Codebook: the shipped default's (K = 1024, d = 384); rows: LayerNorm-ed random. Median of single
calls, the reference and the paths interleaved per call. "auto" is the run-time choice (on an AMX
CPU: the int16 screen below 8 rows, AMX from 8 rows on).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from bench_gate_vq import CPU_PATHS, interleaved_medians, set_path  # noqa: E402
from uniaudio_rt import ops  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="2,25,100")
    p.add_argument("--calls", type=int, default=51)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if ops._C is None:
        raise SystemExit("the native extension is not built (pip install --no-build-isolation -e .)")
    from uniaudio_rt.checkpoint import load_encoder
    from uniaudio_rt.tokenizer import DEFAULT_MODEL_DIR

    cb = load_encoder(DEFAULT_MODEL_DIR).codebook.weight.detach().float()
    cache = ops.Codebook.from_tensor(cb)
    paths = [pth for pth in CPU_PATHS if pth != "portable" and ops._C.vq_cpu_path_supported(pth)]
    g = torch.Generator().manual_seed(0)
    lines = [f"{args.threads} threads, median of {args.calls} calls; K = {cb.shape[0]}, d = {cb.shape[1]}", "",
             "| rows | " + " | ".join(f"`{pth}` us, identical" for pth in paths) +
             " | auto (what the runtime uses) us | ref (addmm + argmin) us |",
             "|---:|" + "---:|" * (len(paths) + 2)]
    for t in (int(v) for v in args.rows.split(",")):
        x = torch.nn.functional.layer_norm(torch.randn(t, cb.shape[1], generator=g), (cb.shape[1],))
        fast = [set_path(pth, lambda: ops.vq_argmin(x, cache, backend="cpp")) for pth in paths]
        fast.append(set_path("auto", lambda: ops.vq_argmin(x, cache, backend="cpp")))
        times = interleaved_medians(fast + [lambda: ops.vq_argmin_ref(x, cb)], args.calls)
        expect = ops.vq_argmin_ref(x, cb)
        cells = [f"{tp * 1e6:.0f}, {'yes' if torch.equal(f(), expect) else 'NO'}" for f, tp in zip(fast, times)]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {times[-1] * 1e6:.0f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
