"""Public-size decoder (random weights) exported to TorchScript: the C++ host vs Detokenizer.stream.

    cmake -S export/cpp -B build/cpp -DCMAKE_PREFIX_PATH="$(python -c 'import torch;print(torch.utils.cmake_prefix_path)')"
    cmake --build build/cpp --target detokenize_torchscript
    PYTHONPATH=. python bench/decoder_cpp_public_check.py build/cpp/detokenize_torchscript [OUT_DIR]

Same tokens (30, pushed as 10 + 20), speaker embedding and random draws (--rng torch) on both sides.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
from uniaudio_rt.decoder.detokenizer import Detokenizer
from uniaudio_rt.decoder.flow import FlowDecoder
from uniaudio_rt.decoder.hift import HiFTGenerator
from uniaudio_rt.decoder.onnx_export import export_decoder_torchscript


def main(host: str, out_dir: str = "/tmp/uniaudio_decoder_ts_public") -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    det = Detokenizer(FlowDecoder(FlowConfig()), HiFTGenerator(HiFTConfig()))
    t = time.time()
    export_decoder_torchscript(det, out_dir)
    print(f"export {time.time() - t:.0f} s", flush=True)
    tokens = torch.randint(0, det.flow.cfg.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))
    emb = torch.randn(1, det.flow.cfg.spk_embed_dim, generator=torch.Generator().manual_seed(2))
    t = time.time()
    want = torch.cat(list(det.stream([tokens[:, :10], tokens[:, 10:]], embedding=emb,
                                     generator=torch.Generator().manual_seed(3))), -1)[0].numpy()
    t_torch = time.time() - t
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tokens.json"), "w") as f:
            json.dump({"tokens": tokens[0].tolist()}, f)
        emb.numpy().astype(np.float32).tofile(os.path.join(tmp, "emb.f32"))
        r = subprocess.run([host, out_dir, os.path.join(tmp, "tokens.json"), os.path.join(tmp, "out.wav"), "--cuts",
                            "10,30", "--rng", "torch", "--seed", "3", "--threads", "2", "--embedding",
                            os.path.join(tmp, "emb.f32")], capture_output=True, text=True, check=True)
        got, _ = sf.read(os.path.join(tmp, "out.wav"), dtype="float32")
    info = json.loads(r.stdout)
    print(f"samples {want.shape[-1]} / {got.shape[-1]}  max|c++ - torch| {np.abs(want - got).max():.2e}  "
          f"max|wav| {np.abs(got).max():.3f}  (torch {t_torch:.1f} s, c++ {info['compute_s']:.1f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:])
