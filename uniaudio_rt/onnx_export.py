"""ONNX export of the tokenizer and the ONNX Runtime backend.

Graphs (dynamo exporter, opset >= 18, weights embedded):

* ``tokenizer.onnx``: ``mel`` (B, n_mels, T) float32, ``mel_lengths`` (B,) int64 real frames,
  ``position_offset`` (B,) int64 (0 for offline use; streaming windows start inside a segment) ->
  ``tokens`` (B, T / (4 / ... )) int64 and ``token_lengths`` (B,) int64.
* ``tokenizer_wave.onnx`` (``--with-mel``): ``waveform`` (B, S) float32 at 16 kHz (each row one
  <= 30 s segment, zero-padded), ``lengths`` (B,) int64 samples -> the same outputs; the Whisper
  log-mel is inside the graph (STFT as a conv1d with a fixed windowed DFT basis).

A JSON sidecar (``tokenizer.json``) records sample rate, frame rate, codebook size, n_mels,
samples per token, opset, input/output names and the model config.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .mel import HOP_LENGTH, N_FFT, mel_filters
from .models.config import WhisperVQConfig
from .models.encoder import WhisperVQEncoder

GRAPH_MEL = "tokenizer.onnx"
GRAPH_WAVE = "tokenizer_wave.onnx"
SIDECAR = "tokenizer.json"
MEL_INPUTS = ["mel", "mel_lengths", "position_offset"]
WAVE_INPUTS = ["waveform", "lengths"]
OUTPUTS = ["tokens", "token_lengths"]


class TokenizerGraph(nn.Module):
    """mel + lengths (+ position offsets) -> tokens + token lengths."""

    def __init__(self, model: WhisperVQEncoder):
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor, mel_lengths: Tensor, position_offset: Tensor) -> tuple[Tensor, Tensor]:
        mask = torch.arange(mel.shape[-1], device=mel.device)[None, :] < mel_lengths[:, None]
        tokens, token_mask = self.model.encode_tokens(mel, mask, position_offset=position_offset)
        return tokens, token_mask.sum(1)


class LogMelGraph(nn.Module):
    """Whisper log-mel of zero-padded segments, per example as ``Tokenizer.features`` computes it.

    Each row is padded (conceptually) to its own multiple of ``samples_per_token`` and reflected at
    its own ends; the max - floor_db floor is taken over that row's frames only.
    """

    def __init__(self, cfg: WhisperVQConfig):
        super().__init__()
        self.spt = cfg.samples_per_token
        self.floor_db = cfg.mel_floor_db
        n = torch.arange(N_FFT, dtype=torch.float64)
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
        window = torch.hann_window(N_FFT, dtype=torch.float64)
        angle = 2 * torch.pi * k[:, None] * n[None, :] / N_FFT
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2F, N)
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filters(cfg.num_mel_bins)), persistent=False)

    def forward(self, wave: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        b, s = wave.shape
        padded = (lengths + self.spt - 1) // self.spt * self.spt          # per-row padded length L
        s_max = (s + self.spt - 1) // self.spt * self.spt
        half = N_FFT // 2
        j = torch.arange(-half, s_max + half, device=wave.device)[None, :].expand(b, -1)
        last = padded[:, None] - 1
        idx = torch.where(j < 0, -j, torch.where(j > last, 2 * last - j, j))   # reflect at 0 and L - 1
        samples = torch.arange(s, device=wave.device)[None, :] < lengths[:, None]
        x = torch.nn.functional.pad(wave * samples, (0, s_max - s))
        x = torch.gather(x, 1, idx.clamp(0, s_max - 1))
        spec = torch.nn.functional.conv1d(x[:, None, :], self.basis, stride=HOP_LENGTH)  # (B, 2F, frames+1)
        f = spec.shape[1] // 2
        power = spec[:, :f] ** 2 + spec[:, f:] ** 2
        power = power[..., :-1]
        mel = torch.matmul(self.filters, power)
        log_spec = torch.clamp(mel, min=1e-10).log10()
        frames = padded // HOP_LENGTH
        valid = torch.arange(log_spec.shape[-1], device=wave.device)[None, :] < frames[:, None]
        if self.floor_db is not None:
            peak = torch.where(valid[:, None, :], log_spec, torch.full_like(log_spec, -1e4)).amax(dim=(1, 2), keepdim=True)
            log_spec = torch.maximum(log_spec, peak - self.floor_db)
        mel_lengths = (lengths + HOP_LENGTH - 1) // HOP_LENGTH
        return (log_spec + 4.0) / 4.0, mel_lengths


class WaveTokenizerGraph(nn.Module):
    def __init__(self, model: WhisperVQEncoder):
        super().__init__()
        self.mel = LogMelGraph(model.config)
        self.tok = TokenizerGraph(model)

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        mel, mel_lengths = self.mel(waveform, lengths)
        return self.tok(mel, mel_lengths, torch.zeros_like(lengths))


def export_tokenizer(model: WhisperVQEncoder, out_dir: str, with_mel: bool = False, opset: int = 18,
                     verbose: bool = False) -> str:
    """Write tokenizer.onnx (and tokenizer_wave.onnx with ``with_mel``) + tokenizer.json; returns out_dir."""
    from .runtime import prepare_for_inference

    if opset < 18:
        raise ValueError(f"opset must be >= 18 for the dynamo exporter, got {opset}")
    cfg = model.config
    model = prepare_for_inference(model, "fp32")
    os.makedirs(out_dir, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=256)
    unit = cfg.samples_per_token // HOP_LENGTH                   # mel frames per token
    n_tok = torch.export.Dim("tokens", min=1, max=cfg.max_source_positions * 2 // unit)
    mel = torch.zeros(2, cfg.num_mel_bins, 8 * unit)
    args = (mel, torch.tensor([8 * unit, 5 * unit]), torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        torch.onnx.export(TokenizerGraph(model).eval(), args, os.path.join(out_dir, GRAPH_MEL), dynamo=True,
                          opset_version=opset, external_data=False, verbose=verbose,
                          dynamic_shapes=({0: batch, 2: unit * n_tok}, {0: batch}, {0: batch}),
                          input_names=MEL_INPUTS, output_names=OUTPUTS)
        graphs = {"mel": GRAPH_MEL}
        if with_mel:
            spt = cfg.samples_per_token
            n_samples = torch.export.Dim("wave_tokens", min=1, max=cfg.segment_samples // spt)
            wave = torch.zeros(2, 8 * spt)
            torch.onnx.export(WaveTokenizerGraph(model).eval(), (wave, torch.tensor([8 * spt, 5 * spt - 77])),
                              os.path.join(out_dir, GRAPH_WAVE), dynamo=True, opset_version=opset,
                              external_data=False, verbose=verbose,
                              dynamic_shapes=({0: batch, 1: spt * n_samples}, {0: batch}),
                              input_names=WAVE_INPUTS, output_names=OUTPUTS)
            graphs["waveform"] = GRAPH_WAVE
    sidecar = {"format": "uniaudio-rt-onnx/1", "sample_rate": cfg.sampling_rate, "frame_rate": cfg.token_rate,
               "codebook_size": cfg.quantize_vocab_size, "n_mels": cfg.num_mel_bins,
               "samples_per_token": cfg.samples_per_token, "segment_samples": cfg.segment_samples,
               "opset": opset, "graphs": graphs,
               "inputs": {"mel": MEL_INPUTS, "waveform": WAVE_INPUTS}, "outputs": OUTPUTS,
               "waveform_rows_multiple_of": cfg.samples_per_token, "config": cfg.to_dict()}
    with open(os.path.join(out_dir, SIDECAR), "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1)
    return out_dir


def export_torchscript(model: WhisperVQEncoder, out_dir: str) -> str:
    """TorchScript (traced) tokenizers for C++ hosts linked against libtorch:
    ``tokenizer_mel.pt`` (mel, mel_lengths, position_offset) and ``tokenizer_wave.pt`` (waveform,
    lengths), with the sizes a host needs in the extra file ``uniaudio.json``."""
    import warnings

    from .runtime import prepare_for_inference

    cfg = model.config
    model = prepare_for_inference(model, "fp32")
    os.makedirs(out_dir, exist_ok=True)
    unit = cfg.samples_per_token // HOP_LENGTH
    extra = {"uniaudio.json": json.dumps({"sample_rate": cfg.sampling_rate, "samples_per_token": cfg.samples_per_token,
                                          "segment_samples": cfg.segment_samples, "n_mels": cfg.num_mel_bins,
                                          "frame_rate": cfg.token_rate, "codebook_size": cfg.quantize_vocab_size})}
    # traced with a padded row so that the masked attention path is the one recorded
    mel_args = (torch.zeros(2, cfg.num_mel_bins, 8 * unit), torch.tensor([8 * unit, 5 * unit]),
                torch.zeros(2, dtype=torch.long))
    wave_args = (torch.zeros(2, 8 * cfg.samples_per_token), torch.tensor([8 * cfg.samples_per_token, 3000]))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints taken from shapes
        for name, graph, args in (("tokenizer_mel.pt", TokenizerGraph(model), mel_args),
                                  ("tokenizer_wave.pt", WaveTokenizerGraph(model), wave_args)):
            traced = torch.jit.trace(graph.eval(), args, check_trace=False)
            torch.jit.save(traced, os.path.join(out_dir, name), _extra_files=extra)
    return out_dir


class OnnxEncoder:
    """ONNX Runtime session with the ``encode_tokens`` interface of the PyTorch encoder."""

    def __init__(self, onnx_dir: str, num_threads: Optional[int] = None):
        import onnxruntime as ort

        with open(os.path.join(onnx_dir, SIDECAR), encoding="utf-8") as f:
            self.sidecar = json.load(f)
        if self.sidecar.get("format") != "uniaudio-rt-onnx/1":
            raise ValueError(f"{onnx_dir}: {SIDECAR} is not a uniaudio-rt ONNX export")
        self.config = WhisperVQConfig.from_dict(self.sidecar["config"])
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(os.path.join(onnx_dir, self.sidecar["graphs"]["mel"]), opts,
                                            providers=["CPUExecutionProvider"])

    def encode_tokens(self, mel: Tensor, mel_mask: Tensor, position_offset=0) -> tuple[Tensor, Tensor]:
        b = mel.shape[0]
        if isinstance(position_offset, Tensor):
            offsets = position_offset.long().numpy()
        else:
            offsets = np.full(b, position_offset, dtype=np.int64)
        lengths = mel_mask.sum(1).long().numpy()
        tokens, token_lengths = self.session.run(OUTPUTS, {"mel": mel.float().numpy(), "mel_lengths": lengths,
                                                           "position_offset": offsets})
        tokens = torch.from_numpy(tokens)
        token_mask = torch.arange(tokens.shape[1])[None, :] < torch.from_numpy(token_lengths)[:, None]
        return tokens, token_mask


def cached_export_dir(model_dir: str) -> str:
    """Where ``backend='onnxruntime'`` keeps the export of a checkpoint (keyed by its file contents)."""
    from . import __version__
    from .registry_audio import default_cache

    h = hashlib.sha1(__version__.encode())
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".json", ".safetensors", ".bin")):
            with open(os.path.join(model_dir, name), "rb") as f:
                h.update(name.encode())
                h.update(f.read())
    return os.path.join(default_cache(), "onnx", h.hexdigest()[:16])


def add_subparser(sub) -> None:
    import argparse

    p = sub.add_parser("export", help="export the tokenizer (onnx, torchscript) or the decoder (onnx-decoder, "
                                      "torchscript-decoder)",
                       description="Export the tokenizer to ONNX (dynamo exporter, weights embedded) or "
                                   "TorchScript (for C++ hosts linked against libtorch), or the decoder's streaming step "
                                   "modules to ONNX (onnx-decoder) or TorchScript (torchscript-decoder); docs/DECODER.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("format", choices=["onnx", "torchscript", "onnx-decoder", "torchscript-decoder"],
                   help="onnx: ONNX graphs for ONNX Runtime; torchscript: traced modules for libtorch C++ hosts; "
                        "onnx-decoder / torchscript-decoder: the token-to-audio decoder's streaming graphs / traced "
                        "modules (need --decoder)")
    p.add_argument("--decoder", default=None,
                   help="onnx-decoder, torchscript-decoder: decoder directory (config.yaml, flow.pt, hift.pt)")
    p.add_argument("--model", default=None, help="checkpoint directory; default: the shipped model")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--with-mel", action="store_true", help="onnx: also export waveform -> tokens (log-mel in the graph)")
    p.add_argument("--opset", type=int, default=18)

    def run(a) -> int:
        from .checkpoint import load_encoder
        from .tokenizer import DEFAULT_MODEL_DIR

        try:
            if a.format in ("onnx-decoder", "torchscript-decoder"):
                from .decoder.onnx_export import export_decoder, export_decoder_torchscript

                if not a.decoder:
                    raise ValueError(f"{a.format} needs --decoder DIR (config.yaml, flow.pt, hift.pt)")
                try:
                    if a.format == "onnx-decoder":
                        export_decoder(a.decoder, a.out, opset=a.opset)
                    else:
                        export_decoder_torchscript(a.decoder, a.out)
                except FileNotFoundError as e:
                    raise ValueError(str(e)) from e
                print(f"wrote {sorted(os.listdir(a.out))} to {a.out}")
                return 0
            model = load_encoder(a.model or DEFAULT_MODEL_DIR, for_tokens=True)
            if a.format == "onnx":
                export_tokenizer(model, a.out, with_mel=a.with_mel, opset=a.opset)
            else:
                export_torchscript(model, a.out)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        print(f"wrote {sorted(os.listdir(a.out))} to {a.out}")
        return 0

    p.set_defaults(func=run)
