"""CUDA sources compile for Ampere (sm_80) and Hopper (sm_90). No GPU here: nvcc -c only."""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


def test_there_are_cuda_sources():
    assert SOURCES, "no .cu files under csrc/"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("src", SOURCES, ids=[os.path.relpath(s, ROOT) for s in SOURCES])
def test_nvcc_compiles(src, arch, tmp_path):
    if NVCC is None:
        pytest.skip("nvcc not installed")
    r = subprocess.run([NVCC, "-c", "-std=c++17", f"-arch={arch}", "-Werror", "all-warnings",
                        f"-I{os.path.dirname(src)}", src, "-o", str(tmp_path / "out.o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # the sources must not depend on torch's CUDA headers (they are compiled without them)
    text = open(src).read()
    assert "c10/cuda" not in text and "ATen/cuda" not in text


def test_cuda_bindings_typecheck(tmp_path):
    """The CUDA half of csrc/bindings.cpp (built only against a CUDA torch) parses and type-checks
    against this torch's headers: g++ -fsyntax-only with UNIAUDIO_RT_WITH_CUDA. The CPU wheel ships
    c10/cuda headers without the generated c10/cuda/impl/cuda_cmake_macros.h; an empty one stands in."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    cuda_inc = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(NVCC))), "include") if NVCC else None
    if not cuda_inc or not os.path.exists(os.path.join(cuda_inc, "cuda_runtime_api.h")):
        cuda_inc = "/usr/local/cuda/include"
    if not os.path.exists(os.path.join(cuda_inc, "cuda_runtime_api.h")):
        pytest.skip("CUDA toolkit headers not installed")
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-DUNIAUDIO_RT_WITH_CUDA", f"-I{tmp_path / 'stub'}"]
    cmd += [f"-I{p}" for p in include_paths()]
    cmd += [f"-I{cuda_inc}", f"-I{os.path.join(ROOT, 'csrc')}", f"-I{sysconfig.get_paths()['include']}",
            os.path.join(ROOT, "csrc", "bindings.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
