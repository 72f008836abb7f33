"""Frozen-front feature cache.

The conv front end and the first ``frozen_positions`` encoder layers are frozen during SAP training,
so their output is computed once per clip and stored (float16, 50 Hz) in one memory-mapped array;
training reads it instead of re-running mel + convolutions + those layers every step. The cache
key hashes the frozen weights and the clip list, so a changed model or corpus never reads stale
features.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..mel import HOP_LENGTH, log_mel_spectrogram
from ..models.encoder import WhisperVQEncoder


log = logging.getLogger("uniaudio_rt.train")


@contextlib.contextmanager
def cache_build_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder ``path`` (created if missing) while building it.

    Runs started side by side on one corpus share its caches; without the lock both built the same
    cache into the same temporary files and one of them failed. The second run now waits, then finds
    the finished cache (callers check for it again once they hold the lock).
    """
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, ".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class FeatureCache:
    path: str
    ids: list[str]
    offsets: np.ndarray   # (N + 1,) frame offsets into `frames`
    frames: np.ndarray    # (total, D) float16, memory-mapped

    def get(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.frames[self.offsets[i]: self.offsets[i + 1]], dtype=np.float32))

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def cache_key(model: WhisperVQEncoder, positions: int, ids: Sequence[str], md5s: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"positions": positions, "mel_bins": model.config.num_mel_bins,
                         "floor": model.config.mel_floor_db}).encode())
    frozen = ["conv1", "conv2", "embed_positions"] + [f"layers.{i}." for i in range(positions)]
    for k, v in sorted(model.state_dict().items()):
        if any(k.startswith(p) for p in frozen):
            h.update(k.encode())
            h.update(v.detach().float().contiguous().numpy().tobytes())
    for i, m in zip(ids, md5s):
        h.update(f"{i}:{m}".encode())
    return h.hexdigest()[:16]


def _clip_frames(n_samples: int) -> int:
    """Real 50 Hz frames of a clip (what the encoder's frame mask keeps)."""
    return math.ceil(math.ceil(n_samples / HOP_LENGTH) / 2)


def build_cache(model: WhisperVQEncoder, positions: int, clips: Sequence[dict], load_audio, cache_dir: str,
                batch_frames: int = 6000, progress: bool = True) -> FeatureCache:
    """Run the frozen front on every clip (sorted by length, batched) and store the frames.

    ``clips``: dicts with ``id`` and ``md5``; ``load_audio(clip) -> float32 16 kHz mono numpy``.
    """
    ids = [c["id"] for c in clips]
    key = cache_key(model, positions, ids, [c.get("md5", "") for c in clips])
    path = os.path.join(cache_dir, f"front{positions}-{key}")
    meta = os.path.join(path, "index.json")
    if os.path.exists(meta):
        return open_cache(path)
    with cache_build_lock(path):
        if not os.path.exists(meta):   # built by another process while this one waited
            _write_cache(model, positions, clips, load_audio, path, batch_frames, progress)
    return open_cache(path)


@torch.no_grad()
def _write_cache(model: WhisperVQEncoder, positions: int, clips: Sequence[dict], load_audio, path: str,
                 batch_frames: int, progress: bool) -> None:
    from tqdm import tqdm

    ids = [c["id"] for c in clips]
    meta = os.path.join(path, "index.json")
    model = model.eval()
    stride = model.config.samples_per_token
    audio = {}
    lengths = []
    for c in tqdm(clips, desc="load audio", unit="clip", disable=not progress):
        a = load_audio(c)
        if a.size == 0:
            raise ValueError(f"clip {c['id']} is empty")
        audio[c["id"]] = a
        lengths.append(_clip_frames(a.size))
    offsets = np.zeros(len(clips) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    d = model.config.d_model
    tmp = os.path.join(path, "frames.f16.tmp")
    frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(int(offsets[-1]), d))
    order = sorted(range(len(clips)), key=lambda i: lengths[i])
    bar = tqdm(total=int(offsets[-1]), desc="frozen features", unit="frame", disable=not progress)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * lengths[order[end]] <= batch_frames:
            end += 1
        batch = order[start:end]
        mels, n_real = [], []
        for i in batch:
            a = torch.from_numpy(audio[ids[i]])
            a = torch.nn.functional.pad(a, (0, (-a.numel()) % stride))
            mels.append(log_mel_spectrogram(a, model.config.num_mel_bins, model.config.mel_floor_db))
            n_real.append(math.ceil(audio[ids[i]].size / HOP_LENGTH))
        t = max(m.shape[-1] for m in mels)
        mel = torch.zeros(len(batch), model.config.num_mel_bins, t)
        mask = torch.zeros(len(batch), t, dtype=torch.bool)
        for j, (m, n) in enumerate(zip(mels, n_real)):
            mel[j, :, : m.shape[-1]] = m
            mask[j, :n] = True
        x = model.embed(mel)
        fm = mask[:, ::2][:, : x.shape[1]]
        h = model.forward_from(x, fm, 0, stop=positions).hidden_states
        for j, i in enumerate(batch):
            frames[offsets[i]: offsets[i + 1]] = h[j, : lengths[i]].numpy().astype(np.float16)
        bar.update(sum(lengths[i] for i in batch))
        start = end
    bar.close()
    frames.flush()
    del frames
    os.replace(tmp, os.path.join(path, "frames.f16.npy"))
    with open(meta + ".tmp", "w") as f:
        json.dump({"ids": ids, "offsets": offsets.tolist(), "positions": positions}, f)
    os.replace(meta + ".tmp", meta)


def open_cache(path: str) -> FeatureCache:
    with open(os.path.join(path, "index.json")) as f:
        meta = json.load(f)
    frames = np.load(os.path.join(path, "frames.f16.npy"), mmap_mode="r")
    return FeatureCache(path, meta["ids"], np.asarray(meta["offsets"], dtype=np.int64), frames)
