"""Encoder speed on CPU: the public-style reference against our runtime, same inputs, same run.

    python bench/encoder.py                       # public-size architecture (random weights)
    python bench/encoder.py --model DIR           # a checkpoint (e.g. the shipped default)
    python bench/encoder.py --cases 5s,30s,8x30s --threads 2 --out docs/bench_encoder.md

Each (backend, case) runs in its own process so that peak RSS is its own. Backends:
  ref       transformers WhisperEncoderLayer stack + torch VQ, run as the public WhisperVQEncoder
            forward does (every layer of the checkpoint, quantizer in the middle)
  ref16     the same reference stopped after the quantizer (what a careful user would do)
  fp32      our runtime: dead layers skipped, fused QKV, SDPA
  bf16      our runtime with bfloat16 layers (AVX-512 BF16)
  int8      our runtime with dynamic int8 linear layers (VNNI)
  ort       the exported ONNX graph (mel -> tokens) in ONNX Runtime (export time not counted)
Inputs are log-mels of real speech (asterisk English prompts, concatenated); speed does not depend on
weight values. Agreement is the fraction of tokens equal to ``ref``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CASES = {"5s": (1, 5), "30s": (1, 30), "8x30s": (8, 30)}
BACKENDS = ("ref", "ref16", "fp32", "bf16", "int8", "ort")


def build_model(model_dir):
    import torch

    from uniaudio_rt.checkpoint import load_encoder
    from uniaudio_rt.models import WhisperVQEncoder, public_uniaudio_token_config

    if model_dir:
        return load_encoder(model_dir)
    torch.manual_seed(0)
    m = WhisperVQEncoder(public_uniaudio_token_config()).eval()
    with torch.no_grad():  # codebook on the scale of the (LayerNorm-ed) SAE output
        m.codebook.weight.normal_()
    return m


def speech_mel(cfg, batch, seconds):
    import torch

    from real_audio import asterisk_dir
    from uniaudio_rt.audio import to_mono_16k
    from uniaudio_rt.mel import log_mel_spectrogram

    d = asterisk_dir()
    files = sorted(os.listdir(d))
    wavs, total, i = [], 0, 0
    need = batch * seconds * 16000
    while total < need:
        w = to_mono_16k(os.path.join(d, files[i % len(files)]))
        wavs.append(w)
        total += w.numel()
        i += 1
    audio = torch.cat(wavs)[:need].view(batch, seconds * 16000)
    return log_mel_spectrogram(audio, cfg.num_mel_bins, cfg.mel_floor_db)


class PublicStyleReference:
    """transformers' WhisperEncoderLayer stack driven like the public WhisperVQEncoder.forward."""

    def __init__(self, model, stop_after_quantizer: bool):
        import torch
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

        cfg = model.config
        hf_cfg = WhisperConfig(d_model=cfg.d_model, encoder_attention_heads=cfg.encoder_attention_heads,
                               encoder_ffn_dim=cfg.encoder_ffn_dim, num_mel_bins=cfg.num_mel_bins,
                               encoder_layers=cfg.encoder_layers)
        self.m, self.cfg = model, cfg
        n = cfg.quantize_position if stop_after_quantizer else len(model.layers)
        self.layers = []
        for i in range(n):
            layer = WhisperEncoderLayer(hf_cfg).eval()
            layer.load_state_dict(model.layers[i].state_dict())
            self.layers.append(layer)
        self.torch = torch

    def __call__(self, mel):
        torch, m, cfg = self.torch, self.m, self.cfg
        F = torch.nn.functional
        x = F.gelu(m.conv2(F.gelu(m.conv1(mel)))).transpose(1, 2)
        x = x + m.embed_positions.weight[: x.shape[1]]
        b = x.shape[0]
        tokens = None
        shallow = None

        def ext_mask(t):  # the public code passes an additive mask built from the attention mask
            return torch.zeros(b, 1, t, t)

        mask = ext_mask(x.shape[1])
        for pos in range(0, len(self.layers) + 1):
            if pos > 0:
                out = self.layers[pos - 1](x, mask)
                x = out[0] if isinstance(out, tuple) else out
            if cfg.pooling_kernel_size and pos == cfg.pooling_position:
                def pool(z):
                    z = z.transpose(1, 2)
                    z = F.avg_pool1d(z, cfg.pooling_kernel_size) if cfg.pooling_type == "avg" else \
                        F.max_pool1d(z, cfg.pooling_kernel_size)
                    return z.transpose(1, 2)
                x = pool(x)
                shallow = pool(shallow) if shallow is not None else None
                mask = ext_mask(x.shape[1])
            if cfg.has_residual and pos == cfg.encoder_residual_source_position:
                shallow = x
            if cfg.has_residual and pos == cfg.encoder_residual_target_position:
                x = m.sae(x, shallow)
            if pos == cfg.quantize_position:
                flat = x.reshape(-1, x.shape[-1])
                cb = m.codebook.weight
                dist = torch.addmm((cb ** 2).sum(1) + (flat ** 2).sum(1, keepdim=True), flat, cb.t(),
                                   alpha=-2.0, beta=1.0)
                tokens = dist.argmin(1).view(b, -1)
                x = cb[tokens] + m.embed_positions2.weight[: x.shape[1]]
        return tokens


def worker(args):
    import torch

    torch.set_num_threads(args.threads)
    from uniaudio_rt.runtime import prepare_for_inference

    batch, seconds = CASES[args.case]
    model = build_model(args.model)
    mel = speech_mel(model.config, batch, seconds)
    if args.backend in ("ref", "ref16"):
        run = PublicStyleReference(model, stop_after_quantizer=args.backend == "ref16")
    elif args.backend == "ort":
        import tempfile

        from uniaudio_rt.onnx_export import OnnxEncoder, export_tokenizer

        del model.layers[model.config.layers_needed_for_tokens:]
        with tempfile.TemporaryDirectory() as d:
            export_tokenizer(model, d)
            del model
            enc = OnnxEncoder(d, num_threads=args.threads)
        mask = torch.ones(mel.shape[0], mel.shape[-1], dtype=torch.bool)
        run = lambda m: enc.encode_tokens(m, mask)[0]  # noqa: E731
    else:
        del model.layers[model.config.layers_needed_for_tokens:]  # as load_encoder(for_tokens=True) builds it
        import gc
        gc.collect()
        rt = prepare_for_inference(model, args.backend)
        run = lambda m: rt.encode_tokens(m)[0]  # noqa: E731
    times = []
    with torch.no_grad():
        tokens = run(mel)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tokens = run(mel)
            times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    print(json.dumps({"backend": args.backend, "case": args.case, "seconds": t, "times": times,
                      "audio_s": batch * seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "tokens": tokens.reshape(-1).tolist()}))


def gemm_peak(threads):
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    from uniaudio_rt.runtime import cpu_has_native_bf16

    out = {"bf16": float("nan")}  # emulated bf16 GEMMs take minutes and are no roofline: not measured
    for name, dt in (("fp32", torch.float32),) + ((("bf16", torch.bfloat16),) if cpu_has_native_bf16() else ()):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t0 = time.perf_counter()
        for _ in range(5):
            x @ y
        out[name] = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
    return out


def model_flops(cfg, frames_50hz):
    """Multiply-adds x2 of the layers the tokens need (projections, attention, MLP)."""
    d, f = cfg.d_model, cfg.encoder_ffn_dim
    total = 0.0
    for pos in range(1, cfg.quantize_position + 1):
        pooled = cfg.pooling_kernel_size and pos > cfg.pooling_position
        t = frames_50hz // (cfg.pool if pooled else 1)
        total += 2 * t * (4 * d * d + 2 * d * f) + 2 * 2 * t * t * d
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory (default: public-size random weights)")
    p.add_argument("--cases", default="5s,30s,8x30s")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="append the markdown table to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from uniaudio_rt.models import public_uniaudio_token_config

    cfg = build_model(args.model).config if args.model else public_uniaudio_token_config()
    peak = gemm_peak(args.threads)
    rows = []
    for case in args.cases.split(","):
        results = {}
        for backend in args.backends.split(","):
            cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--case", case,
                   "--threads", str(args.threads), "--repeats", str(args.repeats)]
            if args.model:
                cmd += ["--model", args.model]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{backend} {case} failed")
            results[backend] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"  {case:6s} {backend:6s} {results[backend]['seconds']:.3f} s", file=sys.stderr, flush=True)
        ref = np.asarray(results["ref"]["tokens"]) if "ref" in results else None
        batch, seconds = CASES[case]
        flops = model_flops(cfg, seconds * 50) * batch
        for backend, res in results.items():
            t = res["seconds"]
            agree = float(np.mean(np.asarray(res["tokens"]) == ref)) if ref is not None else float("nan")
            speedup = results["ref"]["seconds"] / t if "ref" in results else float("nan")
            peak_ref = peak["bf16"] if backend == "bf16" else peak["fp32"]
            # the fraction is against a GEMM of the same precision; int8 has no such GEMM here
            frac = flops / t / 1e9 / peak_ref if backend not in ("ref", "int8", "ort") else float("nan")
            frac = float("nan") if frac != frac else frac
            rows.append((case, backend, t / res["audio_s"], res["audio_s"] / t, res["rss_mb"], agree, speedup,
                         flops / t / 1e9 if backend != "ref" else float("nan"), frac))
    name = args.model or "public-size UniAudio-Token (random weights)"
    lines = [f"Model: {name}; {args.threads} threads; median of {args.repeats}; "
             f"GEMM peak measured here: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s "
             f"(2048^3 torch.mm)", "",
             "| case | backend | RTF | audio s / s | peak RSS MB | token agreement vs ref | speed-up vs ref | GFLOP/s | of GEMM peak |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        frac = "-" if np.isnan(r[8]) else f"{r[8] * 100:.0f}%"
        gflops = "-" if np.isnan(r[7]) else f"{r[7]:.0f}"
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.1f} | {r[4]:.0f} | {r[5] * 100:.2f}% | {r[6]:.2f}x | "
                     f"{gflops} | {frac} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(f"\n`python bench/encoder.py {' '.join(sys.argv[1:])}`\n\n{table}\n")


if __name__ == "__main__":
    main()
