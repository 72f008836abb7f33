"""Real recordings from package registries (Debian), fetched without root and cached.

``apt-get download PKG`` + ``dpkg-deb -x`` extracts a package's files into a cache directory; no
system installation and no hub downloads.
"""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile

AUDIO_EXTENSIONS = (".wav", ".ogg", ".oga", ".flac", ".mp3")


def default_cache() -> str:
    return os.environ.get("UNIAUDIO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "uniaudio-rt"))


def fetch_deb(package: str, cache: str | None = None) -> str:
    """Extract a Debian package into ``cache/package`` (once) and return that directory."""
    cache = cache or default_cache()
    target = os.path.join(cache, package)
    if os.path.exists(os.path.join(target, ".complete")):
        return target
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        try:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=600)
        except FileNotFoundError:
            raise RuntimeError("apt-get is not available: cannot fetch Debian packages here") from None
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"apt-get download {package} failed: {e.stderr.decode(errors='replace')[-500:]}") from None
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {package} produced no .deb")
        subprocess.run(["dpkg-deb", "-x", debs[0], target], check=True, timeout=600)
        with open(os.path.join(target, ".complete"), "w") as f:
            f.write(os.path.basename(debs[0]) + "\n")
    return target


def package_version(package_dir: str) -> str:
    """The .deb file name recorded at extraction (name_version_arch.deb)."""
    with open(os.path.join(package_dir, ".complete")) as f:
        return f.read().strip()


def audio_files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.join(dirpath, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(out)
