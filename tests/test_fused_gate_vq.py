"""Native fused SAE-gate + LayerNorm + nearest-code kernels against their PyTorch references."""

import numpy as np
import pytest
import torch

from uniaudio_rt import ops

needs_cpp = pytest.mark.skipif(ops._C is None, reason="native extension not built")
CPU_PATHS = ["amx-bf16-screen", "avx512bf16-screen", "avx2-int16-screen", "portable"]


def supported_paths():
    return [p for p in CPU_PATHS if ops._C is not None and ops._C.vq_cpu_path_supported(p)]


@pytest.fixture(params=CPU_PATHS)
def cpu_path(request):
    if ops._C is None:
        pytest.skip("native extension not built")
    if not ops._C.vq_cpu_path_supported(request.param):
        pytest.skip(f"this CPU does not support the {request.param} path")
    ops._C.set_vq_cpu_path(request.param)
    yield request.param
    ops._C.set_vq_cpu_path("auto")


def near_tie_only(x, cb, got, ref, rtol=1e-5):
    """Rows where got != ref must be genuine ties in exact (float64) arithmetic."""
    x, cb = x.reshape(-1, x.shape[-1]).double(), cb.double()
    bad = (got.reshape(-1) != ref.reshape(-1)).nonzero()[:, 0]
    for r in bad.tolist():
        d = ((x[r] - cb) ** 2).sum(1)
        a, b = d[got.reshape(-1)[r]], d[ref.reshape(-1)[r]]
        assert abs(a - b) <= rtol * max(abs(a), 1.0), (r, a.item(), b.item())
    return len(bad)


@needs_cpp
@pytest.mark.parametrize("t", [1, 7, 130])
@pytest.mark.parametrize("d", [64, 80, 384])
@pytest.mark.parametrize("k", [1, 100, 1031])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vq_argmin_matches_ref(cpu_path, t, d, k, dtype):
    g = torch.Generator().manual_seed(t * 1000 + d + k)
    x = torch.nn.functional.layer_norm(torch.randn(2, t, d, generator=g), (d,)).to(dtype)
    cb = torch.randn(k, d, generator=g)
    got = ops.vq_argmin(x, cb, backend="cpp")
    ref = ops.vq_argmin_ref(x, cb)
    assert got.shape == ref.shape == (2, t) and got.dtype == torch.int64
    assert near_tie_only(x.float(), cb, got, ref) == 0


@needs_cpp
def test_ties_lowest_index_wins(cpu_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, 96, generator=g)
    cb = torch.cat([base, base, base[:10]])          # every code appears 2-3 times
    x = base[torch.randint(0, 50, (300,), generator=g)] + 0.01 * torch.randn(300, 96, generator=g)
    x[:50] = base                                    # exact hits of duplicated codes
    got = ops.vq_argmin(x, cb, backend="cpp")
    assert torch.equal(got, ops.vq_argmin_ref(x, cb))
    assert int(got.max()) < 50


@needs_cpp
@pytest.mark.parametrize("with_gate", [True, False])
@pytest.mark.parametrize("t,d,k", [(1, 64, 7), (129, 80, 513), (300, 384, 1024)])
def test_gate_ln_vq_matches_ref(cpu_path, with_gate, t, d, k):
    g = torch.Generator().manual_seed(t + d + k)
    deep, a = torch.randn(t, d, generator=g), torch.randn(t, d, generator=g) * 0.5
    gl = torch.randn(t, d, generator=g) * 2 if with_gate else None
    ln = ops.LayerNormParams(1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g), 1e-5)
    cb = torch.randn(k, d, generator=g)
    tok, y = ops.gate_ln_vq(deep, gl, a, ln, cb, return_y=True, backend="cpp")
    rtok, ry = ops.gate_ln_vq_ref(deep, gl, a, ln, cb, return_y=True)
    assert (y - ry).abs().max() <= 1e-4
    assert near_tie_only(ry, cb, tok, rtok) == 0
    assert torch.equal(ops.gate_ln_vq(deep, gl, a, ln, cb, backend="cpp"), tok)


@needs_cpp
def test_encoder_hot_path_on_real_speech(speech_files):
    """Default model, real speech: fused path == training-parity sae() + vector_quantize_ref."""
    from uniaudio_rt.audio import to_mono_16k
    from uniaudio_rt.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained()
    m = tok.model
    cb = ops.Codebook.from_tensor(m.codebook.weight)
    captured = {}
    for p in speech_files:
        mel, n_real = tok.features(to_mono_16k(p))
        with torch.no_grad():
            x = m.embed(mel[None])
            for layer in m.layers[:1]:
                x = layer(x)
            shallow = x
            for layer in m.layers[1:]:
                x = layer(x)
            x, shallow = m.pool(x), m.pool(shallow)
            ref = ops.fused_gate_vq_ref(x, shallow, m)
            for path in supported_paths():
                ops._C.set_vq_cpu_path(path)
                got = ops.fused_gate_vq(x, shallow, m, cb, backend="cpp")
                captured[(p, path)] = near_tie_only(m.sae(x, shallow), m.codebook.weight, got, ref)
            ops._C.set_vq_cpu_path("auto")
    assert all(v == 0 for v in captured.values()), captured


def test_dispatcher_and_errors():
    x, cb = torch.randn(5, 16), torch.randn(9, 16)
    assert "ref" in ops.available_backends()
    assert torch.equal(ops.vq_argmin(x, cb, backend="ref"), ops.vq_argmin_ref(x, cb))
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.vq_argmin(x, cb, backend="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend='cuda' is not available here"):
            ops.vq_argmin(x, cb, backend="cuda")
    if ops._C is not None:
        with pytest.raises(ValueError, match="feature size 16, codebook dim is 8"):
            ops.vq_argmin(x, torch.randn(9, 8), backend="cpp")
    else:
        with pytest.raises(ValueError, match="'cpp' needs the native extension"):
            ops.vq_argmin(x, cb, backend="cpp")
    with pytest.raises(ValueError, match="codebook must be"):
        ops.Codebook.from_tensor(torch.zeros(0, 16))
    if ops._C is not None:
        with pytest.raises(ValueError, match="row counts differ"):
            ops.gate_ln_vq(x, None, torch.randn(4, 16), ops.LayerNormParams(torch.ones(16), torch.zeros(16), 1e-5), cb,
                           backend="cpp")


@needs_cpp
def test_cpu_path_selection_errors():
    assert ops._C.vq_cpu_path() in CPU_PATHS
    assert ops._C.vq_cpu_path_supported("portable") and ops._C.vq_cpu_path_supported("auto")
    with pytest.raises(RuntimeError, match="unknown or not supported"):
        ops._C.set_vq_cpu_path("avx9000")


@needs_cpp
@pytest.mark.parametrize("case", ["wide_norms", "near_duplicates", "public_width", "beyond_int16_dim"])
def test_screens_stay_exact_on_hard_codebooks(cpu_path, case):
    """The screens' error bounds must hold where quantization hurts most: codes whose norms span
    orders of magnitude, clusters of almost identical codes, the public width, and a width beyond
    the int16 screen's limit (that falls back to the exact scan)."""
    g = torch.Generator().manual_seed(7)
    if case == "wide_norms":
        d, k, t = 96, 600, 200
        cb = torch.randn(k, d, generator=g) * torch.logspace(-3, 2, k)[:, None]
        x = cb[torch.randint(0, k, (t,), generator=g)] * 1.01 + 0.01 * torch.randn(t, d, generator=g)
    elif case == "near_duplicates":
        d, k, t = 128, 512, 256
        base = torch.randn(32, d, generator=g)
        cb = base.repeat(16, 1) + 1e-4 * torch.randn(k, d, generator=g)
        x = base[torch.randint(0, 32, (t,), generator=g)] + 1e-4 * torch.randn(t, d, generator=g)
    elif case == "public_width":
        d, k, t = 1280, 8192, 24
        cb = torch.randn(k, d, generator=g)
        x = torch.nn.functional.layer_norm(torch.randn(t, d, generator=g), (d,))
    else:
        d, k, t = 4100, 40, 9
        cb, x = torch.randn(k, d, generator=g), torch.randn(t, d, generator=g)
    got = ops.vq_argmin(x, cb, backend="cpp")
    near_tie_only(x, cb, got, ops.vq_argmin_ref(x, cb))  # fp32 reference may differ only on ties
    exact = ((x.double()[:, None, :] - cb.double()[None]) ** 2).sum(-1).argmin(1) if t * k * d < 5e7 else None
    if exact is not None and cpu_path != "portable":  # the screens re-score in float64: exact nearest
        assert torch.equal(got, exact)


@needs_cpp
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("t,d,k", [(750, 384, 1024), (301, 1280, 777), (33, 20, 31)])
def test_screens_exact_across_chunks_and_threads(cpu_path, threads, t, d, k):
    """Row counts that split into uneven chunks (the AMX path takes one chunk per thread, rows padded
    to 32), codebooks with a partial last block, d not a multiple of 32: every screen returns the
    float64 nearest code."""
    g = torch.Generator().manual_seed(t + d + k)
    cb = torch.randn(k, d, generator=g) * (1 + torch.rand(k, 1, generator=g))
    x = torch.nn.functional.layer_norm(torch.randn(t, d, generator=g), (d,))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)  # the extension shares torch's OpenMP runtime
    try:
        got = ops.vq_argmin(x, cb, backend="cpp")
    finally:
        torch.set_num_threads(old)
    xd, cd = x.double(), cb.double()
    dist = (xd ** 2).sum(1, keepdim=True) - 2 * xd @ cd.t() + (cd ** 2).sum(1)
    exact = dist.argmin(1)
    if cpu_path == "portable":  # one fp32 pass: may differ from float64 only on near ties
        near_tie_only(x, cb, got, exact)
    else:
        assert torch.equal(got, exact)


@needs_cpp
def test_bf16_pack_error_norms():
    """pack_bf16's per-code rounding error norms (they enter the screens' bound) are upper bounds of
    the true ones and tight."""
    g = torch.Generator().manual_seed(3)
    cb = torch.randn(50, 70, generator=g) * torch.logspace(-3, 3, 50)[:, None]
    bits, err = ops._C.pack_bf16(cb.contiguous())
    assert bits.shape == (50, 96) and err.shape == (50,)
    rounded = (bits[:, :70].to(torch.int32) << 16).view(torch.float32)
    true = (cb.double() - rounded.double()).norm(dim=1)
    assert torch.equal(rounded, cb.bfloat16().float())  # round to nearest even, as torch
    assert (err.double() >= true).all() and (err.double() <= true * (1 + 1e-5) + 1e-30).all()
    assert (bits[:, 70:] == 0).all()
