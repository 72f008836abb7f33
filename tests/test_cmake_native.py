"""The top-level CMakeLists.txt builds the torch-free kernel library and its self-test (C++ services)."""

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or sys.platform != "linux",
                                reason="needs cmake on Linux")


def test_cmake_builds_library_and_selftest_passes(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(root), "-B", str(build)], check=True, capture_output=True, text=True)
    out = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list(build.glob("libuniaudio_rt_ops.a"))
    run = subprocess.run([str(build / "uniaudio_rt_ops_selftest")], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
    assert "rows differ" in run.stdout
