"""`uniaudio-rt train --config FILE`: SAP training on the CPU, resumable, with a progress bar.

Per step: a length-bucketed batch of training clips (cached frozen-front features), the trainable
encoder layers, SAE and EMA quantizer (straight-through), the Whisper decoder with teacher forcing on
the rendered target. Writes ``OUT/checkpoint.pt`` every ``checkpoint_every`` steps (atomic; a rerun
resumes from it), ``OUT/train_log.jsonl`` (losses, codebook usage, lr, seconds per step) and at the
end ``OUT/tokenizer/`` (HF-style config.json + model.safetensors) and ``OUT/sap_decoder/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from typing import Any, Optional

import numpy as np
import torch

from .config import TrainConfig
from .features import FeatureCache, build_cache
from ..models.whisper_text import default_whisper_dir
from .model import DIAGNOSTICS, SAPModel, build_encoder
from .targets import render_target

log = logging.getLogger("uniaudio_rt.train")


def load_clip_audio(corpus: str):
    from ..data.decode import SAMPLE_RATE
    import soundfile as sf

    def load(clip: dict) -> np.ndarray:
        a, sr = sf.read(os.path.join(corpus, clip["path"]), dtype="float32", always_2d=False)
        if sr != SAMPLE_RATE or a.ndim != 1:
            raise ValueError(f"{clip['path']}: expected 16 kHz mono, got {sr} Hz, shape {a.shape}")
        return a
    return load


def train_rows(corpus: str) -> list[dict]:
    from ..data.manifest import read_manifest, read_sap_split

    rows = [r for r in read_manifest(corpus) if r["split"] == "train"]
    if not rows:
        raise ValueError(f"{corpus} has no train clips")
    saps = {r["id"]: r["sap"] for r in read_sap_split(os.path.join(corpus, "sap", "train.parquet"))}
    for r in rows:
        r["sap"] = saps[r["id"]]
    return rows


def source_repeats(rows: list[dict], repeats: dict[str, int]) -> Optional[list[int]]:
    """Per-clip repeat counts from the config's {source: count} (None when nothing is repeated)."""
    if not repeats:
        return None
    unknown = sorted(set(repeats) - {r["source"] for r in rows})
    if unknown:
        raise ValueError(f"source_repeats names sources with no train clips in the corpus: {unknown}")
    return [int(repeats.get(r["source"], 1)) for r in rows]


def make_batches(lengths: list[int], max_frames: int, seed: int, epoch: int,
                 repeats: Optional[list[int]] = None) -> list[list[int]]:
    """Length-sorted groups whose padded size (count x longest) fits ``max_frames``, in a seeded
    random order per epoch (identical for every run with the same seed: ablations see the same data).
    ``repeats[i]`` (default 1) is how many times clip i appears per epoch (oversampling a small source)."""
    rng = random.Random(seed * 1000003 + epoch)
    reps = repeats or [1] * len(lengths)
    if len(reps) != len(lengths) or min(reps, default=1) < 0:
        raise ValueError("repeats must give a count >= 0 for every clip")
    order = sorted(((lengths[i], rng.random(), i) for i in range(len(lengths)) for _ in range(reps[i])))
    batches, cur = [], []
    for n, _, i in order:
        if cur and (len(cur) + 1) * n > max_frames:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


class BatchPlan:
    """Step -> batch, deterministic, so a resumed run continues with the batch it would have seen."""

    def __init__(self, lengths: list[int], max_frames: int, seed: int, repeats: Optional[list[int]] = None):
        self.lengths, self.max_frames, self.seed, self.repeats = lengths, max_frames, seed, repeats
        self._epochs = {0: make_batches(lengths, max_frames, seed, 0, repeats)}  # one epoch kept at a time
        self.per_epoch = len(self._epochs[0])

    def __call__(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        if epoch not in self._epochs:
            self._epochs = {epoch: make_batches(self.lengths, self.max_frames, self.seed, epoch, self.repeats)}
        return self._epochs[epoch][i]


def collate(cache: FeatureCache, idx: list[int], targets: list[list[int]], prompt: list[int], eot: int):
    t = max(cache.length(i) for i in idx)
    d = cache.frames.shape[1]
    feats = torch.zeros(len(idx), t, d)
    mask = torch.zeros(len(idx), t, dtype=torch.bool)
    for j, i in enumerate(idx):
        f = cache.get(i)
        feats[j, : f.shape[0]] = f
        mask[j, : f.shape[0]] = True
    seqs = [prompt + targets[i] for i in idx]
    L = max(len(s) for s in seqs) - 1
    tok_in = torch.full((len(idx), L), eot, dtype=torch.long)
    tok_out = torch.full((len(idx), L), eot, dtype=torch.long)
    tmask = torch.zeros(len(idx), L, dtype=torch.bool)
    for j, s in enumerate(seqs):
        n = len(s) - 1
        tok_in[j, :n] = torch.tensor(s[:-1])
        tok_out[j, :n] = torch.tensor(s[1:])
        tmask[j, len(prompt) - 1: n] = True  # predict the text and end-of-text, not the prompt
    return feats, mask, tok_in, tok_out, tmask


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))


def encode_targets(rows: list[dict], cfg: TrainConfig, text_tok, eot: int) -> list[list[int]]:
    out = []
    for r in rows:
        ids = text_tok.encode(render_target(r["sap"], cfg.target))
        ids = ids[: cfg.max_target_tokens] if len(ids) >= cfg.max_target_tokens else ids + [eot]
        out.append(ids)
    return out


@torch.no_grad()
def init_codebook(model: SAPModel, cache: FeatureCache, plan: BatchPlan, n_frames: int, seed: int,
                  progress: bool) -> dict:
    """k-means (k-means++ init, Lloyd) on pre-quantizer frames of the first batches of the plan."""
    from ..default_model import kmeans

    enc = model.encoder
    enc.eval()
    frames, step = [], 0
    total = 0
    while total < n_frames and step < plan.per_epoch:
        idx = plan(step)
        feats, mask, *_ = collate(cache, idx, [[0]] * (max(idx) + 1), [0], 0)
        out = enc.forward_from(feats, mask, model.start, stop_at_quantizer=True)
        y = out.pre_quant_states[out.token_mask]
        frames.append(y)
        total += y.shape[0]
        step += 1
    x = torch.cat(frames)[:n_frames]
    k = enc.config.quantize_vocab_size
    if x.shape[0] < k:
        raise ValueError(f"only {x.shape[0]} frames for a {k}-code codebook")
    c = kmeans(x, k, iters=10, seed=seed, progress=progress)
    enc.codebook.weight.copy_(c)
    enc.ema_weight.copy_(c)
    enc.ema_count.fill_(1.0)
    enc.train()
    return {"kmeans_frames": int(x.shape[0]), "kmeans_batches": step}


def _param_groups(model: SAPModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    enc = model.encoder
    enc_params, new_params = [], []
    for name, p in enc.named_parameters():
        frozen = (name.startswith(("conv1.", "conv2.", "embed_positions")) or
                  any(name.startswith(f"layers.{i}.") for i in range(cfg.frozen_positions)))
        if frozen or not p.requires_grad:
            p.requires_grad_(False)
            continue
        (new_params if name.startswith("residual_") else enc_params).append(p)
    sae_lr = cfg.lr_decoder if cfg.lr_sae is None else cfg.lr_sae
    dec = model.decoder
    dec.embed_tokens.weight.requires_grad_(False)
    dec.embed_positions.weight.requires_grad_(False)
    dec_params = [p for p in dec.parameters() if p.requires_grad]
    return [{"params": enc_params, "lr": cfg.lr_encoder, "base_lr": cfg.lr_encoder, "name": "encoder"},
            {"params": new_params, "lr": sae_lr, "base_lr": sae_lr, "name": "sae"},
            {"params": dec_params, "lr": cfg.lr_decoder, "base_lr": cfg.lr_decoder, "name": "decoder"}]


def save_atomic(obj: Any, path: str) -> None:
    """torch.save to a temporary file, then rename: an interrupted save never leaves a torn checkpoint."""
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def log_resume(log_path: str, step: int) -> None:
    """Mark in a train_log.jsonl that a process resumed at checkpoint ``step``: the steps after it
    are done, and logged, again."""
    with open(log_path, "a") as f:
        f.write(json.dumps({"event": "resume", "from_step": step}) + "\n")


def log_wall_seconds(log: list[dict], log_every: int) -> float:
    """Compute time a train_log.jsonl records, steps redone after a resume included: a ``resume``
    record restarts the count at its checkpoint step; in a log without them (older runs) a step
    record at or below the previous one is the first after a resume and covers ``log_every`` steps."""
    wall, prev = 0.0, 0
    for r in log:
        if r.get("event") == "resume":
            prev = r["from_step"]
        elif "step" in r:
            wall += r["sec_per_step"] * (r["step"] - prev if r["step"] > prev else log_every)
            prev = r["step"]
    return wall


def log_kept_records(log: list[dict], log_every: int) -> list[dict]:
    """The step records of a train_log.jsonl that the final weights descend from: a resume drops the
    records past its checkpoint (those steps were redone). Without resume records (older runs) a step
    at or below the previous one starts a resumed process whose checkpoint was ``log_every`` earlier."""
    kept: list[dict] = []
    for r in log:
        if r.get("event") == "resume":
            kept = [k for k in kept if k["step"] <= r["from_step"]]
        elif "step" in r:
            if kept and r["step"] <= kept[-1]["step"]:
                kept = [k for k in kept if k["step"] <= r["step"] - log_every]
            kept.append(r)
    return kept


def start_run(cfg) -> None:
    """Validate ``cfg``, apply its thread count, create ``cfg.out`` and record the config there."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.makedirs(cfg.out, exist_ok=True)
    with open(os.path.join(cfg.out, "train_config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)


def train(cfg: TrainConfig, progress: bool = True, max_steps: Optional[int] = None) -> str:
    """Run (or resume) training; returns the output directory. ``max_steps`` stops early (tests)."""
    from tqdm import tqdm

    from ..convert.whisper_ct2 import load_ct2_whisper_decoder
    from ..models.whisper_text import WhisperTextTokenizer

    start_run(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    ct2_dir = cfg.whisper or default_whisper_dir()
    encoder = build_encoder(ct2_dir, cfg.vocab_size, cfg.sae, cfg.sae_source, cfg.ema_decay,
                            cfg.restart_interval, cfg.commit_coefficient, cfg.commit_normalize,
                            cfg.sae_norm_init)
    decoder, _ = load_ct2_whisper_decoder(ct2_dir)
    text_tok = WhisperTextTokenizer.from_dir(ct2_dir)
    prompt, eot = list(text_tok.transcribe_prompt), text_tok.eot

    rows = train_rows(cfg.corpus)
    targets = encode_targets(rows, cfg, text_tok, eot)
    vocab = sorted({t for ts in targets for t in ts} | {eot} | set(range(min(cfg.base_vocab, eot))))
    cache = build_cache(encoder, cfg.frozen_positions, rows, load_clip_audio(cfg.corpus),
                        cfg.cache or os.path.join(cfg.corpus, ".features"), progress=progress)
    if cache.ids != [r["id"] for r in rows]:
        raise RuntimeError("feature cache does not match the training rows")
    model = SAPModel(encoder, decoder, vocab, cfg.frozen_positions)
    plan = BatchPlan([cache.length(i) for i in range(len(rows))], cfg.max_frames, cfg.seed,
                     source_repeats(rows, cfg.source_repeats))
    groups = _param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    log_path = os.path.join(cfg.out, "train_log.jsonl")
    step = 0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["config"] != cfg.resume_key():
            raise ValueError(f"{ckpt_path} was written with a different config; use a new `out` directory")
        model.encoder.load_state_dict(ck["encoder"])
        model.decoder.load_state_dict(ck["decoder"])
        model.encoder.quantize_ema_count = ck["ema_updates"]
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        random.setstate(ck["py_rng"])
        step = ck["step"]
        log.info("resumed from %s at step %d", ckpt_path, step)
        log_resume(log_path, step)
    else:
        info = init_codebook(model, cache, plan, cfg.kmeans_frames, cfg.seed, progress)
        with open(log_path, "w") as f:
            f.write(json.dumps({"event": "start", "train_clips": len(rows), "vocab": len(vocab),
                                "batches_per_epoch": plan.per_epoch, **info}) + "\n")

    def checkpoint(step: int) -> None:
        save_atomic({"step": step, "config": cfg.resume_key(),
                      "encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict(),
                      "ema_updates": model.encoder.quantize_ema_count, "optimizer": opt.state_dict(),
                      "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}, ckpt_path)

    last = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    model.train()
    bar = tqdm(total=last, initial=step, desc="train", unit="step", disable=not progress)
    acc: dict[str, float] = {}
    t0 = time.perf_counter()
    while step < last:
        idx = plan(step)
        feats, mask, tok_in, tok_out, tmask = collate(cache, idx, targets, prompt, eot)
        f = lr_factor(step, cfg)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        out = model(feats, mask, tok_in, tok_out, tmask)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        gnorm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
        opt.step()
        step += 1
        for k in ("ce", "quantize", "active_codes", *DIAGNOSTICS):
            if k in out:
                acc[k] = acc.get(k, 0.0) + float(out[k])
        acc["n"] = acc.get("n", 0) + 1
        acc["audio_s"] = acc.get("audio_s", 0.0) + float(mask.sum()) / 50
        bar.update(1)
        bar.set_postfix(ce=f"{float(out['ce']):.3f}", codes=int(out["active_codes"]))
        if step % cfg.log_every == 0 or step == last:
            n = acc.pop("n")
            rec = {"step": step, "ce": acc["ce"] / n, "quantize": acc["quantize"] / n,
                   "active_codes_per_batch": acc["active_codes"] / n, "lr_decoder": cfg.lr_decoder * f,
                   "grad_norm": float(gnorm), "audio_s": acc["audio_s"],
                   "sec_per_step": (time.perf_counter() - t0) / n,
                   **{k: acc[k] / n for k in DIAGNOSTICS if k in acc}}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            acc, t0 = {}, time.perf_counter()
        if step % cfg.checkpoint_every == 0 or step == last:
            checkpoint(step)
    bar.close()
    if step >= cfg.steps:
        export_run(model, cfg, text_tok, vocab)
    return cfg.out


def export_run(model: SAPModel, cfg: TrainConfig, text_tok, vocab: list[int]) -> None:
    from safetensors.torch import save_file

    from ..checkpoint import save_pretrained

    enc = model.encoder.eval()
    save_pretrained(enc, os.path.join(cfg.out, "tokenizer"))
    d = os.path.join(cfg.out, "sap_decoder")
    os.makedirs(d, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.decoder.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"decoder": model.decoder.config.to_dict(), "vocab_ids": vocab, "target": cfg.target,
                   "prompt": list(text_tok.transcribe_prompt), "eot": text_tok.eot}, f)
