"""Evaluation of a trained tokenizer on the corpus' visible evaluation sets.

- eval_events (keyword classes with >= ``min_class_clips`` clips): token-histogram vectors (L1
  normalised counts over the codebook), k-means with k = number of classes (10 restarts): cluster
  purity (one clustering, and mean / std over 10 k-means seeds); silhouette (cosine) of the true
  classes in histogram space; accuracy of a multi-class logistic-regression probe (3-fold stratified,
  repeated 10 times: the smallest class has 3 clips), a less coarse measure than one clustering.
- eval_gender: accuracy of a logistic-regression probe on the token histograms, 5-fold stratified
  cross-validation repeated 10 times with different splits (mean and std over the 50 folds; the
  repeats make the mean independent of one particular split), and the majority-class rate.
- eval_wer: CER / WER of the transcription the SAP decoder generates (greedy) from the tokens, and
  the tokens' temporal resolution on this speech: code changes per second and the mean run of
  identical tokens in ms (read speech has ~12-15 phones/s; a decoder cannot render finer units than
  the tokens change at).
- acoustic (the speech clips of eval_gender and eval_wer; spectrum and level also on eval_events,
  under ``acoustic.events``): how much of each 40 ms frame's sound the
  token alone determines. For every token frame: its log-mel spectrum (80 bins, log10 power, no
  per-clip floor, averaged over the token's 4 mel frames), its RMS level (dB) and, on voiced frames,
  its log2 F0 and its F0 relative to the clip's median (semitones: intonation, with the speaker's
  register removed). The probe predicts each from the code alone (the mean of the training frames
  with that code, shrunk towards the global mean; unseen codes get the global mean) and reports the
  variance explained on held-out clips (grouped 5-fold cross-validation over clips, pooled R^2, and
  the std over folds). A frame-level measure: thousands of frames instead of tens of clips, so a
  tokenizer's acoustic detail (what the SAE is meant to keep) can be compared with less noise than
  the clip-level probes.
- all sets: codebook usage (fraction of codes seen) and perplexity of the token distribution.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Optional

import numpy as np
import torch

from ..data.sources import EVENT_KEYWORDS
from .targets import error_rate, parse_transcription


def eval_clips(corpus: str, min_class_clips: int = 3) -> dict[str, list[dict]]:
    from ..data.manifest import read_manifest

    rows = read_manifest(corpus)
    by = {s: [r for r in rows if r["split"] == s] for s in ("eval_events", "eval_gender", "eval_wer")}
    ev = [r for r in by["eval_events"] if r["event"] in EVENT_KEYWORDS]
    counts = Counter(r["event"] for r in ev)
    by["eval_events"] = [r for r in ev if counts[r["event"]] >= min_class_clips]
    by["eval_gender"] = [r for r in by["eval_gender"] if r["gender"] in ("Female", "Male")]
    return by


def histograms(tokens: list[list[int]], k: int) -> np.ndarray:
    h = np.zeros((len(tokens), k))
    for i, t in enumerate(tokens):
        np.add.at(h[i], np.asarray(t, dtype=np.int64), 1.0)
        h[i] /= max(1, len(t))
    return h


def cluster_scores(h: np.ndarray, labels: list[str], seed: int = 0, seeds: int = 10) -> dict:
    """k-means (k = number of classes, 10 restarts) purity and the classes' cosine silhouette.
    ``purity`` is the clustering with ``random_state=seed`` (what the tables before 2026-12-05 used);
    ``purity_mean`` / ``purity_std`` are over ``seeds`` clusterings (random_state seed .. seed+seeds-1),
    so that a difference of a clip or two between tokenizers can be told from k-means' own spread."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    classes = sorted(set(labels))
    y = np.array([classes.index(c) for c in labels])

    def purity(rs: int) -> float:
        km = KMeans(n_clusters=len(classes), n_init=10, random_state=rs).fit(h)
        return float(sum(np.bincount(y[km.labels_ == c]).max() for c in np.unique(km.labels_)) / len(y))

    ps = [purity(seed + i) for i in range(max(1, seeds))]
    return {"clips": len(y), "classes": len(classes), "purity": ps[0],
            "purity_mean": float(np.mean(ps)), "purity_std": float(np.std(ps)), "purity_seeds": len(ps),
            "silhouette": float(silhouette_score(h, y, metric="cosine")),
            "majority": float(np.bincount(y).max() / len(y))}


def probe_scores(h: np.ndarray, labels: list[str], seed: int = 0, repeats: int = 10, splits: int = 5) -> dict:
    """Accuracy of a logistic-regression probe (any number of classes), stratified k-fold cross-validation
    repeated ``repeats`` times; ``splits`` is lowered to the smallest class's clip count (>= 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    counts = np.bincount(y)
    if len(classes) < 2 or counts.min() < 2:
        raise ValueError(f"a probe needs >= 2 classes of >= 2 clips each, got {dict(zip(classes, counts.tolist()))}")
    k = int(min(splits, counts.min()))
    acc = cross_val_score(LogisticRegression(max_iter=5000, C=10.0), h, y,
                          cv=RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed))
    return {"clips": len(y), "accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
            "folds": int(acc.size), "majority": float(counts.max() / len(y))}


def token_runs(tokens: list[list[int]], rate_hz: float) -> dict:
    """Code changes per second and mean run length (ms) of identical consecutive tokens, pooled
    over the clips (a clip of n tokens with r runs has r - 1 changes)."""
    clips = [np.asarray(t) for t in tokens if len(t)]
    n = sum(t.size for t in clips)
    if n == 0:
        return {"tokens": 0, "changes_per_s": None, "mean_run_ms": None}
    changes = sum(int(np.count_nonzero(np.diff(t))) for t in clips)
    seconds = n / rate_hz
    return {"tokens": n, "changes_per_s": float(changes / seconds),
            "mean_run_ms": float(1000.0 * seconds / (changes + len(clips)))}


def frame_features(audio: np.ndarray, n_tokens: int, samples_per_token: int, n_mels: int = 80) -> dict:
    """Per token frame of ``audio`` (16 kHz): ``mel`` (n, n_mels) log10 mel power averaged over the
    token's mel frames, ``level`` (n,) RMS in dB, ``f0`` (n,) autocorrelation F0 in Hz (0 = unvoiced;
    ``data.sap.pitch_track`` over exactly the token's samples). ``n`` = ``n_tokens`` (the clip is
    zero-padded to whole tokens, as the tokenizer pads it)."""
    from ..data.sap import pitch_track
    from ..mel import HOP_LENGTH, log_mel_spectrogram

    if n_tokens <= 0:
        raise ValueError("a clip without tokens has no frames")
    x = np.zeros(n_tokens * samples_per_token, dtype=np.float32)
    x[: min(audio.size, x.size)] = audio[: x.size]
    per = samples_per_token // HOP_LENGTH
    mel = log_mel_spectrogram(torch.from_numpy(x), n_mels, None).numpy()  # (n_mels, n_tokens * per)
    mel = mel[:, : n_tokens * per].reshape(n_mels, n_tokens, per).mean(-1).T
    seg = x.reshape(n_tokens, samples_per_token).astype(np.float64)
    level = 10 * np.log10(np.mean(seg ** 2, axis=1) + 1e-10)
    f0 = pitch_track(x, 16000, samples_per_token, samples_per_token)
    return {"mel": mel.astype(np.float64), "level": level, "f0": f0.astype(np.float64)}


def code_probe(codes: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int, folds: int = 5,
               shrink: float = 1.0) -> dict:
    """Variance of ``y`` (n,) or (n, d) explained by the code alone on held-out groups (clips).
    Per fold: each code predicts the mean of its training frames shrunk towards the training mean
    (``shrink`` pseudo-frames at the mean; a code unseen in training predicts the mean). ``r2``:
    1 - pooled squared error / pooled variance around the overall mean (summed over dimensions);
    ``r2_std``: std of the per-fold R^2 (each around its own fold's mean)."""
    from sklearn.model_selection import GroupKFold

    y = np.asarray(y, dtype=np.float64)
    y2 = y[:, None] if y.ndim == 1 else y
    codes = np.asarray(codes, dtype=np.int64)
    if len(np.unique(groups)) < folds:
        raise ValueError(f"a {folds}-fold probe needs >= {folds} clips, got {len(np.unique(groups))}")
    pred = np.zeros_like(y2)
    per_fold = []
    for tr, te in GroupKFold(n_splits=folds).split(y2, groups=groups):
        mu = y2[tr].mean(0)
        sums = np.zeros((k, y2.shape[1]))
        np.add.at(sums, codes[tr], y2[tr])
        counts = np.bincount(codes[tr], minlength=k)[:, None]
        table = (sums + shrink * mu) / (counts + shrink)
        pred[te] = table[codes[te]]
        per_fold.append(1.0 - ((y2[te] - pred[te]) ** 2).sum() / (((y2[te] - y2[te].mean(0)) ** 2).sum() + 1e-12))
    r2 = 1.0 - ((y2 - pred) ** 2).sum() / (((y2 - y2.mean(0)) ** 2).sum() + 1e-12)
    return {"frames": int(y2.shape[0]), "r2": float(r2), "r2_std": float(np.std(per_fold)), "folds": folds}


def acoustic_scores(audios: list[np.ndarray], tokens: list[list[int]], k: int, samples_per_token: int,
                    n_mels: int = 80, folds: int = 5, pitch: bool = True) -> dict:
    """Frame-level code probes (:func:`code_probe`) of log-mel, level and (``pitch``) log F0 and F0
    relative to the clip median, over the clips' token frames (module docstring, "acoustic")."""
    codes, groups, mel, level, f0 = [], [], [], [], []
    for i, (a, t) in enumerate(zip(audios, tokens)):
        if len(t) == 0:
            continue
        f = frame_features(a, len(t), samples_per_token, n_mels)
        codes.append(np.asarray(t, dtype=np.int64))
        groups.append(np.full(len(t), i))
        mel.append(f["mel"]); level.append(f["level"]); f0.append(f["f0"])
    if len(codes) < folds:
        raise ValueError(f"the acoustic probe needs >= {folds} clips with tokens, got {len(codes)}")
    codes_a, groups_a = np.concatenate(codes), np.concatenate(groups)
    res = {"clips": len(codes), "frames": int(codes_a.size),
           "mel": code_probe(codes_a, np.concatenate(mel), groups_a, k, folds),
           "level": code_probe(codes_a, np.concatenate(level), groups_a, k, folds)}
    if not pitch:
        return res
    rel = [np.where(f > 0, 12 * np.log2(np.where(f > 0, f, 1.0) / np.median(f[f > 0])), 0.0) if (f > 0).any()
           else np.zeros_like(f) for f in f0]
    voiced = np.concatenate([f > 0 for f in f0])
    vg = groups_a[voiced]
    res["voiced_frames"] = int(voiced.sum())
    if len(np.unique(vg)) >= folds:
        logf0 = np.log2(np.concatenate(f0)[voiced])
        res["log_f0"] = code_probe(codes_a[voiced], logf0, vg, k, folds)
        res["f0_relative"] = code_probe(codes_a[voiced], np.concatenate(rel)[voiced], vg, k, folds)
    return res


def _audio(corpus: str, rows: list[dict]) -> list[np.ndarray]:
    from .loop import load_clip_audio

    load = load_clip_audio(corpus)
    return [load(r) for r in rows]


@torch.no_grad()
def transcribe(run: str, encoder, audios: list[np.ndarray], batch: int = 16, progress: bool = True,
               no_repeat_ngram: int = 0) -> list[str]:
    """Greedy SAP-decoder output text for each clip (clips <= 30 s); ``no_repeat_ngram`` > 0 bans
    repeated n-grams of BPE tokens (``WhisperTextDecoder.generate``)."""
    from safetensors.torch import load_file
    from tqdm import tqdm

    from ..mel import HOP_LENGTH, log_mel_spectrogram
    from ..models.whisper_decoder import WhisperDecoderConfig, WhisperTextDecoder
    from ..models.whisper_text import WhisperTextTokenizer, default_whisper_dir
    from .model import SAPModel

    d = os.path.join(run, "sap_decoder")
    with open(os.path.join(d, "config.json")) as f:
        meta = json.load(f)
    with open(os.path.join(run, "train_config.json")) as f:
        whisper = json.load(f).get("whisper")
    dec = WhisperTextDecoder(WhisperDecoderConfig.from_dict(meta["decoder"]))
    dec.load_state_dict(load_file(os.path.join(d, "model.safetensors")))
    model = SAPModel(encoder, dec.eval(), meta["vocab_ids"], 0).eval()
    text_tok = WhisperTextTokenizer.from_dir(whisper or default_whisper_dir())
    stride = encoder.config.samples_per_token
    order = sorted(range(len(audios)), key=lambda i: audios[i].size)
    texts: dict[int, str] = {}
    for s in tqdm(range(0, len(order), batch), desc="SAP decode", disable=not progress):
        idx = order[s: s + batch]
        mels = [log_mel_spectrogram(torch.nn.functional.pad(torch.from_numpy(audios[i]), (0, (-audios[i].size) % stride)),
                                    encoder.config.num_mel_bins, encoder.config.mel_floor_db) for i in idx]
        t = max(m.shape[-1] for m in mels)
        mel = torch.zeros(len(idx), encoder.config.num_mel_bins, t)
        mask = torch.zeros(len(idx), t, dtype=torch.bool)
        for j, (i, m) in enumerate(zip(idx, mels)):
            mel[j, :, : m.shape[-1]] = m
            mask[j, : -(-audios[i].size // HOP_LENGTH)] = True
        enc = encoder(mel, mask)
        gen = model.generate(enc.hidden_states, enc.frame_mask, meta["prompt"], meta["eot"], max_new_tokens=160,
                             no_repeat_ngram=no_repeat_ngram)
        for i, g in zip(idx, gen):
            texts[i] = text_tok.decode(g)
    return [texts[i] for i in range(len(audios))]


SETS = ("events", "gender", "wer", "acoustic")


def evaluate(run: Optional[str], corpus: str, tokenizer_dir: Optional[str] = None, progress: bool = True,
             out_json: Optional[str] = None, no_repeat_ngram: int = 0, sets: tuple = SETS) -> dict:
    """Metrics of ``RUN/tokenizer`` (or ``tokenizer_dir``); CER needs ``RUN/sap_decoder``.
    ``no_repeat_ngram`` > 0: the SAP decoder's greedy search never repeats an n-gram (0: plain
    greedy, what docs/RESULTS.md's table used). ``sets``: which of ``SETS`` to measure (usage covers
    the clips tokenized: ``acoustic`` tokenizes all three sets)."""
    from ..checkpoint import load_encoder
    from ..default_model import usage_stats
    from ..tokenizer import Tokenizer

    path = tokenizer_dir or os.path.join(run, "tokenizer")
    encoder = load_encoder(path).eval()
    tok = Tokenizer(encoder, copy_model=True)
    k = encoder.config.quantize_vocab_size
    bad = [x for x in sets if x not in SETS]
    if bad or not sets:
        raise ValueError(f"sets must be a non-empty subset of {SETS}, got {list(sets)}")
    wanted = tuple(x for x in SETS if x in sets)
    load = set(wanted) - {"acoustic"} | ({"events", "gender", "wer"} if "acoustic" in wanted else set())
    data = {n: rows for n, rows in eval_clips(corpus).items() if n[len("eval_"):] in load}
    res: dict = {"tokenizer": path, "codebook": k, "sets": list(wanted)}
    all_tokens: list[int] = []
    toks, audio = {}, {}
    for name, rows in data.items():
        audio[name] = _audio(corpus, rows)
        toks[name] = tok.encode_batch(audio[name], 16000, progress=progress)
        all_tokens += [t for ts in toks[name] for t in ts]
    if "events" in wanted:
        ev = [r["event"] for r in data["eval_events"]]
        if len(set(ev)) >= 2:
            h = histograms(toks["eval_events"], k)
            res["events"] = cluster_scores(h, ev)
            res["events"]["probe"] = probe_scores(h, ev)
        else:
            res["events"] = {"clips": len(ev), "skipped": "fewer than 2 event classes"}
    if "gender" in wanted:
        gen = [r["gender"] for r in data["eval_gender"]]
        res["gender"] = (probe_scores(histograms(toks["eval_gender"], k), gen)
                         if min(gen.count("Female"), gen.count("Male")) >= 5
                         else {"clips": len(gen), "skipped": "fewer than 5 clips of a gender"})
    if "acoustic" in wanted:
        names = ("eval_gender", "eval_wer")
        ac_audio, ac_toks = [a for n in names for a in audio[n]], [t for n in names for t in toks[n]]
        n_clips = sum(1 for t in ac_toks if len(t))
        res["acoustic"] = (acoustic_scores(ac_audio, ac_toks, k, encoder.config.samples_per_token,
                                           encoder.config.num_mel_bins)
                           if n_clips >= 5 else {"clips": n_clips, "skipped": "fewer than 5 speech clips"})
        if sum(1 for t in toks["eval_events"] if len(t)) >= 5:   # the scene sounds: spectrum and level only
            res["acoustic"]["events"] = acoustic_scores(audio["eval_events"], toks["eval_events"], k,
                                                        encoder.config.samples_per_token,
                                                        encoder.config.num_mel_bins, pitch=False)
    res["usage"] = usage_stats(np.asarray(all_tokens), k)
    if "wer" in wanted:
        res["speech_runs"] = token_runs(toks["eval_wer"], encoder.config.token_rate)
    if "wer" in wanted and run is not None and os.path.isdir(os.path.join(run, "sap_decoder")) and audio["eval_wer"]:
        with open(os.path.join(run, "sap_decoder", "config.json")) as f:
            mode = json.load(f)["target"]
        gen = transcribe(run, encoder, audio["eval_wer"], progress=progress, no_repeat_ngram=no_repeat_ngram)
        hyp = [parse_transcription(g, mode) or "" for g in gen]
        ref = [r["transcript"] for r in data["eval_wer"]]
        res["asr"] = {"clips": len(ref), "no_repeat_ngram": no_repeat_ngram,
                      "cer": error_rate(ref, hyp, "char"), "wer": error_rate(ref, hyp, "word"),
                      "examples": [{"ref": r, "hyp": h, "generated": g} for r, h, g in list(zip(ref, hyp, gen))[:5]]}
    if out_json:
        with open(out_json, "w") as f:
            json.dump(res, f, indent=2, ensure_ascii=False)
    return res
