"""Triton kernels (GPU; on CPU only under TRITON_INTERPRET=1, set before importing triton)."""
