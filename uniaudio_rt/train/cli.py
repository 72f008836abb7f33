"""``uniaudio-rt train`` and ``uniaudio-rt evaluate``."""

from __future__ import annotations

import argparse
import json


def add_subparser(sub) -> None:
    p = sub.add_parser(
        "train", help="SAP-train a tokenizer (CPU, resumable)",
        description="Train the tokenizer with SAP supervision from a config file (YAML or JSON; keys: "
                    "uniaudio_rt.train.config.TrainConfig). Rerunning the same command resumes from "
                    "OUT/checkpoint.pt. The result is OUT/tokenizer (config.json + model.safetensors).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="training config file")
    p.add_argument("--corpus", default=None, help="override `corpus` (a `uniaudio-rt data build` output)")
    p.add_argument("--out", default=None, help="override `out`")
    p.add_argument("--steps", type=int, default=None, help="override `steps`")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate", help="event purity, gender probe, SAP-decoder CER, acoustic probes, codebook usage of a tokenizer",
        description="Metrics on the corpus' visible evaluation sets (docs/RESULTS.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--run", default=None, help="training output directory (tokenizer/ + sap_decoder/)")
    e.add_argument("--tokenizer", default=None, help="a tokenizer directory instead of RUN/tokenizer (no CER)")
    e.add_argument("--corpus", required=True, help="corpus directory with eval_* splits")
    e.add_argument("--json", default=None, help="also write the metrics to this file")
    e.add_argument("--no-repeat-ngram", type=int, default=0,
                   help="SAP-decoder greedy search never repeats an n-gram of this size (0: plain greedy)")
    e.add_argument("--sets", default="events,gender,wer,acoustic",
                   help="comma-separated evaluation sets to measure (events, gender, wer, acoustic; CER needs wer; "
                        "acoustic: frame-level code probes of log-mel, level and F0 on the speech of gender and wer)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "train-ship", help="install a trained run's tokenizer as the package default (float16 + card)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--run", required=True, help="training output directory (after `evaluate --json RUN/metrics.json`)")
    s.add_argument("--corpus", required=True, help="corpus (for the float16 agreement check)")
    s.add_argument("--out", default=None, help="default: the package's assets/default")
    s.set_defaults(func=cmd_ship)

    r = sub.add_parser("train-report", help="markdown ablation table from RUN/metrics.json files")
    r.add_argument("runs", nargs="+", help="training output directories")
    r.add_argument("--baseline", action="append", default=[], metavar="LABEL=METRICS.json",
                   help="extra rows from `evaluate --tokenizer ... --json` files")
    r.set_defaults(func=cmd_report)


def cmd_train(args) -> int:
    from .config import TrainConfig
    from .loop import train

    try:
        cfg = TrainConfig.load(args.config, corpus=args.corpus, out=args.out, steps=args.steps, threads=args.threads)
    except (OSError, ValueError) as e:
        raise SystemExit(f"uniaudio-rt train: {e}")
    out = train(cfg, progress=not args.no_progress)
    print(json.dumps({"out": out}))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    if not args.run and not args.tokenizer:
        raise SystemExit("uniaudio-rt evaluate: give --run or --tokenizer")
    if args.no_repeat_ngram < 0:
        raise SystemExit("uniaudio-rt evaluate: --no-repeat-ngram must be >= 0")
    from .evaluate import SETS

    sets = tuple(x.strip() for x in args.sets.split(",") if x.strip())
    if not sets or any(x not in SETS for x in sets):
        raise SystemExit(f"uniaudio-rt evaluate: --sets must name some of {', '.join(SETS)}, got {args.sets!r}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("uniaudio-rt evaluate: --threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    res = evaluate(args.run, args.corpus, args.tokenizer, progress=not args.no_progress, out_json=args.json,
                   no_repeat_ngram=args.no_repeat_ngram, sets=sets)
    print(json.dumps(res, indent=2, ensure_ascii=False))
    return 0


def cmd_ship(args) -> int:
    from ..tokenizer import DEFAULT_MODEL_DIR
    from .ship import ship

    try:
        stats = ship(args.run, args.out or DEFAULT_MODEL_DIR, args.corpus)
    except (OSError, ValueError) as e:
        raise SystemExit(f"uniaudio-rt train-ship: {e}")
    print(json.dumps({k: v for k, v in stats.items() if k != "train_config"}, indent=1, ensure_ascii=False))
    return 0


def cmd_report(args) -> int:
    from .report import table

    extra = {}
    for b in args.baseline:
        label, _, path = b.partition("=")
        if not path:
            raise SystemExit(f"--baseline wants LABEL=METRICS.json, got {b!r}")
        extra[label] = path
    print(table(args.runs, extra))
    return 0
