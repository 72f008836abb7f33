"""`uniaudio-rt detokenize` and `uniaudio-rt reconstruct`: tokens (or audio) back to a waveform.

Without ``--decoder`` both commands use the decoder shipped in the package
(``uniaudio_rt/assets/decoder``, trained here on the default tokenizer's tokens, docs/RESULTS.md).
``--decoder DIR`` takes any decoder directory in the public layout (``config.yaml``, ``flow.pt``,
``hift.pt``; GLM-4-Voice / UniAudio-Token family). A decoder must have been trained on the same
tokenizer's tokens.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np


def _read_tokens(path: str) -> list[list[int]]:
    """tokens.json ({"tokens": {name: [...]}} from `tokenize`, or a bare list), .jsonl, or .npy."""
    if path.endswith(".npy"):
        arr = np.load(path)
        if arr.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D token array, got shape {arr.shape}")
        return [arr.astype(np.int64).tolist()]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
        items = [data]
    except json.JSONDecodeError as whole:
        try:   # JSON lines: one token list or tokenize record per line
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"{path}: neither JSON nor JSON lines ({whole})") from None
        if not items:
            raise ValueError(f"{path}: empty file")
    out = []
    for item in items:
        if isinstance(item, dict) and "tokens" in item:
            t = item["tokens"]
            out.extend(t.values() if isinstance(t, dict) else [t])
        elif isinstance(item, list):
            out.append(item)
        else:
            raise ValueError(f"{path}: expected a token list or the JSON written by `uniaudio-rt tokenize`")
    for seq in out:
        if not seq or not all(isinstance(v, int) and v >= 0 for v in seq):
            raise ValueError(f"{path}: token sequences must be non-empty lists of non-negative integers")
    return out


def add_sampling_args(p) -> None:
    """The flow sampler's options (SamplingConfig), shared by detokenize, reconstruct, evaluate-decoder."""
    g = p.add_argument_group("flow sampler (default: the decoder config's)")
    g.add_argument("--flow-steps", type=int, default=None, metavar="N",
                   help="Euler steps of the flow-matching ODE (public recipe: 10)")
    g.add_argument("--cfg-rate", type=float, default=None, metavar="R",
                   help="classifier-free guidance rate (public recipe: 0.7; 0 = no guidance)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="scale of the initial noise (0 = deterministic ODE from zero)")


def add_segment_arg(p) -> None:
    p.add_argument("--segment-seconds", type=float, default=30.0, metavar="S",
                   help="inputs longer than S seconds are decoded in S-second segments through the "
                        "streaming decoder (time and memory linear in the length; the one-shot decode's "
                        "grow with its square); 0 = always one shot (default: 30)")


def sampling_from_args(args):
    from .detokenizer import SamplingConfig

    return SamplingConfig(n_timesteps=args.flow_steps, cfg_rate=args.cfg_rate, temperature=args.temperature)


def _load_decoder(args):
    from .detokenizer import Detokenizer

    sampling = sampling_from_args(args)   # bad values fail before the weights load
    if args.decoder is not None and not os.path.isdir(args.decoder):
        raise ValueError(f"--decoder {args.decoder!r} is not a directory (expected config.yaml, flow.pt, hift.pt)")
    return Detokenizer.from_pretrained(args.decoder, sampling=sampling)


def _write(wav, rate: int, path: str) -> None:
    import soundfile as sf

    sf.write(path, np.asarray(wav, dtype=np.float32).reshape(-1), rate, subtype="PCM_16")


def segment_tokens(det, segment_seconds: float) -> int:
    """Tokens per segment for ``--segment-seconds`` (0: no segments, the one-shot decode)."""
    if not math.isfinite(segment_seconds) or (segment_seconds != 0 and segment_seconds < 1):
        raise ValueError(f"--segment-seconds must be 0 (one shot) or at least 1, got {segment_seconds}")
    return round(segment_seconds * det.flow.cfg.input_frame_rate)


def _synthesize(det, tokens: list[int], seed: int, segment: int = 0, name: str = ""):
    """One sequence -> wav: one shot up to ``segment`` tokens, beyond that in segments through the
    streaming decoder (Detokenizer.segmented: time and memory linear in the length)."""
    import torch
    from tqdm import tqdm

    vocab = det.flow.cfg.vocab_size
    if max(tokens) >= vocab:
        raise ValueError(f"token {max(tokens)} is outside the decoder's vocabulary of {vocab}")
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(tokens, dtype=torch.long)
    if not segment or len(tokens) <= segment:
        return det(t, generator=g)[0].numpy()
    bar = lambda segs: tqdm(segs, desc=f"detokenize {name}".strip(), unit="segment", leave=False)  # noqa: E731
    return det.segmented(t, segment, generator=g, wrap=bar)[0].numpy()


def cmd_detokenize(args) -> int:
    seqs = _read_tokens(args.tokens)
    if len(seqs) > 1 and not os.path.isdir(args.output):
        raise ValueError(f"{args.tokens} holds {len(seqs)} sequences: -o must be an existing directory")
    det = _load_decoder(args)
    segment = segment_tokens(det, args.segment_seconds)
    for i, seq in enumerate(seqs):
        path = args.output if len(seqs) == 1 else os.path.join(args.output, f"{i:05d}.wav")
        _write(_synthesize(det, seq, args.seed, segment, os.path.basename(path)), det.sample_rate, path)
        print(f"{path}: {len(seq)} tokens -> {len(seq) / det.flow.cfg.input_frame_rate:.2f} s", file=sys.stderr)
    return 0


def cmd_reconstruct(args) -> int:
    from ..tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.model) if args.model else Tokenizer.from_pretrained()
    det = _load_decoder(args)
    segment = segment_tokens(det, args.segment_seconds)
    tokens = tok.encode(args.input)
    if not tokens:
        raise ValueError(f"{args.input}: no tokens (audio shorter than one token)")
    _write(_synthesize(det, tokens, args.seed, segment, os.path.basename(args.output)), det.sample_rate, args.output)
    print(f"{args.output}: {len(tokens)} tokens", file=sys.stderr)
    return 0


def _clean_errors(func):
    def run(args) -> int:
        try:
            return func(args)
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def add_subparser(sub) -> None:
    p = sub.add_parser("detokenize", help="tokens (JSON from `tokenize`, .jsonl or .npy) -> wav",
                       description=__doc__)
    p.add_argument("tokens", help="tokens.json / .jsonl / .npy")
    p.add_argument("-o", "--output", required=True, help="output .wav (a directory for several sequences)")
    p.add_argument("--decoder", default=None,
                   help="decoder directory: config.yaml, flow.pt, hift.pt (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="flow-matching noise seed")
    add_segment_arg(p)
    add_sampling_args(p)
    p.set_defaults(func=_clean_errors(cmd_detokenize))
    p = sub.add_parser("reconstruct", help="audio -> tokens -> audio", description=__doc__)
    p.add_argument("input", help="audio file")
    p.add_argument("-o", "--output", required=True, help="output .wav")
    p.add_argument("--model", default=None, help="tokenizer checkpoint directory (default: the shipped one)")
    p.add_argument("--decoder", default=None,
                   help="decoder directory: config.yaml, flow.pt, hift.pt (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="flow-matching noise seed")
    add_segment_arg(p)
    add_sampling_args(p)
    p.set_defaults(func=_clean_errors(cmd_reconstruct))
