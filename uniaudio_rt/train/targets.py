"""Decoder targets rendered from a clip's SAP record.

``sap``: compact JSON text in the public field order (transcription first), fields the source does
not state left out, measurement numbers in prosody/timbre left out (``"mid pitch (184 Hz)"`` ->
``"mid pitch"``): the decoder learns the categories, and targets stay short.
``transcript``: the transcription alone (empty for clips without speech), i.e. a plain semantic
tokenizer's supervision.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

_NUMBERS = re.compile(r"\s*\([^)]*\)")
MODES = ("sap", "transcript")


def render_target(sap: dict[str, Any], mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"target mode must be one of {MODES}, got {mode!r}")
    text = sap.get("transcription") or ""
    if mode == "transcript":
        return text
    out: dict[str, Any] = {}
    if text:
        out["transcription"] = text
    para = {}
    for k, v in (sap.get("paralinguistics") or {}).items():
        if v is not None:
            para[k] = _NUMBERS.sub("", v) if k in ("prosody", "timbre") else v
    if para:
        out["paralinguistics"] = para
    events = sap.get("nonLinguisticEvents") or []
    if events:
        out["nonLinguisticEvents"] = list(events)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


_TRANSCRIPTION = re.compile(r'"transcription"\s*:\s*"((?:[^"\\]|\\.)*)')


def parse_transcription(generated: str, mode: str) -> Optional[str]:
    """The transcription inside a generated target; lenient with truncated or broken JSON."""
    if mode == "transcript":
        return generated.strip()
    try:
        obj = json.loads(generated)
        if isinstance(obj, dict):
            t = obj.get("transcription")
            return t if isinstance(t, str) else ""
    except json.JSONDecodeError:
        pass
    m = _TRANSCRIPTION.search(generated)
    if m is None:
        return ""
    try:
        return json.loads('"' + m.group(1) + '"')
    except json.JSONDecodeError:
        return m.group(1)


_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)


def normalize_text(s: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (for CER/WER)."""
    return " ".join(_PUNCT.sub(" ", s.lower()).split())


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def common_subsequence(a, b) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``: the reference units a hypothesis
    recovers in order, whatever it inserts around them."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def _units(refs: list[str], hyps: list[str], unit: str):
    if unit not in ("char", "word"):
        raise ValueError(f"unit must be 'char' or 'word', not {unit!r}")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    for r, h in zip(refs, hyps):
        r, h = normalize_text(r), normalize_text(h)
        yield (list(r), list(h)) if unit == "char" else (r.split(), h.split())


def recall_counts(refs: list[str], hyps: list[str], unit: str = "word") -> list[tuple[int, int]]:
    """Per pair: (reference units recovered in order, reference length) over normalized texts. Unlike
    an error rate, insertions cost nothing, so a hypothesis that loops or rambles is scored on what
    it got right; a text unrelated to the reference still scores its chance overlap."""
    return [(common_subsequence(rs, hs), len(rs)) for rs, hs in _units(refs, hyps, unit)]


def _pooled(counts: list[tuple[int, int]]) -> float:
    """Corpus rate of per-pair (count, reference length): the counts summed over the lengths summed."""
    return sum(c for c, _ in counts) / max(sum(n for _, n in counts), 1)


def recall_rate(refs: list[str], hyps: list[str], unit: str = "word") -> float:
    """Corpus share of reference words (unit='word') or characters recovered in order (recall_counts)."""
    return _pooled(recall_counts(refs, hyps, unit))


def edit_counts(refs: list[str], hyps: list[str], unit: str = "char") -> list[tuple[int, int]]:
    """Per pair: (edit distance, reference length) over normalized texts, in characters
    (unit='char') or words (unit='word'); what error_rate sums."""
    return [(edit_distance(rs, hs), len(rs)) for rs, hs in _units(refs, hyps, unit)]


def error_rate(refs: list[str], hyps: list[str], unit: str = "char") -> float:
    """Corpus CER (unit='char') or WER (unit='word') over normalized texts."""
    return _pooled(edit_counts(refs, hyps, unit))
