"""The Triton kernels of ``kernels/`` (GPU; on the CPU only with TRITON_INTERPRET=1 set before triton is imported).

The sources live in the repository's top-level ``kernels/`` directory, which is deliberately not an
importable package of its own: the name ``kernels`` belongs to Hugging Face's distribution of that name,
which transformers imports (a ``kernels/__init__.py`` in the checkout shadowed it whenever Python ran from
the repository root). A wheel carries copies of the sources here (setup.py's build_py); a source or
editable install reads them from ``kernels/`` through ``__path__``. Importing this package does not import
triton.
"""

from pathlib import Path

_here = Path(__file__).resolve().parent
_source = _here.parents[1] / "kernels"
if not (_here / "vq_argmin.py").is_file() and (_source / "vq_argmin.py").is_file():
    __path__.append(str(_source))  # noqa: F821 (the package's own __path__)
