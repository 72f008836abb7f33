"""Real recordings for tests, fetched from Debian's registry (no hub downloads).

``asterisk-core-sounds-en-wav``: English telephony prompts read by one female speaker (8 kHz, 16-bit
wav, CC-BY-SA). Extracted with ``apt-get download`` + ``dpkg-deb -x`` (no root needed).
Run ``python tests/real_audio.py`` to prefetch (install.sh does); ``--example`` prints one file.
"""

from __future__ import annotations

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from uniaudio_rt.registry_audio import fetch_deb  # noqa: E402

CACHE = os.environ.get("UNIAUDIO_TEST_AUDIO", os.path.join(ROOT, ".cache", "test-audio"))
PACKAGE = "asterisk-core-sounds-en-wav"
SOUNDS = os.path.join("usr", "share", "asterisk", "sounds", "en_US_f_Allison")
EXAMPLE = "agent-newlocation.wav"  # "Please enter the new extension followed by pound" (3.3 s)


def asterisk_dir(fetch: bool = True) -> str | None:
    """Directory of the asterisk English wavs, fetching the package if needed and allowed."""
    target = os.path.join(CACHE, PACKAGE, SOUNDS)
    if os.path.exists(os.path.join(CACHE, PACKAGE, ".complete")):
        return target
    if not fetch:
        return None
    try:
        fetch_deb(PACKAGE, CACHE)
    except (RuntimeError, OSError) as e:
        print(f"could not fetch {PACKAGE}: {e}", file=sys.stderr)
        return None
    return target if glob.glob(os.path.join(target, "*.wav")) else None


if __name__ == "__main__":
    d = asterisk_dir()
    if d is None:
        sys.exit(f"failed to fetch {PACKAGE}")
    if sys.argv[1:] == ["--example"]:
        print(os.path.join(d, EXAMPLE))
    else:
        print(f"{len(glob.glob(os.path.join(d, '*.wav')))} wavs in {d}")
