"""``uniaudio-rt`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

# Modules that register further subcommands: each has ``add_subparser(subparsers)``.
_EXTENSIONS: list[str] = []


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


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from . import __version__

    parser = argparse.ArgumentParser(
        prog="uniaudio-rt", description="UniAudio-Token runtime: tokenize audio and more.")
    parser.add_argument("--version", action="version", version=f"uniaudio-rt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_tokenize(sub)
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
