"""Decode any clip the sources ship to 16 kHz mono float32.

soundfile (libsndfile) reads wav (incl. 8-bit), ogg/vorbis, flac and mp3 in-process; everything else
(raw G.722, formats libsndfile refuses) goes through the ffmpeg binary shipped by the PyPI package
``imageio-ffmpeg`` (or ``ffmpeg`` on PATH).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from math import gcd

import numpy as np

SAMPLE_RATE = 16000

# file extension -> ffmpeg demuxer for headerless formats
_RAW_FORMATS = {".g722": "g722", ".ul": "mulaw", ".al": "alaw"}
# ffmpeg needs the rate of headerless PCM; G.722 carries its own 16 kHz
_RAW_PCM = {".raw": ("s16le", 16000), ".sln16": ("s16le", 16000), ".sln": ("s16le", 8000),
            ".als": ("u8", 11025)}  # Drascula's speech: headerless unsigned 8-bit at 11,025 Hz


class DecodeError(RuntimeError):
    """A clip that neither soundfile nor ffmpeg could decode."""


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise DecodeError("no ffmpeg: pip install imageio-ffmpeg (ships a static binary)") from None
        return exe


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(x, SAMPLE_RATE // g, rate // g).astype(np.float32)


def _with_soundfile(data: bytes) -> np.ndarray:
    import soundfile as sf

    x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), rate)


def _with_ffmpeg(data: bytes, ext: str) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error"]
    if ext in _RAW_FORMATS:
        cmd += ["-f", _RAW_FORMATS[ext]]
    elif ext in _RAW_PCM:
        fmt, rate = _RAW_PCM[ext]
        cmd += ["-f", fmt, "-ar", str(rate), "-ac", "1"]
    cmd += ["-i", "pipe:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    proc = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if proc.returncode != 0:
        raise DecodeError(f"ffmpeg could not decode {ext} data: {proc.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def decode_bytes(data: bytes, ext: str) -> np.ndarray:
    """Decode the bytes of one file whose name ends in ``ext`` (".ogg", ".g722", ...)."""
    ext = ext.lower()
    if ext not in _RAW_FORMATS and ext not in _RAW_PCM:
        try:
            return _with_soundfile(data)
        except Exception:  # libsndfile refuses some files; ffmpeg is the fallback
            pass
    x = _with_ffmpeg(data, ext)
    if x.size == 0:
        raise DecodeError(f"no audio decoded from {ext} data ({len(data)} bytes)")
    return x


def decode_file(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return decode_bytes(f.read(), os.path.splitext(path)[1])


def split_long(x: np.ndarray, max_seconds: float = 30.0) -> list[np.ndarray]:
    """Cut a clip longer than ``max_seconds`` into equal pieces no longer than that."""
    limit = int(max_seconds * SAMPLE_RATE)
    if x.size <= limit:
        return [x]
    n = -(-x.size // limit)
    bounds = np.linspace(0, x.size, n + 1).astype(int)
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
