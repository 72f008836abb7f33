"""`uniaudio-rt train-decoder --config FILE`: train the token-to-audio decoder on the CPU, resumable.

Data (prepared once, cached on disk; :func:`prepare_data`): for every training clip of the configured
kinds, the tokenizer's tokens, the 22.05 kHz waveform cut or zero-padded to
``FlowConfig.mel_frames(n_tokens) * 256`` samples, its log-mel (exactly ``mel_frames(n_tokens)``
frames, decoder/mel.py) and an autocorrelation F0 per mel frame (data/sap.py ``pitch_track``).

Each step updates both halves once:

* flow (:func:`flow_matching_loss`): a length-bucketed batch of clips, each cut to the same random
  window of ``K`` tokens (``K`` = the batch's shortest clip, at most ``flow_segment_tokens``) and
  the mel frames that window covers; conditional flow matching as the public recipe (cosine-warped
  t, ``x_t = (1 - (1 - sigma_min) t) x0 + t x1``, target ``x1 - (1 - sigma_min) x0``), with
  classifier-free-guidance dropout of mu, speaker and prompt (inference's CFG contrasts exactly
  that zeroed input) and, for some clips, a prompt: a random prefix of the target mel in ``cond``
  with the rest zero, as ``FlowDecoder.inference`` and ``Detokenizer.flow_step`` feed it. The loss
  is over the frames that are not prompt.
* HiFT (:func:`hift_losses`): random ``hift_segment_frames``-frame segments of ground-truth mel and
  the matching waveform; multi-resolution STFT loss + mel L1 on the output, L1 of the F0
  predictor against the autocorrelation F0. The NSF source is driven by the predicted F0
  (detached), as at inference. Optionally (``gan: true``) a small multi-period discriminator
  adds least-squares adversarial and feature-matching terms (decoder/gan.py).

Writes ``OUT/checkpoint.pt`` (atomic) every ``checkpoint_every`` steps and at the end (a rerun
resumes from it: every random draw of a step is seeded by (seed, step), so a resumed run equals an
uninterrupted one), ``OUT/train_log.jsonl``, and when all steps are done ``OUT/decoder/``
(config.yaml, flow.pt, hift.pt in float16), which ``Detokenizer.from_pretrained`` loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import mel as dmel
from .config import FlowConfig
from .flow import FlowDecoder
from .hift import HiFTGenerator, SourceState
from .train_config import DecoderTrainConfig

log = logging.getLogger("uniaudio_rt.decoder.train")

DATA_VERSION = 1  # bump when the prepared arrays change meaning
F0_WINDOW = 1024  # 46 ms pitch frames, centred on the mel frames (pad (1024 - 256) / 2 = 384)


# ----------------------------------------------------------------------------- prepared data
@dataclass
class DecoderData:
    """Prepared clips, memory-mapped. Clip i has tokens ``tokens[tok_off[i]:tok_off[i+1]]``, mel frames
    ``mel[frame_off[i]:frame_off[i+1]]`` (float16, frames x 80), F0 of the same frames, and the waveform
    ``wav[256 * frame_off[i]: 256 * frame_off[i+1]]`` (int16 at 22050 Hz)."""

    path: str
    ids: list[str]
    tok_off: np.ndarray
    frame_off: np.ndarray
    tokens: np.ndarray
    mel: np.ndarray
    f0: np.ndarray
    wav: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.ids)

    def n_tokens(self, i: int) -> int:
        return int(self.tok_off[i + 1] - self.tok_off[i])

    def n_frames(self, i: int) -> int:
        return int(self.frame_off[i + 1] - self.frame_off[i])

    def clip_tokens(self, i: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        a = self.tok_off[i]
        stop = self.n_tokens(i) if stop is None else stop
        return np.asarray(self.tokens[a + start: a + stop], dtype=np.int64)

    def clip_mel(self, i: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """(80, frames) float32."""
        a = self.frame_off[i]
        stop = self.n_frames(i) if stop is None else stop
        return np.asarray(self.mel[a + start: a + stop], dtype=np.float32).T

    def clip_f0(self, i: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        a = self.frame_off[i]
        stop = self.n_frames(i) if stop is None else stop
        return np.asarray(self.f0[a + start: a + stop], dtype=np.float32)

    def clip_wav(self, i: int, start_frame: int = 0, stop_frame: Optional[int] = None) -> np.ndarray:
        h = dmel.HOP_LENGTH
        a = self.frame_off[i] * h
        stop_frame = self.n_frames(i) if stop_frame is None else stop_frame
        return np.asarray(self.wav[a + start_frame * h: a + stop_frame * h], dtype=np.float32) / 32767.0


def _tokenizer_dir(path: Optional[str]) -> str:
    from ..tokenizer import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR if path in (None, "", "default") else path


def _file_digest(path: str) -> str:
    """sha256 over a tokenizer checkpoint (a directory's files, or one file)."""
    files = sorted(os.path.join(path, n) for n in os.listdir(path)) if os.path.isdir(path) else [path]
    h = hashlib.sha256()
    for name in files:
        if os.path.isdir(name) or not name.endswith((".json", ".safetensors", ".pt", ".bin")):
            continue
        h.update(os.path.basename(name).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def select_clips(cfg: DecoderTrainConfig) -> list[dict]:
    from ..data.manifest import read_manifest

    rows = [r for r in read_manifest(cfg.corpus) if r["split"] in cfg.splits and r["kind"] in cfg.kinds]
    if not rows:
        raise ValueError(f"{cfg.corpus} has no clips of kinds {cfg.kinds} in splits {cfg.splits}")
    return rows


def clip_features(audio16: np.ndarray, n_tokens: int,
                  flow_cfg: FlowConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16 kHz clip and its token count -> (22.05 kHz waveform of ``mel_frames(n) * 256`` samples,
    mel (80, mel_frames(n)), F0 per mel frame in Hz, 0 = unvoiced)."""
    from ..data.sap import pitch_track

    wav, mel = dmel.token_aligned(audio16, n_tokens, flow_cfg)
    mel = mel.numpy()
    f0 = pitch_track(wav, dmel.SAMPLE_RATE, F0_WINDOW, dmel.HOP_LENGTH, pad=(F0_WINDOW - dmel.HOP_LENGTH) // 2)
    if mel.shape[1] != flow_cfg.mel_frames(n_tokens) or f0.shape[0] != mel.shape[1]:
        raise RuntimeError(f"frame-count contract broken: {n_tokens} tokens, mel {mel.shape[1]} frames, "
                           f"f0 {f0.shape[0]}, expected {flow_cfg.mel_frames(n_tokens)}")
    return wav, mel, f0


def prepare_data(cfg: DecoderTrainConfig, progress: bool = True) -> DecoderData:
    """Tokens, waveform, mel and F0 of the training clips, computed once per (tokenizer, clip list)
    and stored under ``cfg.cache`` (default ``<corpus>/.decoder_data``). Work is done in shards of
    ``prep_batch`` clips that are kept until the end, so an interrupted preparation resumes. Runs that
    need the same data at the same time prepare it once: the others wait for it."""
    from ..train.features import cache_build_lock

    rows = select_clips(cfg)
    tok_dir = _tokenizer_dir(cfg.tokenizer)
    h = hashlib.sha256()
    h.update(json.dumps({"version": DATA_VERSION, "kinds": sorted(cfg.kinds), "min_tokens": cfg.min_tokens,
                         "mel": [dmel.SAMPLE_RATE, dmel.N_FFT, dmel.HOP_LENGTH, dmel.N_MELS, dmel.FMAX],
                         "tokenizer": _file_digest(tok_dir)}).encode())  # the clip ids below fix the splits
    for r in rows:
        h.update(f"{r['id']}:{r.get('md5', '')}".encode())
    path = os.path.join(cfg.cache or os.path.join(cfg.corpus, ".decoder_data"), h.hexdigest()[:16])
    if os.path.exists(os.path.join(path, "index.json")):
        return open_data(path)
    with cache_build_lock(path):
        if os.path.exists(os.path.join(path, "index.json")):   # built by another run while this one waited
            return open_data(path)
        return _write_data(cfg, rows, tok_dir, path, progress)


def _write_data(cfg: DecoderTrainConfig, rows: list[dict], tok_dir: str, path: str, progress: bool) -> DecoderData:
    from tqdm import tqdm

    from ..tokenizer import Tokenizer
    from ..train.loop import load_clip_audio

    tok = Tokenizer.from_pretrained(tok_dir, batch_size=16)
    flow_cfg = FlowConfig(vocab_size=tok.vocab_size, input_frame_rate=tok.frame_rate)
    load = load_clip_audio(cfg.corpus)
    starts = range(0, len(rows), cfg.prep_batch)
    # named by their clip range, so a rerun with another prep_batch never mixes shard boundaries
    shard_paths = [os.path.join(path, f"shard-{s:06d}-{min(s + cfg.prep_batch, len(rows)):06d}.npz") for s in starts]
    bar = tqdm(total=len(rows), desc="prepare decoder data", unit="clip", disable=not progress)
    for s, shard_path in zip(starts, shard_paths):
        shard = rows[s: s + cfg.prep_batch]
        if os.path.exists(shard_path):
            bar.update(len(shard))
            continue
        audios = [load(r) for r in shard]
        tokens = tok.encode_batch(audios, 16000)
        ids, n_tok, n_fr, toks, mels, f0s, wavs = [], [], [], [], [], [], []
        for r, a, t in zip(shard, audios, tokens):
            if len(t) < cfg.min_tokens:
                continue
            wav, mel, f0 = clip_features(a, len(t), flow_cfg)
            ids.append(r["id"])
            n_tok.append(len(t))
            n_fr.append(mel.shape[1])
            toks.append(np.asarray(t, dtype=np.int32))
            mels.append(mel.T.astype(np.float16))
            f0s.append(f0)
            wavs.append(np.round(np.clip(wav, -1, 1) * 32767).astype(np.int16))
        cat = (lambda xs, dt, shape: np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt))
        with open(shard_path + ".tmp", "wb") as f:
            np.savez(f, ids=np.asarray(ids, dtype=object).astype(str), n_tokens=np.asarray(n_tok, np.int64),
                     n_frames=np.asarray(n_fr, np.int64), tokens=cat(toks, np.int32, (0,)),
                     mel=cat(mels, np.float16, (0, dmel.N_MELS)), f0=cat(f0s, np.float32, (0,)),
                     wav=cat(wavs, np.int16, (0,)), skipped=len(shard) - len(ids))
        os.replace(shard_path + ".tmp", shard_path)
        bar.update(len(shard))
    bar.close()
    return _finalize(path, shard_paths, {"tokenizer": os.path.abspath(tok_dir), "vocab_size": tok.vocab_size,
                                         "frame_rate": tok.frame_rate, "clips_listed": len(rows),
                                         "kinds": sorted(cfg.kinds), "splits": sorted(cfg.splits)})


def _finalize(path: str, shard_paths: list[str], meta: dict) -> DecoderData:
    """Concatenate the shards into memory-mapped arrays, write index.json (the completion marker)."""
    import glob

    ids, n_tok, n_fr, skipped = [], [], [], 0
    for shard_path in shard_paths:
        with np.load(shard_path) as z:
            ids += [str(x) for x in z["ids"]]
            n_tok += z["n_tokens"].tolist()
            n_fr += z["n_frames"].tolist()
            skipped += int(z["skipped"])
    if not ids:
        raise ValueError(f"no clip has >= min_tokens tokens ({meta['clips_listed']} listed)")
    tok_off = np.concatenate([[0], np.cumsum(n_tok)]).astype(np.int64)
    frame_off = np.concatenate([[0], np.cumsum(n_fr)]).astype(np.int64)
    arrays = {"tokens": (np.int32, (int(tok_off[-1]),)), "mel": (np.float16, (int(frame_off[-1]), dmel.N_MELS)),
              "f0": (np.float32, (int(frame_off[-1]),)), "wav": (np.int16, (int(frame_off[-1]) * dmel.HOP_LENGTH,))}
    out = {name: np.lib.format.open_memmap(os.path.join(path, f"{name}.npy.tmp"), mode="w+", dtype=dt, shape=shape)
           for name, (dt, shape) in arrays.items()}
    pos = dict.fromkeys(arrays, 0)
    for shard_path in shard_paths:
        with np.load(shard_path) as z:
            for name in arrays:
                a = z[name]
                out[name][pos[name]: pos[name] + a.shape[0]] = a
                pos[name] += a.shape[0]
    for name, arr in out.items():
        arr.flush()
        del arr
        os.replace(os.path.join(path, f"{name}.npy.tmp"), os.path.join(path, f"{name}.npy"))
    out.clear()
    meta = {**meta, "clips": len(ids), "skipped_short": skipped, "hours": float(frame_off[-1]) * dmel.HOP_LENGTH
            / dmel.SAMPLE_RATE / 3600, "ids": ids, "tok_off": tok_off.tolist(), "frame_off": frame_off.tolist()}
    with open(os.path.join(path, "index.json.tmp"), "w") as f:
        json.dump(meta, f)
    os.replace(os.path.join(path, "index.json.tmp"), os.path.join(path, "index.json"))
    for shard_path in glob.glob(os.path.join(path, "shard-*.npz")):
        os.remove(shard_path)
    return open_data(path)


def open_data(path: str) -> DecoderData:
    with open(os.path.join(path, "index.json")) as f:
        meta = json.load(f)
    arr = {n: np.load(os.path.join(path, f"{n}.npy"), mmap_mode="r") for n in ("tokens", "mel", "f0", "wav")}
    ids = meta.pop("ids")
    tok_off = np.asarray(meta.pop("tok_off"), dtype=np.int64)
    frame_off = np.asarray(meta.pop("frame_off"), dtype=np.int64)
    return DecoderData(path, ids, tok_off, frame_off, arr["tokens"], arr["mel"], arr["f0"], arr["wav"], meta)


# ----------------------------------------------------------------------------- flow matching
def band_limits(data: DecoderData, threshold: float, min_bins: int = 40, progress: bool = False) -> np.ndarray:
    """Per clip, how many of the low mel bins carry its signal: one more than the highest bin whose
    95th percentile over the clip's frames reaches ``threshold`` (log-mel), at least ``min_bins``
    (a quiet clip keeps its low band). A clip recorded at 11,025 Hz ends near bin 67 (5.5 kHz);
    full-band 16 kHz speech reaches bin 80 (int64, len(data))."""
    from tqdm import tqdm

    out = np.empty(len(data), dtype=np.int64)
    for i in tqdm(range(len(data)), desc="band limits", unit="clip", disable=not progress):
        p95 = np.percentile(data.clip_mel(i), 95, axis=1)
        reach = np.flatnonzero(p95 >= threshold)
        out[i] = max(min_bins, int(reach[-1]) + 1 if reach.size else 0)
    return out


def flow_batch(data: DecoderData, idx: list[int], segment_tokens: int, flow_cfg: FlowConfig,
               rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Tokens (B, K) and target mel (B, 80, mel_frames(K)): every clip cut to a random window of the
    same K = min(segment_tokens, shortest clip) tokens. The mel window starts at the frame nearest
    to the token window's start time (within half a frame, 5.8 ms)."""
    k = min(segment_tokens, min(data.n_tokens(i) for i in idx))
    n_fr = flow_cfg.mel_frames(k)
    per_token = flow_cfg.sample_rate / flow_cfg.hop_length / flow_cfg.input_frame_rate
    toks, mels = [], []
    for i in idx:
        a = int(rng.integers(0, data.n_tokens(i) - k + 1))
        f = min(int(round(a * per_token)), data.n_frames(i) - n_fr)
        toks.append(data.clip_tokens(i, a, a + k))
        mels.append(data.clip_mel(i, f, f + n_fr))
    return torch.from_numpy(np.stack(toks)), torch.from_numpy(np.stack(mels))


def flow_matching_loss(flow: FlowDecoder, tokens: Tensor, mel: Tensor, generator: Optional[torch.Generator] = None,
                       sigma_min: float = 1e-6, cfg_dropout: float = 0.2, prompt_prob: float = 0.5,
                       prompt_max_fraction: float = 0.7, loss: str = "l2", mu_weight: float = 0.0,
                       bins: Optional[Tensor] = None) -> dict[str, Tensor]:
    """Conditional flow-matching loss of ``flow`` on tokens (B, K) with target mel (B, 80, F).

    Inputs to the estimator are built exactly as at inference (``FlowDecoder.inference``): mu from
    the encoder and regulator (F frames), the speaker projection of a zero embedding, and ``cond``
    = a prefix of the target mel (the prompt) with zeros after it. For a ``cfg_dropout`` share of
    the clips mu, speaker and cond are all zero: the unconditional input of classifier-free
    guidance. ``mu_weight`` > 0 adds that times the mean squared error between mu and the target mel
    (a prior loss as in Matcha-TTS: the encoder learns a mel estimate the estimator refines; the
    model and its inference are unchanged). ``bins`` (B,) (:func:`band_limits`) keeps only each clip's
    lowest ``bins[i]`` mel bins in both terms: above a clip's band edge its mel is no target (the
    estimator still sees the whole mel in ``x_t`` and the prompt, as at inference). Returns ``loss``
    and its parts (``fm``, ``mu``)."""
    b, n_mels, n = mel.shape
    cfm = flow.cfg.cfm
    mu = flow.mu(tokens, n)
    spks = flow.speaker(None, b, mel.device)
    t = torch.rand(b, generator=generator)
    if cfm.t_scheduler == "cosine":
        t = 1 - torch.cos(t * 0.5 * math.pi)
    x0 = torch.randn(mel.shape, generator=generator)
    keep = (torch.rand(b, generator=generator) >= cfg_dropout).float()
    use_prompt = torch.rand(b, generator=generator) < prompt_prob
    n_prompt = (torch.rand(b, generator=generator) * (int(prompt_max_fraction * n) + 1)).long() * use_prompt
    frames = torch.arange(n)[None, :]
    prompt_mask = (frames < n_prompt[:, None]).float()[:, None, :]               # (B, 1, F)
    cond = mel * prompt_mask
    tt = t[:, None, None]
    xt = (1 - (1 - sigma_min) * tt) * x0 + tt * mel
    target = mel - (1 - sigma_min) * x0
    v = flow.decoder.estimator(xt, mu * keep[:, None, None], t, spks * keep[:, None], cond * keep[:, None, None])
    in_band = torch.ones(b, n_mels, 1, device=mel.device) if bins is None else \
        (torch.arange(n_mels, device=mel.device)[None, :] < bins.to(mel.device)[:, None]).float()[:, :, None]
    weight = (1 - prompt_mask) * in_band                                     # (B, 80, F)
    err = (v - target).pow(2) if loss == "l2" else (v - target).abs()
    fm = (err * weight).sum() / weight.sum().clamp(min=1)
    mu_err = ((mu - mel).pow(2) * in_band).sum() / (in_band.sum() * n).clamp(min=1)
    value = fm + mu_weight * mu_err if mu_weight > 0 else fm
    return {"loss": value, "fm": fm.detach(), "mu": mu_err.detach(), "prompt_frames": n_prompt.float().mean(),
            "uncond": 1 - keep.mean()}


# ----------------------------------------------------------------------------- HiFT
def hift_batch(data: DecoderData, batch: int, frames: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``batch`` random segments of ``frames`` mel frames (clips drawn in proportion to their length):
    mel (B, 80, frames), waveform (B, frames * 256), F0 (B, frames). Clips shorter than a segment are
    padded with silence (mel at log(1e-5), zero samples, F0 0)."""
    lengths = np.diff(data.frame_off).astype(np.float64)
    clips = rng.choice(len(data), size=batch, p=lengths / lengths.sum())
    mels = np.full((batch, dmel.N_MELS, frames), dmel.SILENCE, np.float32)
    wavs = np.zeros((batch, frames * dmel.HOP_LENGTH), np.float32)
    f0s = np.zeros((batch, frames), np.float32)
    for j, i in enumerate(clips):
        n = data.n_frames(int(i))
        s = int(rng.integers(0, max(0, n - frames) + 1))
        e = min(n, s + frames)
        mels[j, :, : e - s] = data.clip_mel(int(i), s, e)
        wavs[j, : (e - s) * dmel.HOP_LENGTH] = data.clip_wav(int(i), s, e)
        f0s[j, : e - s] = data.clip_f0(int(i), s, e)
    return torch.from_numpy(mels), torch.from_numpy(wavs), torch.from_numpy(f0s)


def istft_head(hift: HiFTGenerator, x: Tensor) -> Tensor:
    """HiFT's head (magnitude min(exp, 100), phase sin) + ``torch.istft(center=True)``: the same values
    as ops.istft_ola on a fresh state, differentiable and without its per-frame loop."""
    c = hift.cfg
    nb = c.n_fft // 2 + 1
    mag = torch.clamp(torch.exp(x[:, :nb]), max=1e2)
    ph = torch.sin(x[:, nb:])
    spec = torch.complex(mag * torch.cos(ph), mag * torch.sin(ph))
    return torch.istft(spec, c.n_fft, c.hop_len, c.n_fft, window=hift.stft_window, center=True)


def hift_forward_train(hift: HiFTGenerator, mel: Tensor, generator: Optional[torch.Generator] = None,
                       add_noise: bool = True) -> tuple[Tensor, Tensor]:
    """mel (B, 80, T) -> (waveform (B, T * 256) before the +-0.99 clamp, predicted F0 (B, T)). The random
    draws (NSF start phases, noise) are those of ``HiFTGenerator.forward`` with the same generator."""
    f0 = hift.f0_predictor(mel)
    state = SourceState.initial(mel.shape[0], hift.cfg.nb_harmonics + 1, generator, mel.device)
    source, _ = hift.m_source(f0.detach(), state, generator, add_noise)
    return istft_head(hift, hift.decode(mel, source)), f0


_WINDOWS: dict[int, Tensor] = {}


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    if win not in _WINDOWS:
        _WINDOWS[win] = torch.hann_window(win)
    spec = torch.stft(x, n_fft, hop, win, window=_WINDOWS[win].to(x.device), center=True, return_complex=True)
    return torch.sqrt(torch.clamp(spec.real.pow(2) + spec.imag.pow(2), min=1e-7))


def multi_resolution_stft_loss(y: Tensor, x: Tensor, resolutions) -> Tensor:
    """Mean over resolutions of spectral convergence + L1 of log magnitudes (y generated, x target)."""
    total = y.new_zeros(())
    for n_fft, hop, win in resolutions:
        my, mx = stft_magnitude(y, n_fft, hop, win), stft_magnitude(x, n_fft, hop, win)
        sc = torch.linalg.norm(mx - my) / torch.linalg.norm(mx).clamp(min=1e-7)
        total = total + sc + F.l1_loss(torch.log(my), torch.log(mx))
    return total / len(resolutions)


def hift_losses(hift: HiFTGenerator, mel: Tensor, wav: Tensor, f0: Tensor, generator: Optional[torch.Generator],
                cfg: DecoderTrainConfig) -> dict[str, Tensor]:
    y, f0_pred = hift_forward_train(hift, mel, generator)
    mel_l1 = F.l1_loss(dmel.mel_spectrogram(y), dmel.mel_spectrogram(wav))
    stft = multi_resolution_stft_loss(y, wav, cfg.stft_resolutions)
    f0_l1 = F.l1_loss(f0_pred, f0)
    return {"loss": cfg.mel_weight * mel_l1 + cfg.stft_weight * stft + cfg.f0_weight * f0_l1,
            "mel_l1": mel_l1, "stft": stft, "f0_l1_hz": f0_l1, "audio": y}


def adversarial_step(disc, opt_disc, real: Tensor, fake: Tensor, cfg: DecoderTrainConfig) -> dict[str, Tensor]:
    """One discriminator update on (real, detached generated) audio, then the generator's adversarial and
    feature-matching terms against the updated discriminator (to add to the vocoder loss)."""
    from .gan import discriminator_loss, feature_matching_loss, generator_adversarial_loss

    d_loss = discriminator_loss(disc(real), disc(fake.detach()))
    opt_disc.zero_grad(set_to_none=True)
    d_loss.backward()
    d_norm = _clip(disc.parameters(), cfg.grad_clip)
    opt_disc.step()
    with torch.no_grad():
        d_real = disc(real)
    d_fake = disc(fake)
    adv, fm = generator_adversarial_loss(d_fake), feature_matching_loss(d_real, d_fake)
    return {"loss": cfg.adv_weight * adv + cfg.fm_weight * fm, "disc_loss": d_loss.detach(), "adv": adv.detach(),
            "fm": fm.detach(), "disc_grad_norm": torch.tensor(d_norm)}


# ----------------------------------------------------------------------------- loop
def step_generators(seed: int, step: int) -> tuple[torch.Generator, np.random.Generator]:
    """The random sources of one step, a function of (seed, step) only (resume == uninterrupted)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step), np.random.default_rng([seed, step])


def build_models(cfg: DecoderTrainConfig, vocab_size: int, frame_rate: float,
                 seed: int) -> tuple[FlowDecoder, HiFTGenerator]:
    torch.manual_seed(seed)
    return FlowDecoder(cfg.flow_config(vocab_size, frame_rate)), HiFTGenerator(cfg.hift_config())



def _clip(params, max_norm: float) -> float:
    params = [p for p in params if p.grad is not None]
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0


def model_stats(flow: FlowDecoder, hift: HiFTGenerator) -> dict:
    pf = sum(p.numel() for p in flow.parameters())
    ph = sum(p.numel() for p in hift.parameters())
    return {"flow_params": pf, "hift_params": ph, "fp16_mb": round((pf + ph) * 2 / 1e6, 2)}


def warm_start(flow: FlowDecoder, hift: HiFTGenerator, model_dir: str) -> None:
    """Copy a trained decoder's weights (e.g. one trained on another tokenizer's tokens) into freshly
    built models of the same sizes; the optimizers and the step count start anew."""
    from .loader import load_decoder

    src_flow, src_hift = load_decoder(model_dir)
    for name, dst, src in (("flow", flow, src_flow), ("hift", hift, src_hift)):
        want = {k: tuple(v.shape) for k, v in dst.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in src.state_dict().items()}
        if want != have:
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            raise ValueError(f"init_from {model_dir}: its {name} does not match this config's sizes "
                             f"({len(diff)} tensors differ, e.g. {diff[:3]})")
        dst.load_state_dict({k: v.float() for k, v in src.state_dict().items()})
    log.info("warm start from %s", model_dir)


@torch.no_grad()
def remap_token_embedding(flow: FlowDecoder, data: DecoderData, cfg: DecoderTrainConfig,
                          progress: bool = True) -> dict:
    """Carry a warm-started flow's token embedding over to this run's tokenizer.

    The rows of ``flow.input_embedding`` were learned for the codes of ``cfg.init_token_map`` (the
    tokenizer ``cfg.init_from`` was trained on); code v of the new tokenizer means something else.
    Both tokenizers run at the same frame rate, so tokenizing the same clips with both pairs their
    tokens frame by frame: new row v becomes the co-occurrence-weighted mean of the old rows of the
    codes seen where the new tokenizer says v. Codes never seen keep their old row. Returns counts
    for the run log."""
    from tqdm import tqdm

    from ..tokenizer import Tokenizer
    from ..train.loop import load_clip_audio
    from .ship import sha256_file

    old = Tokenizer.from_pretrained(cfg.init_token_map, batch_size=16)
    v_new = flow.input_embedding.num_embeddings
    if old.vocab_size != v_new or abs(old.frame_rate - data.meta["frame_rate"]) > 1e-9:
        raise ValueError(f"init_token_map {cfg.init_token_map}: {old.vocab_size} codes at {old.frame_rate:g} Hz, "
                         f"this run's tokenizer has {v_new} at {data.meta['frame_rate']:g} Hz")
    stats_path = os.path.join(cfg.init_from, "build_stats.json")
    if os.path.exists(stats_path):            # a shipped decoder names the tokenizer it was trained on
        with open(stats_path) as f:
            want = json.load(f).get("tokenizer_model_sha256")
        have = sha256_file(os.path.join(cfg.init_token_map, "model.safetensors"))
        if want and want != have:
            raise ValueError(f"init_token_map {cfg.init_token_map} is not the tokenizer {cfg.init_from} was "
                             f"trained on (sha256 {have[:12]}, its build_stats say {want[:12]})")
    rows = {r["id"]: r for r in select_clips(cfg)}
    pick = np.unique(np.linspace(0, len(data) - 1, min(cfg.token_map_clips, len(data))).round().astype(np.int64))
    load = load_clip_audio(cfg.corpus)
    co = np.zeros((v_new, old.vocab_size))
    for s in tqdm(range(0, len(pick), 64), desc="token map", disable=not progress):
        idx = pick[s: s + 64]
        old_tokens = old.encode_batch([load(rows[data.ids[i]]) for i in idx], 16000)
        for i, t_old in zip(idx, old_tokens):
            t_new = data.clip_tokens(int(i))
            n = min(len(t_new), len(t_old))
            np.add.at(co, (t_new[:n], np.asarray(t_old[:n], dtype=np.int64)), 1.0)
    seen = co.sum(1) > 0
    w = flow.input_embedding.weight
    mapped = torch.from_numpy(co[seen] / co[seen].sum(1, keepdims=True)).to(w.dtype) @ w
    w[torch.from_numpy(seen)] = mapped
    return {"token_map_clips": int(pick.size), "token_map_tokens": int(co.sum()), "token_map_codes": int(seen.sum()),
            "token_map_top_share": float(co.max(1)[seen].sum() / co.sum())}


def train(cfg: DecoderTrainConfig, progress: bool = True, max_steps: Optional[int] = None) -> str:
    """Run (or resume) training; returns the output directory. ``max_steps`` stops early (tests)."""
    from tqdm import tqdm

    from ..train.loop import BatchPlan, log_resume, lr_factor, save_atomic, start_run

    start_run(cfg)
    data = prepare_data(cfg, progress)
    flow, hift = build_models(cfg, data.meta["vocab_size"], data.meta["frame_rate"], cfg.seed)
    plan = BatchPlan([min(data.n_tokens(i), cfg.flow_segment_tokens) for i in range(len(data))],
                     cfg.flow_max_tokens, cfg.seed)
    bins = None if cfg.band_threshold is None or not cfg.train_flow else \
        torch.from_numpy(band_limits(data, cfg.band_threshold, progress=progress))
    opt_flow = torch.optim.AdamW(flow.parameters(), lr=cfg.flow_lr, weight_decay=cfg.weight_decay)
    opt_hift = torch.optim.AdamW(hift.parameters(), lr=cfg.hift_lr, betas=(0.8, 0.99), weight_decay=cfg.weight_decay)
    disc = opt_disc = None
    if cfg.gan:
        from .gan import MultiPeriodDiscriminator

        disc = MultiPeriodDiscriminator(tuple(cfg.gan_periods), tuple(cfg.gan_channels))
        opt_disc = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.8, 0.99),
                                     weight_decay=cfg.weight_decay)
    f0_params = list(hift.f0_predictor.parameters())
    gen_params = [p for n, p in hift.named_parameters() if not n.startswith("f0_predictor.")]

    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    log_path = os.path.join(cfg.out, "train_log.jsonl")
    step = 0
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["config"] != cfg.resume_key():
            raise ValueError(f"{ckpt_path} was written with a different config; use a new `out` directory")
        if ck["data"] != os.path.basename(data.path):
            raise ValueError(f"{ckpt_path} was trained on other prepared data ({ck['data']}, now "
                             f"{os.path.basename(data.path)}: another tokenizer or clip list)")
        flow.load_state_dict(ck["flow"])
        hift.load_state_dict(ck["hift"])
        opt_flow.load_state_dict(ck["opt_flow"])
        opt_hift.load_state_dict(ck["opt_hift"])
        if disc is not None:
            disc.load_state_dict(ck["disc"])
            opt_disc.load_state_dict(ck["opt_disc"])
        step = ck["step"]
        log.info("resumed from %s at step %d", ckpt_path, step)
        log_resume(log_path, step)
    else:
        token_map = {}
        if cfg.init_from:
            warm_start(flow, hift, cfg.init_from)
            if cfg.init_token_map:
                token_map = remap_token_embedding(flow, data, cfg, progress)
        with open(log_path, "w") as f:
            f.write(json.dumps({"event": "start", "clips": len(data), "init_from": cfg.init_from, **token_map,
                                "hours": round(data.meta["hours"], 3),
                                "skipped_short": data.meta["skipped_short"], "data": data.path,
                                "flow_batches_per_epoch": plan.per_epoch, **model_stats(flow, hift),
                                **({} if bins is None else {"band_limited_clips": int((bins < dmel.N_MELS).sum()),
                                                            "band_bins_median": float(bins.float().median())})})
                    + "\n")

    def checkpoint(step: int) -> None:
        save_atomic({"step": step, "config": cfg.resume_key(), "data": os.path.basename(data.path),
                      "vocab_size": data.meta["vocab_size"], "frame_rate": data.meta["frame_rate"],
                      "flow": flow.state_dict(), "hift": hift.state_dict(), "opt_flow": opt_flow.state_dict(),
                      "opt_hift": opt_hift.state_dict(),
                      **({"disc": disc.state_dict(), "opt_disc": opt_disc.state_dict()} if disc is not None else {})},
                     ckpt_path)

    last = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    flow.train()
    hift.train()
    bar = tqdm(total=last, initial=step, desc="train decoder", unit="step", disable=not progress)
    acc: dict[str, float] = {}
    t_log = time.perf_counter()
    while step < last:
        g, rng = step_generators(cfg.seed, step)
        f = lr_factor(step, cfg)
        rec: dict[str, float] = {}
        if cfg.train_flow:
            t0 = time.perf_counter()
            for grp in opt_flow.param_groups:
                grp["lr"] = cfg.flow_lr * f
            idx = plan(step)
            tokens, mel = flow_batch(data, idx, cfg.flow_segment_tokens, flow.cfg, rng)
            out = flow_matching_loss(flow, tokens, mel, g, cfg.sigma_min, cfg.cfg_dropout, cfg.prompt_prob,
                                     cfg.prompt_max_fraction, cfg.flow_loss, cfg.mu_weight,
                                     None if bins is None else bins[idx])
            opt_flow.zero_grad(set_to_none=True)
            out["loss"].backward()
            rec["flow_grad_norm"] = _clip(flow.parameters(), cfg.grad_clip)
            opt_flow.step()
            rec.update(flow_loss=out["fm"].item(), mu_mse=out["mu"].item(), flow_tokens=float(tokens.numel()),
                       sec_flow=time.perf_counter() - t0)
        if cfg.train_hift:
            t0 = time.perf_counter()
            for grp in opt_hift.param_groups:
                grp["lr"] = cfg.hift_lr * f
            mel, wav, f0 = hift_batch(data, cfg.hift_batch, cfg.hift_segment_frames, rng)
            out = hift_losses(hift, mel, wav, f0, g, cfg)
            if disc is not None and step >= cfg.gan_start_step:
                for grp in opt_disc.param_groups:
                    grp["lr"] = cfg.disc_lr * f
                adv = adversarial_step(disc, opt_disc, wav, out["audio"], cfg)
                out["loss"] = out["loss"] + adv["loss"]
                rec.update({k: float(adv[k]) for k in ("disc_loss", "adv", "fm", "disc_grad_norm")})
            opt_hift.zero_grad(set_to_none=True)
            out["loss"].backward()
            rec["hift_grad_norm"] = _clip(gen_params, cfg.grad_clip)
            rec["f0_grad_norm"] = _clip(f0_params, cfg.grad_clip)
            opt_hift.step()
            rec.update(hift_loss=out["loss"].item(), mel_l1=out["mel_l1"].item(), stft=out["stft"].item(),
                       f0_l1_hz=out["f0_l1_hz"].item(), sec_hift=time.perf_counter() - t0)
        step += 1
        for k, v in rec.items():
            acc[k] = acc.get(k, 0.0) + v
        acc["n"] = acc.get("n", 0) + 1
        bar.update(1)
        bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("flow_loss", "mel_l1", "f0_l1_hz") if k in rec})
        if step % cfg.log_every == 0 or step == last:
            n = acc.pop("n")
            entry = {"step": step, **{k: v / n for k, v in acc.items()}, "lr_factor": f,
                     "sec_per_step": (time.perf_counter() - t_log) / n}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            acc, t_log = {}, time.perf_counter()
        if step % cfg.checkpoint_every == 0 or step == last:
            checkpoint(step)
    bar.close()
    if step >= cfg.steps:
        export(flow, hift, os.path.join(cfg.out, "decoder"), step, data)
    return cfg.out


def export(flow: FlowDecoder, hift: HiFTGenerator, out_dir: str, step: int, data: Optional[DecoderData] = None,
           dtype: torch.dtype = torch.float16) -> dict:
    """Write a decoder directory (config.yaml + flow.pt + hift.pt in ``dtype``) and ``train_info.json``."""
    from .loader import save_decoder

    info = {"step": step, **model_stats(flow, hift), "dtype": str(dtype).replace("torch.", "")}
    if data is not None:
        info.update(tokenizer=data.meta["tokenizer"], train_clips=len(data), train_hours=round(data.meta["hours"], 3))
    header = (f"# UniAudio-Token decoder trained by `uniaudio-rt train-decoder` ({step} steps); tokens at "
              f"{flow.cfg.input_frame_rate:g} Hz from a {flow.cfg.vocab_size}-code tokenizer.\n")
    info["files"] = save_decoder(out_dir, flow.eval(), hift.eval(), dtype, header)
    with open(os.path.join(out_dir, "train_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def export_checkpoint(cfg: DecoderTrainConfig, out_dir: Optional[str] = None) -> dict:
    """Export ``OUT/checkpoint.pt`` as it is (finished or not) to ``out_dir`` (default OUT/decoder)."""
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    if not os.path.exists(ckpt_path):
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}")
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    flow, hift = build_models(cfg, ck["vocab_size"], ck["frame_rate"], cfg.seed)
    flow.load_state_dict(ck["flow"])
    hift.load_state_dict(ck["hift"])
    return export(flow, hift, out_dir or os.path.join(cfg.out, "decoder"), ck["step"])
