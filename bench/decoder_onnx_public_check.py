"""Public-size decoder (random weights) exported to ONNX: OrtDetokenizer.stream vs Detokenizer.stream.

    PYTHONPATH=. python bench/decoder_onnx_public_check.py [OUT_DIR]     # ~4 min export + ~1 min streams
"""

import sys
import time

import numpy as np
import torch

from uniaudio_rt.decoder.config import FlowConfig, HiFTConfig
from uniaudio_rt.decoder.detokenizer import Detokenizer
from uniaudio_rt.decoder.flow import FlowDecoder
from uniaudio_rt.decoder.hift import HiFTGenerator
from uniaudio_rt.decoder.onnx_export import OrtDetokenizer, TorchRandom, export_decoder


def main(out_dir: str = "/tmp/uniaudio_decoder_onnx_public") -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    det = Detokenizer(FlowDecoder(FlowConfig()), HiFTGenerator(HiFTConfig()))
    t = time.time()
    export_decoder(det, out_dir)
    print(f"export {time.time() - t:.0f} s", flush=True)
    ort_det = OrtDetokenizer(out_dir, num_threads=2)
    tokens = torch.randint(0, 16384, (1, 30), generator=torch.Generator().manual_seed(1))
    chunks = [tokens[:, :10], tokens[:, 10:]]
    emb = torch.randn(1, 192, generator=torch.Generator().manual_seed(2))
    t = time.time()
    want = torch.cat(list(det.stream(chunks, embedding=emb, generator=torch.Generator().manual_seed(3))), -1)
    t_torch, t = time.time() - t, time.time()
    got = np.concatenate(list(ort_det.stream(chunks, embedding=emb, rng=TorchRandom(torch.Generator().manual_seed(3)))), -1)
    print(f"samples {want.shape[-1]} / {got.shape[-1]}  max|ort - torch| {np.abs(want.numpy() - got).max():.2e}  "
          f"max|wav| {np.abs(got).max():.3f}  (torch {t_torch:.1f} s, ort {time.time() - t:.1f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:])
