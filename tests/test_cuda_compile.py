"""CUDA sources compile for Ampere (sm_80) and Hopper (sm_90). No GPU here: nvcc -c only."""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))


def test_there_are_cuda_sources():
    assert SOURCES, "no .cu files under csrc/"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("src", SOURCES, ids=[os.path.relpath(s, ROOT) for s in SOURCES])
def test_nvcc_compiles(src, arch, tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("nvcc not installed")
    r = subprocess.run([nvcc, "-c", "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings",
                        f"-I{os.path.dirname(src)}", src, "-o", str(tmp_path / "out.o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # the sources must not depend on torch's CUDA headers (they are compiled without them)
    text = open(src).read()
    assert "c10/cuda" not in text and "ATen/cuda" not in text
