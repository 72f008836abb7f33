"""``uniaudio-rt`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

# Modules that register further subcommands: each has ``add_subparser(subparsers)``.
_EXTENSIONS: list[str] = ["uniaudio_rt.onnx_export", "uniaudio_rt.default_model", "uniaudio_rt.decoder.cli", "uniaudio_rt.data.cli", "uniaudio_rt.train.cli", "uniaudio_rt.decoder.train_cli"]


def _add_tokenize(sub) -> None:
    p = sub.add_parser(
        "tokenize", help="turn audio files into tokens",
        description="Tokenize audio files (any rate, mono or multi-channel; wav/flac/ogg/mp3) into "
                    "integer tokens. Files that fail are reported and skipped; the exit status is 1 "
                    "if any failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("files", nargs="+", help="audio files")
    p.add_argument("--model", default=None,
                   help="checkpoint directory (config.json + model.safetensors) or uniaudio-rt "
                        "single-file checkpoint; default: the model shipped with the package")
    p.add_argument("-o", "--output", default="-",
                   help="output: a .json/.jsonl file or '-' for stdout; with --format npy, a directory")
    p.add_argument("--format", choices=("json", "jsonl", "npy"), default=None,
                   help="output format (default: from the output's extension, else json)")
    p.add_argument("--batch-size", type=int, default=8, help="30 s segments per forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--channel", default="mix",
                   help="'mix' averages channels; an integer picks one (0 = the public reference's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tokenize)


def _output_format(args) -> str:
    if args.format:
        return args.format
    if args.output.endswith(".jsonl"):
        return "jsonl"
    return "json"


def cmd_tokenize(args) -> int:
    from tqdm import tqdm

    from .tokenizer import Tokenizer

    channel = int(args.channel) if args.channel.lstrip("-").isdigit() else args.channel
    if channel != "mix" and not isinstance(channel, int):
        raise SystemExit(f"--channel must be 'mix' or an integer, got {args.channel!r}")
    fmt = _output_format(args)
    if fmt == "npy" and args.output == "-":
        raise SystemExit("--format npy needs -o DIRECTORY")
    try:
        tok = Tokenizer.from_pretrained(args.model, batch_size=args.batch_size, channel=channel,
                                        num_threads=args.threads)
    except ValueError as e:
        raise SystemExit(f"error: {e}")

    results: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    t0 = time.perf_counter()
    audio_s = 0.0
    for path in tqdm(args.files, unit="file", disable=args.no_progress or len(args.files) < 2,
                     dynamic_ncols=True):
        try:
            tokens = tok.encode(path)
        except ValueError as e:
            failed[path] = str(e)
            print(f"error: {e}", file=sys.stderr)
            continue
        results[path] = tokens
        audio_s += len(tokens) / tok.frame_rate
    elapsed = time.perf_counter() - t0

    meta = {"frame_rate": tok.frame_rate, "vocab_size": tok.vocab_size,
            "model": os.path.abspath(args.model) if args.model else "default"}
    if fmt == "npy":
        import numpy as np

        os.makedirs(args.output, exist_ok=True)
        used: set[str] = set()
        index = {}
        for path, tokens in results.items():
            stem = os.path.splitext(os.path.basename(path))[0]
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}-{n}"
            used.add(name)
            np.save(os.path.join(args.output, name + ".npy"), np.asarray(tokens, dtype=np.int32))
            index[path] = name + ".npy"
        with open(os.path.join(args.output, "index.json"), "w", encoding="utf-8") as f:
            json.dump({**meta, "files": index, "errors": failed}, f, indent=1)
    else:
        if fmt == "json":
            text = json.dumps({**meta, "tokens": results, "errors": failed}) + "\n"
        else:
            text = "".join(json.dumps({"path": p, "tokens": t}) + "\n" for p, t in results.items())
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
    if not args.no_progress:
        print(f"tokenized {len(results)}/{len(args.files)} file(s), {audio_s:.1f} s of audio in "
              f"{elapsed:.2f} s", file=sys.stderr)
    return 1 if failed else 0


def _add_stream(sub) -> None:
    p = sub.add_parser(
        "stream", help="simulate real-time streaming tokenization of a file",
        description="Feed a file to StreamingTokenizer in chunks as a live source would and print, per "
                    "chunk, the tokens released and the compute time; then a latency summary.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="audio file (any rate; resampled to 16 kHz, mixed to mono)")
    p.add_argument("--model", default=None, help="checkpoint directory; default: the shipped model")
    p.add_argument("--chunk-ms", type=float, default=80.0, help="audio per push")
    p.add_argument("--mode", choices=("auto", "exact", "window"), default="auto")
    p.add_argument("--lookahead-ms", type=float, default=640.0, help="window mode: audio a token waits for")
    p.add_argument("--left-context-ms", type=float, default=4000.0, help="window mode: context re-encoded")
    p.add_argument("--realtime", action="store_true", help="sleep so chunks arrive at real-time pace")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="only the summary and the tokens")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args) -> int:
    import numpy as np

    from .audio import to_mono_16k
    from .streaming import StreamingTokenizer
    from .tokenizer import Tokenizer

    if args.chunk_ms <= 0:
        raise SystemExit(f"--chunk-ms must be > 0, got {args.chunk_ms}")
    try:
        tok = Tokenizer.from_pretrained(args.model, num_threads=args.threads)
        wav = to_mono_16k(args.file)
        st = StreamingTokenizer(tok, mode=args.mode, lookahead_ms=args.lookahead_ms,
                                left_context_ms=args.left_context_ms, step_ms=args.chunk_ms)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    hop = max(1, int(round(args.chunk_ms * 16)))
    tokens: list[int] = []
    costs = []
    first_token_latency = None
    start = time.perf_counter()
    for i in range(0, wav.numel(), hop):
        chunk = wav[i: i + hop]
        if args.realtime:
            due = start + (i + chunk.numel()) / 16000
            time.sleep(max(0.0, due - time.perf_counter()))
        t0 = time.perf_counter()
        new = st.push(chunk)
        dt = time.perf_counter() - t0
        costs.append(dt)
        audio_t = (i + chunk.numel()) / 16000
        if new and first_token_latency is None:
            # audio received until the first token came out, plus the compute that released it
            first_token_latency = audio_t + dt
        tokens += new
        if not args.quiet:
            print(f"chunk {len(costs):5d}  t={audio_t:7.2f}s  +{len(new):3d} tokens  {dt * 1000:8.2f} ms")
    t0 = time.perf_counter()
    tokens += st.flush()
    flush_ms = (time.perf_counter() - t0) * 1000
    c = np.asarray(costs) * 1000
    print(f"mode={st.mode} chunks={len(c)} chunk={args.chunk_ms:g} ms  compute per chunk: "
          f"mean {c.mean():.2f} ms, p50 {np.percentile(c, 50):.2f}, p95 {np.percentile(c, 95):.2f}, "
          f"max {c.max():.2f}; flush {flush_ms:.2f} ms; RTF {c.sum() / 1000 / (wav.numel() / 16000):.3f}; "
          f"first token after {first_token_latency if first_token_latency is not None else float('nan'):.3f} s "
          f"of audio+compute; {len(tokens)} tokens", file=sys.stderr)
    print(json.dumps({"tokens": tokens, "frame_rate": tok.frame_rate, "mode": st.mode}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from . import __version__

    parser = argparse.ArgumentParser(
        prog="uniaudio-rt", description="UniAudio-Token runtime: tokenize audio and more.")
    parser.add_argument("--version", action="version", version=f"uniaudio-rt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_tokenize(sub)
    _add_stream(sub)
    for mod in _EXTENSIONS:
        importlib.import_module(mod).add_subparser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
