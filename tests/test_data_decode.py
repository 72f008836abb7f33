"""Decoding of every source format to 16 kHz mono float: G.722 (raw), ogg/vorbis, mp3, 8-bit wav, flac.

The inputs are tiny synthetic files made with the ffmpeg binary of imageio-ffmpeg (a 440 Hz tone at
the format's usual rate), so each format's path through soundfile or ffmpeg is exercised.
"""

import subprocess

import numpy as np
import pytest

from uniaudio_rt.data.decode import SAMPLE_RATE, decode_bytes, decode_file, ffmpeg_exe, split_long

FORMATS = [  # (extension, ffmpeg output args, source rate, channels)
    (".g722", ["-f", "g722", "-c:a", "g722"], 16000, 1),
    (".ogg", ["-c:a", "libvorbis"], 44100, 2),
    (".mp3", ["-c:a", "libmp3lame"], 22050, 1),
    (".wav", ["-c:a", "pcm_u8"], 11025, 1),
    (".flac", ["-c:a", "flac"], 48000, 2),
]


@pytest.mark.parametrize("ext,args,rate,channels", FORMATS, ids=[f[0] for f in FORMATS])
def test_decode_format(tmp_path, ext, args, rate, channels):
    path = tmp_path / f"tone{ext}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration=1",
                    "-ac", str(channels), *args, str(path)], check=True)
    x = decode_file(str(path))
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - SAMPLE_RATE) < 0.08 * SAMPLE_RATE  # codec padding/priming only
    spectrum = np.abs(np.fft.rfft(x[2000:14000]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / 12000
    assert abs(peak_hz - 440) < 5
    assert 0.05 < np.abs(x).max() <= 1.01


def test_undecodable_bytes_raise():
    from uniaudio_rt.data.decode import DecodeError

    with pytest.raises(DecodeError):
        decode_bytes(b"this is not audio at all" * 10, ".ogg")


def test_split_long_pieces():
    x = np.zeros(int(75.5 * SAMPLE_RATE), dtype=np.float32)
    pieces = split_long(x, 30.0)
    assert len(pieces) == 3 and sum(p.size for p in pieces) == x.size
    assert max(p.size for p in pieces) <= 30 * SAMPLE_RATE
    assert split_long(x[:SAMPLE_RATE], 30.0)[0].size == SAMPLE_RATE
