"""Decoder streaming ops: native kernel vs PyTorch reference, one CPU thread, public-model sizes.

    python bench/bench_decoder_ops.py [--threads N]

Prints a table (median of repeated runs, milliseconds)."""

import argparse
import time

import torch

from uniaudio_rt.decoder import ops


def median_ms(fn, reps=20):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    frames = 86  # one second of mel at 22050 / 256
    f0 = torch.rand(1, frames, generator=g) * 300
    phase = torch.zeros(1, 9, dtype=torch.float64)
    offset = torch.rand(1, 9, generator=g, dtype=torch.float64)
    x = torch.randn(1, 18, frames * 64, generator=g)
    w = torch.hann_window(16)
    tail = torch.zeros(1, 12)
    mel = [torch.randn(2, 80, frames, generator=g) for _ in range(3)]
    cx = torch.randn(1, 256, 64, generator=g)
    cs = torch.randn(1, 256, 2, generator=g)
    cw = torch.randn(256, 256, 3, generator=g)
    dx, ds, dw = torch.randn(1, 512, 1, generator=g), torch.randn(1, 512, 3, generator=g), torch.randn(512, 1, 4, generator=g)
    cases = [
        ("nsf_sine_source  1 s, 9 harmonics", lambda b: ops.nsf_sine_source(f0, phase, offset, 22050, 256, 0.1, 10, backend=b)),
        ("istft_ola        1 s, n_fft 16 hop 4", lambda b: ops.istft_ola(x, w, 4, tail, 0, True, backend=b)),
        ("cfg_euler_step   2 x 80 x 86", lambda b: ops.cfg_euler_step(*mel, 0.1, 0.7, backend=b)),
        ("causal_conv1d_update 256->256 k3, 64 steps", lambda b: ops.causal_conv1d_update(cx, cs, cw, None, backend=b)),
        ("causal_conv1d_update 256->256 k3, 1 step", lambda b: ops.causal_conv1d_update(cx[..., :1], cs, cw, None, backend=b)),
        ("causal_conv1d_update depthwise 512 k4, 1 step", lambda b: ops.causal_conv1d_update(dx, ds, dw, None, 1, 512, "silu", backend=b)),
    ]
    print(f"threads={args.threads}  native built: {ops.native_available()}")
    print(f"{'op':45s} {'ref ms':>9s} {'native ms':>10s} {'speed-up':>9s}")
    for name, fn in cases:
        ref = median_ms(lambda: fn("ref"))
        nat = median_ms(lambda: fn("native")) if ops.native_available() else float("nan")
        print(f"{name:45s} {ref:9.3f} {nat:10.3f} {ref / nat:8.1f}x")


if __name__ == "__main__":
    main()
