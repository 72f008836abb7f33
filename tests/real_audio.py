"""Real recordings for tests, fetched from Debian's registry (no hub downloads).

``asterisk-core-sounds-en-wav``: English telephony prompts read by one female speaker (8 kHz, 16-bit
wav, CC-BY-SA). Extracted with ``apt-get download`` + ``dpkg-deb -x`` (no root needed).
Run ``python tests/real_audio.py`` to prefetch (CI does).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("UNIAUDIO_TEST_AUDIO", os.path.join(ROOT, ".cache", "test-audio"))
PACKAGE = "asterisk-core-sounds-en-wav"
SOUNDS = os.path.join("usr", "share", "asterisk", "sounds", "en_US_f_Allison")


def asterisk_dir(fetch: bool = True) -> str | None:
    """Directory of the asterisk English wavs, fetching the package if needed and allowed."""
    target = os.path.join(CACHE, PACKAGE, SOUNDS)
    if glob.glob(os.path.join(target, "*.wav")):
        return target
    if not fetch:
        return None
    os.makedirs(CACHE, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        try:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
            deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(CACHE, PACKAGE)], check=True, timeout=300)
        except (OSError, subprocess.SubprocessError, IndexError) as e:
            print(f"could not fetch {PACKAGE}: {e}", file=sys.stderr)
            return None
    return target if glob.glob(os.path.join(target, "*.wav")) else None


EXAMPLE = "agent-newlocation.wav"  # "Please enter the new extension followed by pound" (5 s)

if __name__ == "__main__":
    d = asterisk_dir()
    if d is None:
        sys.exit(f"failed to fetch {PACKAGE}")
    if sys.argv[1:] == ["--example"]:
        print(os.path.join(d, EXAMPLE))
    else:
        print(f"{len(glob.glob(os.path.join(d, '*.wav')))} wavs in {d}")
