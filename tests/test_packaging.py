"""Packaging: the Triton kernels import as uniaudio_rt.triton_kernels, and nothing in the checkout
shadows the import name ``kernels`` (Hugging Face's distribution, which transformers >= 5 imports)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_triton_kernel_sources_import_from_the_package():
    pytest.importorskip("triton", reason="pip install triton (CI does)")
    r = _run("import uniaudio_rt.triton_kernels.gate_ln as g, uniaudio_rt.triton_kernels.vq_argmin as v;"
             "print(g.__file__); print(v.__file__)")
    assert r.returncode == 0, r.stderr
    files = [Path(line) for line in r.stdout.split()]
    assert [f.name for f in files] == ["gate_ln.py", "vq_argmin.py"]
    assert all(f.parent == ROOT / "kernels" for f in files), files


def test_repository_root_does_not_shadow_hf_kernels():
    assert not (ROOT / "kernels" / "__init__.py").exists(), "kernels/ must stay a plain source directory"
    pytest.importorskip("transformers")
    # run from the repository root, as `python -m pytest` and the README's commands do
    r = _run("import transformers.models.whisper.modeling_whisper, importlib.util as u;"
             "s = u.find_spec('kernels'); print(s.origin if s else None)")
    assert r.returncode == 0, r.stderr
    origin = r.stdout.strip().splitlines()[-1]
    assert origin == "None" or not origin.startswith(str(ROOT)), origin
