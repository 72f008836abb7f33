"""Corpus manifest (TSV + parquet) and the public SAP parquet layout.

``manifest.tsv`` / ``manifest.parquet``: one row per clip with the columns of ``MANIFEST_COLUMNS``.
``sap/SPLIT.parquet``: the public layout a trainer reads: ``id``, ``audio`` (struct of FLAC ``bytes``
and ``path``) and ``sap`` (the SAP target as JSON text).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Iterable

# (name, type) with type one of str | float | int; None is allowed for every str column except the
# identifying ones (id, path, source, package, version, license, split, kind, md5)
MANIFEST_COLUMNS: tuple[tuple[str, type], ...] = (
    ("id", str), ("path", str), ("duration", float), ("split", str), ("source", str), ("package", str),
    ("version", str), ("license", str), ("kind", str), ("language", str), ("speaker", str), ("gender", str),
    ("transcript", str), ("event", str), ("md5", str), ("origin", str), ("f0_median_hz", float),
    ("syllables_per_second", float),
)
REQUIRED = ("id", "path", "duration", "split", "source", "package", "version", "license", "kind", "md5", "origin")


def _arrow_schema():
    import pyarrow as pa

    types = {str: pa.string(), float: pa.float64(), int: pa.int64()}
    return pa.schema([(name, types[t]) for name, t in MANIFEST_COLUMNS])


def check_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming a missing/extra column or a value of the wrong type."""
    names = [n for n, _ in MANIFEST_COLUMNS]
    if sorted(row) != sorted(names):
        raise ValueError(f"manifest row columns {sorted(row)} != expected {sorted(names)}")
    for name, t in MANIFEST_COLUMNS:
        v = row[name]
        if v is None:
            if name in REQUIRED:
                raise ValueError(f"manifest column {name!r} must not be empty (row {row.get('id')})")
            continue
        if not isinstance(v, t) or (t is float and v != v):
            raise ValueError(f"manifest column {name!r} must be {t.__name__}, got {v!r} (row {row.get('id')})")


def write_manifest(rows: list[dict[str, Any]], out: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for r in rows:
        check_row(r)
    names = [n for n, _ in MANIFEST_COLUMNS]
    tmp = os.path.join(out, "manifest.tsv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(names)
        for r in rows:
            w.writerow(["" if r[n] is None else (f"{r[n]:.4f}" if isinstance(r[n], float) else r[n])
                        for n in names])
    os.replace(tmp, os.path.join(out, "manifest.tsv"))
    table = pa.Table.from_pylist(rows, schema=_arrow_schema())
    pq.write_table(table, os.path.join(out, "manifest.parquet.tmp"))
    os.replace(os.path.join(out, "manifest.parquet.tmp"), os.path.join(out, "manifest.parquet"))


def read_manifest(out: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = os.path.join(out, "manifest.parquet")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{out} has no manifest.parquet: not a corpus built by `uniaudio-rt data build`")
    return pq.read_table(path).to_pylist()


def write_sap_split(rows: Iterable[dict[str, Any]], saps: dict[str, str], out: str, split: str) -> str:
    """Write ``sap/SPLIT.parquet`` (id, audio{bytes,path}, sap) from the clips' FLAC files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()),
                        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("sap", pa.string())])
    os.makedirs(os.path.join(out, "sap"), exist_ok=True)
    target = os.path.join(out, "sap", f"{split}.parquet")
    tmp = target + ".tmp"
    with pq.ParquetWriter(tmp, schema) as writer:
        batch: list[dict[str, Any]] = []
        for r in rows:
            with open(os.path.join(out, r["path"]), "rb") as f:
                batch.append({"id": r["id"], "audio": {"bytes": f.read(), "path": os.path.basename(r["path"])},
                              "sap": saps[r["id"]]})
            if len(batch) == 256:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    os.replace(tmp, target)
    return target


def read_sap_split(path: str) -> list[dict[str, Any]]:
    """Rows of a public-layout SAP parquet (ours or the public corpus): id/audio/sap, sap parsed."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    for r in rows:
        if isinstance(r["sap"], str):
            r["sap"] = json.loads(r["sap"])
    return rows
