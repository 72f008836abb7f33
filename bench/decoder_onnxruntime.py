"""Streaming decode speed: ONNX Runtime (OrtDetokenizer) against PyTorch eager (Detokenizer.stream), same run.

    python bench/decoder_onnxruntime.py [--config tiny|public|default] [--seconds 10] [--chunk-tokens 25] [--threads 2]
                                        [--repeat 3] [--onnx DIR]

Random weights (speed does not depend on values) or the shipped decoder, 25 tokens/s. The decoder is exported to ONNX first (into
--onnx DIR, reused when it already holds an export of the same config: the public sizes take minutes), both
backends are warmed up on one chunk, then the same tokens stream through each with the same random draws
(TorchRandom with one seed), alternating backends --repeat times. Reported per backend: median wall time,
audio seconds produced per wall second (audio s = samples / 22050; the tiny vocoder makes 32 samples per
mel frame where the public one makes 256), real-time factor, the speed ratio to PyTorch, and max |ORT - PyTorch|
over the audio (a check that both decoded the same thing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig  # noqa: E402
from uniaudio_rt.decoder.detokenizer import Detokenizer  # noqa: E402
from uniaudio_rt.decoder.flow import FlowDecoder  # noqa: E402
from uniaudio_rt.decoder.hift import HiFTGenerator  # noqa: E402
from uniaudio_rt.decoder.onnx_export import OrtDetokenizer, TorchRandom, export_decoder  # noqa: E402


def make_decoder(config: str) -> Detokenizer:
    torch.manual_seed(0)
    if config == "default":  # the decoder shipped in the package (trained weights)
        return Detokenizer.from_pretrained()
    if config == "tiny":
        return Detokenizer(FlowDecoder(FlowConfig.tiny()), HiFTGenerator(HiFTConfig.tiny()))
    return Detokenizer(FlowDecoder(FlowConfig(input_frame_rate=25.0)), HiFTGenerator(HiFTConfig()))


def chunks(tokens: torch.Tensor, size: int) -> list:
    return [tokens[:, i:i + size] for i in range(0, tokens.shape[1], size)]


def timed(stream) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    wav = [np.asarray(w) for w in stream]
    return time.perf_counter() - t0, np.concatenate(wav, -1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=("tiny", "public", "default"), default="tiny",
                   help="random tiny / public sizes, or the shipped default decoder")
    p.add_argument("--seconds", type=float, default=10.0, help="token stream length, in seconds at 25 tokens/s")
    p.add_argument("--chunk-tokens", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--onnx", default=None, help="export directory (kept; reused if it holds this config's export)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    det = make_decoder(args.config)
    out = args.onnx or tempfile.mkdtemp(prefix="decoder_onnx_")
    stamp = os.path.join(out, "bench_config.json")
    if not os.path.isfile(stamp) or open(stamp).read() != json.dumps({"config": args.config}):
        t0 = time.perf_counter()
        export_decoder(det, out)
        with open(stamp, "w") as f:
            json.dump({"config": args.config}, f)
        print(f"exported to {out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ort_det = OrtDetokenizer(out, num_threads=args.threads)

    n = int(round(args.seconds * 25))
    tokens = torch.randint(0, det.flow.cfg.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
    backends = {  # token tensor -> stream of wav chunks, same random draws for both
        "PyTorch eager (Detokenizer.stream)":
            lambda t: det.stream(chunks(t, args.chunk_tokens), generator=torch.Generator().manual_seed(1)),
        "ONNX Runtime (OrtDetokenizer)":
            lambda t: ort_det.stream(chunks(t, args.chunk_tokens), rng=TorchRandom(torch.Generator().manual_seed(1))),
    }
    for make in backends.values():  # warm-up on one chunk: sessions, allocators, first-call costs
        timed(make(tokens[:, :args.chunk_tokens]))
    times: dict = {name: [] for name in backends}
    wavs = {}
    for _ in range(args.repeat):
        for name, make in backends.items():
            dt, wavs[name] = timed(make(tokens))
            times[name].append(dt)
    names = list(backends)
    audio_s = wavs[names[0]].shape[-1] / det.sample_rate
    base = float(np.median(times[names[0]]))
    lines = [f"`python bench/decoder_onnxruntime.py {' '.join(sys.argv[1:])}`", "",
             f"{args.config} decoder ({'shipped weights' if args.config == 'default' else 'random weights'}), {n} tokens ({n / 25:g} s at 25 tokens/s) in chunks of "
             f"{args.chunk_tokens}, "
             f"{args.threads} thread(s), median of {args.repeat}; max |ORT - PyTorch| = "
             f"{np.abs(wavs[names[1]] - wavs[names[0]]).max():.2e}", "",
             "| backend | audio s | wall s | audio s / s | RTF | speed vs PyTorch |", "|---|---|---|---|---|---|"]
    for name in names:
        t = float(np.median(times[name]))
        lines.append(f"| {name} | {audio_s:.2f} | {t:.3f} | {audio_s / t:.1f} | {t / audio_s:.3f} | {base / t:.2f}x |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
