"""Reader for CTranslate2 ``model.bin`` files (binary format version 6 and earlier >= 3).

Layout (little-endian): u32 version; string spec name; u32 revision; u32 variable count; per variable:
string name, u8 rank, rank x u32 dims, u8 dtype id, u32 byte size, raw bytes; then u32 alias count
and (alias, target) string pairs. A string is u16 length (including a trailing NUL) + bytes.
Dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
SUPPORTED_VERSIONS = (3, 4, 5, 6)


@dataclass
class CT2Model:
    spec: str
    revision: int
    version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(f"variable {name!r} not in the {self.spec} model")
        return self.variables[name]


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated CTranslate2 model (needed {n} bytes at offset "
                             f"{self.pos}, file has {len(self.data)})")
        b = self.data[self.pos: self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = self.take(n)
        if n == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: malformed string at offset {self.pos - n}")
        return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | os.PathLike, upcast: bool = False) -> CT2Model:
    """Parse a CTranslate2 model.bin (or the directory holding it). ``upcast`` turns fp16/bf16 into fp32."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such CTranslate2 model file")
    with open(path, "rb") as f:
        r = _Reader(f.read(), path)
    if len(r.data) < 4:
        raise ValueError(f"{path}: too short to be a CTranslate2 model")
    version = r.u32()
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: not a supported CTranslate2 model (binary version {version}; "
                         f"expected one of {SUPPORTED_VERSIONS})")
    spec = r.string()
    revision = r.u32()
    model = CT2Model(spec, revision, version)
    for _ in range(r.u32()):
        name = r.string()
        rank = r.u8()
        shape = tuple(r.u32() for _ in range(rank))
        type_id = r.u8()
        if type_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        nbytes = r.u32()
        raw = r.take(nbytes)
        dt = _DTYPES[type_id]
        if dt == "bfloat16":
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=dt)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"{path}: variable {name!r} has {arr.size} values for shape {shape}")
        arr = arr.reshape(shape)
        if upcast and arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        model.variables[name] = arr
    for _ in range(r.u32()):
        alias = r.string()
        model.aliases[alias] = r.string()
    if r.pos != len(r.data):
        raise ValueError(f"{path}: {len(r.data) - r.pos} unexpected trailing bytes")
    return model
