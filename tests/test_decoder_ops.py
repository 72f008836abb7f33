"""Streaming decoder ops: native kernels vs their PyTorch twins, and chunked (state carried) == one-shot."""

import math

import pytest
import torch
import torch.nn.functional as F

from uniaudio_rt.decoder import ops

BACKENDS = ["ref"] + (["native"] if ops.native_available() else [])
needs_native = pytest.mark.skipif(not ops.native_available(), reason="native extension not built")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tiny models run faster on one thread


def _f0(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    f0 = torch.rand(b, n, generator=g) * 400
    f0[:, ::4] = 0.0  # unvoiced frames
    return f0


def _nsf_state(b, h, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, generator=g, dtype=torch.float64), torch.rand(b, h, generator=g, dtype=torch.float64) * 6


# ----------------------------------------------------------------------------- nsf_sine_source
@needs_native
@pytest.mark.parametrize("b,frames,h,up", [(1, 1, 1, 1), (2, 9, 4, 16), (3, 5, 9, 256)])
def test_nsf_native_matches_ref(b, frames, h, up):
    f0 = _f0(b, frames)
    phase, offset = _nsf_state(b, h)
    got = ops.nsf_sine_source(f0, phase, offset, 22050, up, 0.1, 10.0, backend="native")
    want = ops.nsf_sine_source_ref(f0, phase, offset, 22050, up, 0.1, 10.0)
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nsf_chunked_equals_one_shot(backend):
    f0 = _f0(2, 17)
    phase, offset = _nsf_state(2, 5)
    one, uv_one, end_one = ops.nsf_sine_source(f0, phase, offset, 22050, 64, 0.1, 10.0, backend=backend)
    parts, uvs, p = [], [], phase
    for lo, hi in [(0, 1), (1, 6), (6, 6), (6, 17)]:
        s, uv, p = ops.nsf_sine_source(f0[:, lo:hi], p, offset, 22050, 64, 0.1, 10.0, backend=backend)
        parts.append(s)
        uvs.append(uv)
    torch.testing.assert_close(torch.cat(parts, -1), one, atol=2e-6, rtol=0)
    torch.testing.assert_close(torch.cat(uvs, -1), uv_one)
    torch.testing.assert_close(p, end_one, atol=1e-10, rtol=0)


def test_nsf_ref_matches_training_formula():
    """The public SineGen: 2 pi * (cumsum(f0 * (h+1) / sr) % 1) + random phase, times uv (float32 cumsum)."""
    f0 = _f0(1, 6)
    h, up, sr = 3, 32, 22050
    offset = torch.tensor([[0.0, 1.0, -2.0]], dtype=torch.float64)
    sine, uv, _ = ops.nsf_sine_source_ref(f0, torch.zeros(1, h, dtype=torch.float64), offset, sr, up, 0.1, 10.0)
    f0_up = f0.repeat_interleave(up, dim=1)[:, None]                                   # (1, 1, T)
    fmat = torch.cat([f0_up * (i + 1) / sr for i in range(h)], dim=1)
    theta = 2 * math.pi * (torch.cumsum(fmat, dim=-1) % 1)
    uv_ref = (f0_up > 10.0).float()
    want = 0.1 * torch.sin(theta + offset.float()[:, :, None]) * uv_ref
    torch.testing.assert_close(sine, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(uv, uv_ref)


def test_nsf_rejects_bad_state():
    with pytest.raises(ValueError, match="phase_offset has shape"):
        ops.nsf_sine_source(torch.ones(2, 3), torch.zeros(2, 4, dtype=torch.float64),
                            torch.zeros(2, 5, dtype=torch.float64), 22050, 4)


# ----------------------------------------------------------------------------- istft_ola
def _head(b, frames, n_fft, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n_fft + 2, frames, generator=g)


def _istft_torch(x, n_fft, hop):
    nb = n_fft // 2 + 1
    mag = torch.exp(x[:, :nb]).clamp(max=1e2)
    ph = torch.sin(x[:, nb:])
    spec = torch.complex(mag * torch.cos(ph), mag * torch.sin(ph))
    return torch.istft(spec, n_fft, hop, n_fft, window=torch.hann_window(n_fft))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_fft,hop,frames", [(16, 4, 13), (16, 4, 2), (8, 2, 9), (16, 8, 5)])
def test_istft_one_shot_matches_torch_istft(backend, n_fft, hop, frames):
    x = _head(2, frames, n_fft)
    out, _ = ops.istft_ola(x, torch.hann_window(n_fft), hop, torch.zeros(2, n_fft - hop), 0, True, backend=backend)
    torch.testing.assert_close(out, _istft_torch(x, n_fft, hop), atol=2e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("frames_before,is_last", [(0, True), (0, False), (3, False), (7, True)])
def test_istft_native_matches_ref(frames_before, is_last):
    x = _head(3, 11, 16)
    tail = torch.randn(3, 12)
    w = torch.hann_window(16)
    got = ops.istft_ola(x, w, 4, tail, frames_before, is_last, backend="native")
    want = ops.istft_ola_ref(x, w, 4, tail, frames_before, is_last)
    torch.testing.assert_close(got[0], want[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cuts", [[1, 2, 5, 13], [4, 13], [0, 6, 6, 13]])
def test_istft_chunked_equals_one_shot(backend, cuts):
    n_fft, hop = 16, 4
    x = _head(2, 13, n_fft, seed=3)
    w = torch.hann_window(n_fft)
    one, _ = ops.istft_ola(x, w, hop, torch.zeros(2, n_fft - hop), 0, True, backend=backend)
    state = ops.IstftState.initial(2, n_fft, hop)
    parts, lo = [], 0
    for hi in cuts:
        out, tail = ops.istft_ola(x[:, :, lo:hi], w, hop, state.tail, state.frames, False, backend=backend)
        state = ops.IstftState(tail, state.frames + hi - lo)
        parts.append(out)
        lo = hi
    out, _ = ops.istft_ola(x[:, :, :0], w, hop, state.tail, state.frames, True, backend=backend)  # flush
    parts.append(out)
    torch.testing.assert_close(torch.cat(parts, -1), one, atol=2e-5, rtol=1e-5)


def test_istft_rejects_bad_tail():
    with pytest.raises(ValueError, match=r"tail must be \(batch=2, n_fft - hop = 12\)"):
        ops.istft_ola(_head(2, 3, 16), torch.hann_window(16), 4, torch.zeros(2, 8))


# ----------------------------------------------------------------------------- cfg_euler_step
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 80, 1), (2, 16, 37), (3, 7)])
def test_cfg_euler_matches_ref_and_chunks(backend, shape):
    g = torch.Generator().manual_seed(0)
    x, vc, vu = (torch.randn(shape, generator=g) for _ in range(3))
    want = ops.cfg_euler_step_ref(x, vc, vu, 0.1234, 0.7)
    got = ops.cfg_euler_step(x, vc, vu, 0.1234, 0.7, backend=backend)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    n = shape[-1]
    cuts = [0, n // 3, n]
    chunked = torch.cat([ops.cfg_euler_step(x[..., a:b].contiguous(), vc[..., a:b].contiguous(),
                                            vu[..., a:b].contiguous(), 0.1234, 0.7, backend=backend)
                         for a, b in zip(cuts[:-1], cuts[1:])], -1)
    torch.testing.assert_close(chunked, got, atol=0, rtol=0)


def test_cfg_euler_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"v_cond \(2, 3\)"):
        ops.cfg_euler_step(torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 4), 0.1, 0.7)


# ----------------------------------------------------------------------------- causal_conv1d_update
CONV_CASES = [  # c_in, c_out, k, dilation, groups, bias, activation
    (4, 6, 3, 1, 1, True, "none"),
    (5, 5, 4, 2, 5, False, "silu"),   # depthwise
    (6, 4, 1, 1, 2, True, "none"),    # K = 1: empty state
    (8, 8, 7, 3, 4, True, "silu"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c_in,c_out,k,dil,groups,bias,act", CONV_CASES)
def test_causal_conv_chunked_equals_full_conv(backend, c_in, c_out, k, dil, groups, bias, act):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 40, generator=g)
    w = torch.randn(c_out, c_in // groups, k, generator=g)
    b = torch.randn(c_out, generator=g) if bias else None
    s = (k - 1) * dil
    full = F.conv1d(F.pad(x, (s, 0)), w, b, dilation=dil, groups=groups)
    full = F.silu(full) if act == "silu" else full
    state = torch.zeros(2, c_in, s)
    parts, lo = [], 0
    for hi in [1, 2, 9, 9, 40]:  # lengths 1, 1, 7, 0, 31: both CPU loop orders
        y, state = ops.causal_conv1d_update(x[:, :, lo:hi].contiguous(), state, w, b, dil, groups, act, backend=backend)
        parts.append(y)
        lo = hi
    torch.testing.assert_close(torch.cat(parts, -1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state, F.pad(x, (s, 0))[:, :, x.shape[-1]:])


@needs_native
@pytest.mark.parametrize("c_in,c_out,k,dil,groups,bias,act", CONV_CASES)
def test_causal_conv_native_matches_ref(c_in, c_out, k, dil, groups, bias, act):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, c_in, 5, generator=g)
    st = torch.randn(3, c_in, (k - 1) * dil, generator=g)
    w = torch.randn(c_out, c_in // groups, k, generator=g)
    b = torch.randn(c_out, generator=g) if bias else None
    got = ops.causal_conv1d_update(x, st, w, b, dil, groups, act, backend="native")
    want = ops.causal_conv1d_update_ref(x, st, w, b, dil, groups, act)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1])


def test_causal_conv_rejects_bad_state():
    with pytest.raises(ValueError, match=r"conv_state must be \(B=1, C_in=2, \(K-1\)\*dilation=4\)"):
        ops.causal_conv1d_update(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2), torch.zeros(2, 2, 3), dilation=2)


def test_backend_name_is_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.cfg_euler_step(torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.1, 0.7, backend="cuda")


def test_autograd_uses_the_reference():
    x = _head(1, 5, 16).requires_grad_()
    out, _ = ops.istft_ola(x, torch.hann_window(16), 4, torch.zeros(1, 12))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if ops.native_available():
        with pytest.raises(ValueError, match="requires grad: True"):
            ops.istft_ola(x, torch.hann_window(16), 4, torch.zeros(1, 12), backend="native")
