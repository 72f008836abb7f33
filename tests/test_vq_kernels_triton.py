"""Triton kernels against the PyTorch references, on the CPU through the Triton interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="pip install triton (CI does)")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set", allow_module_level=True)

from uniaudio_rt.triton_kernels.gate_ln import gate_ln_triton  # noqa: E402
from uniaudio_rt.triton_kernels.vq_argmin import vq_argmin_triton  # noqa: E402
from test_fused_gate_vq import near_tie_only  # noqa: E402
from uniaudio_rt import ops  # noqa: E402


@pytest.mark.parametrize("t,d,k", [(1, 16, 1), (7, 80, 100), (33, 64, 70), (20, 40, 33)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vq_argmin_triton(t, d, k, dtype):
    g = torch.Generator().manual_seed(t + d + k)
    x = torch.nn.functional.layer_norm(torch.randn(t, d, generator=g), (d,)).to(dtype)
    cb = torch.randn(k, d, generator=g)
    got = vq_argmin_triton(x, cb)
    ref = ops.vq_argmin_ref(x, cb)
    assert near_tie_only(x.float(), cb, got, ref) == 0


def one_hot_codes(dims, scale=2.0):
    """Codes scale * e_j: every dot product with them is one exact product plus exact zeros, so the
    distances to duplicated codes are bit-identical whatever order a BLAS sums in (the interpreter's
    numpy matmul rounds by a column's position in its tile, which made tie tests CPU-dependent)."""
    return scale * torch.eye(dims[1])[dims[0]]


def test_vq_argmin_triton_ties():
    d = 32
    g = torch.Generator().manual_seed(1)
    picks = torch.tensor([3, 19, 0, 7, 12, 25])
    x = 0.1 * torch.randn(len(picks), d, generator=g)
    x[torch.arange(len(picks)), picks] += 3.0   # row r is nearest to e_{picks[r]}
    first = one_hot_codes((torch.arange(20), d))
    cb = torch.cat([first, first, one_hot_codes((torch.arange(20, d), d))])  # duplicates straddle the 32-code blocks
    want = [int(j) if j < 20 else 40 + int(j) - 20 for j in picks]
    assert ops.vq_argmin_ref(x, cb).tolist() == want
    assert vq_argmin_triton(x, cb).tolist() == want


@pytest.mark.parametrize("with_gate", [True, False])
@pytest.mark.parametrize("t,d,k", [(5, 48, 40), (17, 80, 65)])
def test_gate_ln_vq_triton(with_gate, t, d, k):
    g = torch.Generator().manual_seed(t * d)
    deep, a = torch.randn(t, d, generator=g), torch.randn(t, d, generator=g)
    gl = torch.randn(t, d, generator=g) if with_gate else None
    ln = ops.LayerNormParams(1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g), 1e-5)
    cb = torch.randn(k, d, generator=g)
    y = gate_ln_triton(deep, gl, a, ln.weight, ln.bias, ln.eps)
    assert (y - ops.gate_ln_ref(deep, gl, a, ln)).abs().max() <= 1e-4
    tok = ops.gate_ln_vq(deep, gl, a, ln, cb, backend="triton")
    rtok, ry = ops.gate_ln_vq_ref(deep, gl, a, ln, cb, return_y=True)
    assert near_tie_only(ry, cb, tok, rtok) == 0
    assert "triton" in ops.available_backends()


def test_triton_on_real_speech_states(speech_files):
    """Shipped model's SAE output on real speech: Triton search == reference."""
    from uniaudio_rt.audio import to_mono_16k
    from uniaudio_rt.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained()
    mel, n_real = tok.features(to_mono_16k(speech_files[0]))
    mask = torch.zeros(1, mel.shape[-1], dtype=torch.bool)
    mask[0, :n_real] = True
    with torch.no_grad():
        out = tok.model(mel[None], mask, stop_at_quantizer=True)
    y = out.pre_quant_states[0][out.token_mask[0]]
    cb = tok.model.codebook.weight.detach()
    got = ops.vq_argmin(y, cb, backend="triton")
    assert near_tie_only(y, cb, got, ops.vq_argmin_ref(y, cb)) == 0
    assert torch.equal(got, out.token_ids[0][out.token_mask[0]])


@pytest.mark.parametrize("with_gate", [True, False])
@pytest.mark.parametrize("t,d,k", [(1, 16, 1), (17, 80, 65), (33, 100, 97)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_gate_ln_vq_triton(with_gate, t, d, k, dtype):
    """The single fused kernel: its y equals the LayerNorm reference and its tokens the search on it,
    for sizes that are not multiples of the row, code and dimension blocks, fp32 and bf16 inputs."""
    from uniaudio_rt.triton_kernels.gate_ln import gate_ln_vq_triton

    g = torch.Generator().manual_seed(t * d + k)
    deep, a = torch.randn(t, d, generator=g).to(dtype), torch.randn(t, d, generator=g).to(dtype)
    gl = torch.randn(t, d, generator=g).to(dtype) if with_gate else None
    ln = ops.LayerNormParams(1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g), 1e-5)
    cb = torch.randn(k, d, generator=g)
    tok, y = gate_ln_vq_triton(deep, gl, a, ln.weight, ln.bias, ln.eps, cb)
    rtok, ry = ops.gate_ln_vq_ref(deep, gl, a, ln, cb, return_y=True)
    assert tok.shape == (t,) and y.shape == (t, d)
    assert (y - ry).abs().max() <= 1e-4
    assert near_tie_only(ry, cb, tok, rtok) == 0


def test_fused_gate_ln_vq_triton_ties():
    """Duplicated codes straddling code blocks: the lowest index wins, as in torch.argmin."""
    from uniaudio_rt.triton_kernels.gate_ln import gate_ln_vq_triton

    d = 48
    ln = ops.LayerNormParams(torch.ones(d), torch.zeros(d), 1e-5)
    deep = 0.1 * torch.randn(d, d, generator=torch.Generator().manual_seed(2))
    deep += 3.0 * torch.eye(d)               # row i's LayerNorm output peaks at dim i
    zeros = torch.zeros_like(deep)
    first = one_hot_codes((torch.arange(20), d))
    cb = torch.cat([first, first, one_hot_codes((torch.arange(20, d), d))])  # dims 0..19 at codes i and 20 + i
    want = list(range(20)) + list(range(40, 40 + d - 20))
    assert ops.gate_ln_vq_ref(deep, None, zeros, ln, cb).tolist() == want
    tok, _ = gate_ln_vq_triton(deep, None, zeros, ln.weight, ln.bias, ln.eps, cb)
    assert tok.tolist() == want
