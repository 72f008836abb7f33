"""``uniaudio-rt train-decoder-ship``: copy a trained decoder run into the package as the default.

Writes ``OUT/config.yaml``, ``OUT/flow.pt``, ``OUT/hift.pt`` (the run's exported float16 decoder),
``OUT/build_stats.json`` (training config, steps, wall time, final losses, the ``evaluate-decoder``
metrics and the sha256 of the tokenizer weights whose tokens it was trained on) and a card
``OUT/README.md``. The tokenizer digest is what ties the pair together: a decoder trained on
another tokenizer's tokens decodes the shipped tokenizer's tokens into noise (tests check it).

The flow and the vocoder can come from two runs trained side by side (one with ``train_hift: false``,
one with ``train_flow: false``, each on one CPU thread): ``combine_decoders`` (``uniaudio-rt
decoder-combine``) puts the flow run's ``config.yaml`` and ``flow.pt`` next to the vocoder run's
``hift.pt`` once their ``hift`` configs are checked equal; ``ship_decoder(..., vocoder_run=...)``
ships that pair. Either way the metrics must have been measured on the very files shipped: the
sha256 digests ``evaluate-decoder`` records are compared with the files'.

``set_sampler`` (``uniaudio-rt decoder-set-sampler``) writes a copy of a decoder directory whose
config.yaml has other sampler defaults (``n_timesteps``, ``inference_cfg_rate``; the ONNX export and
every ``Detokenizer`` read them from there). The copy's build_stats.json keeps the training record
but drops the metrics, which were measured with the old settings; ``ship_decoder(decoder_dir=...)``
(``train-decoder-ship --decoder``) ships such a directory once it has been evaluated again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Optional

FILES = ("config.yaml", "flow.pt", "hift.pt")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(model_dir: str) -> dict[str, str]:
    """sha256 of a decoder directory's config.yaml, flow.pt and hift.pt."""
    return {n: sha256_file(os.path.join(model_dir, n)) for n in FILES}


def _check_decoder_dir(dec: str) -> None:
    missing = [n for n in FILES + ("train_info.json",) if not os.path.exists(os.path.join(dec, n))]
    if missing:
        raise FileNotFoundError(f"{dec} lacks {missing}: train to the last step (or --export-only) first")


def _sources(flow_dir: str, vocoder_dir: Optional[str]) -> dict[str, str]:
    """File name -> the path it is taken from: everything from ``flow_dir``, except hift.pt from
    ``vocoder_dir`` (whose HiFT config must equal the flow directory's). Both must be finished
    exports."""
    from .loader import read_config

    for d in (flow_dir, vocoder_dir):
        if d:
            _check_decoder_dir(d)
    src = {n: os.path.join(flow_dir, n) for n in FILES}
    if vocoder_dir:
        a = read_config(os.path.join(flow_dir, "config.yaml")).get("hift")
        b = read_config(os.path.join(vocoder_dir, "config.yaml")).get("hift")
        if a != b:
            diff = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
            raise ValueError(f"the HiFT configs of {flow_dir} and {vocoder_dir} differ ({diff}): "
                             "the vocoder's hift.pt does not fit the flow directory's config.yaml")
        src["hift.pt"] = os.path.join(vocoder_dir, "hift.pt")
    return src


def combine_decoders(flow_dir: str, vocoder_dir: str, out: str) -> dict:
    """Write a decoder directory ``out`` from ``flow_dir``'s config.yaml and flow.pt and
    ``vocoder_dir``'s hift.pt (byte copies; the HiFT configs must be equal), with a
    ``train_info.json`` naming both sources. Returns that record."""
    if os.path.abspath(out) in (os.path.abspath(flow_dir), os.path.abspath(vocoder_dir)):
        raise ValueError(f"write the combination to a new directory, not over {out}")
    src = _sources(flow_dir, vocoder_dir)
    info = json.load(open(os.path.join(flow_dir, "train_info.json")))
    voc = json.load(open(os.path.join(vocoder_dir, "train_info.json")))
    info.update(flow_from=os.path.abspath(flow_dir), vocoder_from=os.path.abspath(vocoder_dir),
                vocoder_step=voc.get("step"))
    os.makedirs(out, exist_ok=True)
    for name, path in src.items():
        shutil.copyfile(path, os.path.join(out, name) + ".tmp")
        os.replace(os.path.join(out, name) + ".tmp", os.path.join(out, name))
    with open(os.path.join(out, "train_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def _cfm(config_path: str):
    from .loader import flow_config_from_yaml, read_config

    return flow_config_from_yaml(read_config(config_path)).cfm


def _set_config_value(text: str, key: str, value, anchor_key: str) -> str:
    """``text`` with the one ``key: ...`` line's value replaced; a missing key is added under
    ``anchor_key``'s line with its indentation. Comments and everything else stay as they are."""
    line = re.compile(rf"^([ \t]*){key}[ \t]*:[^\n#]*?([ \t]*#[^\n]*)?$", re.M)
    hits = line.findall(text)
    if len(hits) > 1:
        raise ValueError(f"config.yaml has {len(hits)} '{key}' entries: set the sampler by hand")
    if hits:
        return line.sub(lambda m: f"{m.group(1)}{key}: {value}{m.group(2) or ''}", text, count=1)
    anchor = re.compile(rf"^([ \t]*){anchor_key}[ \t]*:[^\n]*$", re.M)
    found = anchor.findall(text)
    if len(found) != 1:
        raise ValueError(f"config.yaml has no '{key}' and {len(found)} '{anchor_key}' entries: set the sampler by hand")
    return anchor.sub(lambda m: f"{m.group(0)}\n{m.group(1)}{key}: {value}", text, count=1)


def _describe_change(old: dict, new: dict) -> str:
    parts = []
    if old["n_timesteps"] != new["n_timesteps"]:
        parts.append(f"Euler steps {old['n_timesteps']} -> {new['n_timesteps']}")
    if old["cfg_rate"] != new["cfg_rate"]:
        parts.append(f"guidance rate {old['cfg_rate']:g} -> {new['cfg_rate']:g}")
    return ", ".join(parts) or "unchanged"


def set_sampler(decoder_dir: str, out: str, n_timesteps: Optional[int] = None, cfg_rate: Optional[float] = None) -> dict:
    """Write ``out``: ``decoder_dir``'s flow.pt and hift.pt (byte copies) and its config.yaml with the
    flow sampler's defaults (Euler steps ``n_timesteps``, guidance rate ``cfg_rate``; None keeps one)
    set in ``cfm_params``, edited in place so that comments and key spellings stay. The rest of the
    config is checked unchanged by parsing both. A build_stats.json is copied without its metrics
    (measured with the old settings) and with the change appended to ``sampler_changes``; the card
    is not copied, and a card or metrics.json left in ``out`` is removed. Returns the settings before
    and after."""
    from .detokenizer import SamplingConfig

    SamplingConfig(n_timesteps=n_timesteps, cfg_rate=cfg_rate)   # validates the values
    if n_timesteps is None and cfg_rate is None:
        raise ValueError("nothing to set: give the Euler steps, the guidance rate or both")
    if os.path.abspath(out) == os.path.abspath(decoder_dir):
        raise ValueError(f"write the copy to a new directory, not over {decoder_dir}")
    missing = [n for n in FILES if not os.path.exists(os.path.join(decoder_dir, n))]
    if missing:
        raise FileNotFoundError(f"{decoder_dir} lacks {missing}: not a decoder directory")
    from .loader import flow_config_from_yaml, read_config

    cfg_path = os.path.join(decoder_dir, "config.yaml")
    a = read_config(cfg_path)
    before = flow_config_from_yaml(a).cfm
    old = {"n_timesteps": before.n_timesteps, "cfg_rate": before.inference_cfg_rate}
    new = {"n_timesteps": old["n_timesteps"] if n_timesteps is None else int(n_timesteps),
           "cfg_rate": old["cfg_rate"] if cfg_rate is None else float(cfg_rate)}
    with open(cfg_path, encoding="utf-8") as f:
        text = f.read()
    if cfg_rate is not None:
        text = _set_config_value(text, "inference_cfg_rate", repr(new["cfg_rate"]), "t_scheduler")
    if n_timesteps is not None:
        text = _set_config_value(text, "n_timesteps", new["n_timesteps"], "inference_cfg_rate")
    text = f"# flow sampler set by `uniaudio-rt decoder-set-sampler`: {_describe_change(old, new)}\n" + text
    # the edit changed the sampler and nothing else
    b = read_config(text)
    for d in (a, b):
        cfm = d["flow"]["decoder"]["cfm_params"]
        cfm = cfm.get("content", cfm) if isinstance(cfm, dict) else cfm
        for k in ("inference_cfg_rate", "n_timesteps"):
            cfm.pop(k, None)
    if a != b:
        raise ValueError("editing config.yaml's sampler would change other entries: set the sampler by hand")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml.tmp"), "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(os.path.join(out, "config.yaml.tmp"), os.path.join(out, "config.yaml"))
    after = _cfm(os.path.join(out, "config.yaml"))
    if (after.n_timesteps, after.inference_cfg_rate) != (new["n_timesteps"], new["cfg_rate"]):
        raise RuntimeError(f"config.yaml reads back as {after.n_timesteps} steps, rate {after.inference_cfg_rate}")
    _copy_files({n: os.path.join(decoder_dir, n) for n in ("flow.pt", "hift.pt", "train_info.json")
                 if os.path.exists(os.path.join(decoder_dir, n))}, out)
    stats_path = os.path.join(decoder_dir, "build_stats.json")
    if os.path.exists(stats_path):
        stats = json.load(open(stats_path))
        stats.pop("metrics", None)
        stats.setdefault("sampler_changes", []).append({"from": old, "to": new})
        with open(os.path.join(out, "build_stats.json"), "w") as f:
            json.dump(stats, f, indent=1, ensure_ascii=False)
    for stale in ("README.md", "metrics.json"):   # of another decoder or of other settings
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    return {"out": os.path.abspath(out), "from": old, "to": new}


def _run_record(run: str) -> tuple[dict, list[dict], list[dict], float]:
    """A training run's config, its log, the log's step records and their compute time."""
    train_cfg = json.load(open(os.path.join(run, "train_config.json")))
    log = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl"))]
    steps = [r for r in log if "step" in r]
    if not steps:
        raise ValueError(f"{run}/train_log.jsonl has no step records")
    from ..train.loop import log_wall_seconds

    return train_cfg, log, steps, log_wall_seconds(log, train_cfg.get("log_every", 1))


def _checked_metrics(metrics_path: str, src: dict[str, str], combined: bool) -> dict:
    """The evaluate-decoder metrics (without per-clip rows) after checking that they were measured on
    the files in ``src``, with the reference passes and with the decoder's own sampler defaults."""
    from .detokenizer import SamplingConfig

    if not os.path.exists(metrics_path):
        raise FileNotFoundError(f"no metrics at {metrics_path}: run `uniaudio-rt evaluate-decoder --json` first")
    metrics = {k: v for k, v in json.load(open(metrics_path)).items() if k != "per_clip"}
    measured = metrics.get("files_sha256")
    shipped = {n: sha256_file(p) for n, p in src.items()}
    if measured is None:
        raise ValueError(f"{metrics_path} records no file digests (older evaluate-decoder): evaluate again")
    if metrics.get("wer_original") is None:
        raise ValueError(f"{metrics_path} has no reference measurements (evaluate-decoder --no-references): "
                         "evaluate again with them")
    if metrics.get("stream_chunk_tokens"):
        raise ValueError(f"{metrics_path} measured the streamed decode (--stream-chunk-tokens), not the one-shot "
                         "decode the card reports: evaluate again without it")
    sampling = metrics.get("sampling")
    if sampling and SamplingConfig(**sampling) != SamplingConfig():
        raise ValueError(f"{metrics_path} was measured with sampler settings {sampling}, not the decoder's "
                         "defaults that the shipped decoder will use: evaluate again without --flow-steps, "
                         "--cfg-rate, --temperature (decoder-set-sampler makes other settings the defaults)")
    if measured != shipped:
        bad = sorted(n for n in FILES if measured.get(n) != shipped[n])
        raise ValueError(f"{metrics_path} was measured on other files than the ones to ship ({bad} differ)"
                         + ("" if combined else "; a combined decoder needs --vocoder-run"))
    return metrics


def _copy_files(src: dict[str, str], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, path in src.items():
        dst = os.path.join(out, name)
        if os.path.abspath(path) != os.path.abspath(dst):
            shutil.copyfile(path, dst + ".tmp")
            os.replace(dst + ".tmp", dst)


def _ship_directory(decoder_dir: str, out: str, metrics_json: Optional[str]) -> dict:
    """Ship a decoder directory that carries its own training record (build_stats.json, as
    ``ship_decoder`` or ``set_sampler`` write it) with new metrics measured on its files."""
    missing = [n for n in FILES + ("build_stats.json",) if not os.path.exists(os.path.join(decoder_dir, n))]
    if missing:
        raise FileNotFoundError(f"{decoder_dir} lacks {missing}: --decoder takes a shipped decoder directory "
                                "(or a decoder-set-sampler copy of one); a training run goes with --run")
    src = {n: os.path.join(decoder_dir, n) for n in FILES}
    metrics = _checked_metrics(metrics_json or os.path.join(decoder_dir, "metrics.json"), src, combined=True)
    stats = json.load(open(os.path.join(decoder_dir, "build_stats.json")))
    stats["metrics"] = metrics
    _copy_files(src, out)
    with open(os.path.join(out, "build_stats.json"), "w") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
    _write_card(out, stats)
    return stats


def ship_decoder(run: Optional[str], out: str, metrics_json: Optional[str] = None, vocoder_run: Optional[str] = None,
                 decoder_dir: Optional[str] = None) -> dict:
    """Copy a trained run's decoder (``run``; ``vocoder_run`` for a HiFT trained beside it) or a
    decoder directory that already carries its training record (``decoder_dir``) to ``out``, with
    build_stats.json and a card. The metrics (default RUN/metrics.json or DIR/metrics.json) must be
    evaluate-decoder's, with references and the default sampler, on exactly the files shipped."""
    if (run is None) == (decoder_dir is None):
        raise ValueError("give a training run or a decoder directory, not both or neither")
    if decoder_dir is not None:
        if vocoder_run:
            raise ValueError("--vocoder-run goes with --run: combine first (decoder-combine), or ship the directory")
        return _ship_directory(decoder_dir, out, metrics_json)
    dec = os.path.join(run, "decoder")
    voc_dec = os.path.join(vocoder_run, "decoder") if vocoder_run else None
    src = _sources(dec, voc_dec)
    metrics = _checked_metrics(metrics_json or os.path.join(run, "metrics.json"), src, combined=bool(voc_dec))
    info = json.load(open(os.path.join(dec, "train_info.json")))
    train_cfg, log, steps, wall = _run_record(run)
    tok_dir = info.get("tokenizer")
    if not tok_dir or not os.path.exists(os.path.join(tok_dir, "model.safetensors")):
        raise FileNotFoundError(f"the run's tokenizer ({tok_dir}) is not there to fingerprint")
    tok_stats_path = os.path.join(tok_dir, "build_stats.json")
    tok_run = json.load(open(tok_stats_path)).get("run") if os.path.exists(tok_stats_path) else None
    stats = {"tokenizer_run": tok_run, "tokenizer_model_sha256": sha256_file(os.path.join(tok_dir, "model.safetensors")),
             "steps": info["step"], "init_from": log[0].get("init_from"), "train_clips": info.get("train_clips"),
             "train_hours": info.get("train_hours"), "train_wall_s": round(wall, 1),
             "flow_params": info["flow_params"], "hift_params": info["hift_params"],
             "final": {k: steps[-1][k] for k in ("flow_loss", "mu_mse", "mel_l1", "stft", "f0_l1_hz") if k in steps[-1]},
             "train_config": train_cfg, "metrics": metrics}
    if "token_map_codes" in log[0]:   # the warm start's token embedding was carried to new codes
        stats["token_map"] = {"from": train_cfg.get("init_token_map"), "codes": log[0]["token_map_codes"],
                              "clips": log[0].get("token_map_clips"), "top_share": log[0].get("token_map_top_share")}
    if voc_dec:
        v_cfg, v_log, v_steps, v_wall = _run_record(vocoder_run)
        stats["vocoder"] = {"run": os.path.basename(os.path.normpath(vocoder_run)),
                            "steps": json.load(open(os.path.join(voc_dec, "train_info.json")))["step"],
                            "init_from": v_log[0].get("init_from"), "train_wall_s": round(v_wall, 1),
                            "final": {k: v_steps[-1][k] for k in ("mel_l1", "stft", "f0_l1_hz") if k in v_steps[-1]},
                            "train_config": v_cfg}
    _copy_files(src, out)
    with open(os.path.join(out, "build_stats.json"), "w") as f:
        json.dump(stats, f, indent=1, ensure_ascii=False)
    _write_card(out, stats)
    return stats


def _write_card(out: str, s: dict) -> None:
    m = s["metrics"]
    cfm = _cfm(os.path.join(out, "config.yaml"))
    mb = sum(os.path.getsize(os.path.join(out, n)) for n in FILES) / 2 ** 20
    voc = ""
    if "wer_vocoder" in m:
        voc = (f" Copy synthesis (the vocoder alone on the originals' mel): WER {m['wer_vocoder']:.3f}, "
               f"MCD {m['mcd_db_vocoder_mean']:.2f} dB.")
    warm = f" Warm-started from `{s['init_from']}`." if s.get("init_from") else ""
    v = s.get("vocoder")
    if v:
        what = "Flow" if not s["train_config"].get("train_hift", True) else "Flow (and a HiFT)"
        training = (f"{what}: {s['steps']} steps ({s['train_wall_s'] / 60:.0f} min of compute); vocoder "
                    f"(HiFT, run `{v['run']}`): {v['steps']} steps ({v['train_wall_s'] / 60:.0f} min of compute, "
                    f"side by side with the flow run on the 2 CPU cores)")
        if v.get("init_from") and v["init_from"] != s.get("init_from"):
            training += f", warm-started from `{v['init_from']}`"
        elif v.get("init_from"):
            warm = f" Both warm-started from `{s['init_from']}`."
    else:
        training = f"{s['steps']} steps ({s['train_wall_s'] / 60:.0f} min on 2 CPU cores)"
        if s.get("init_from") and not s["train_config"].get("train_hift", True):
            training += ", the flow only (HiFT as in the warm start)"
    tm = s.get("token_map")
    if tm:
        warm += (f" Its token embedding was carried over from the codes of the tokenizer `{tm['from']}` "
                 f"(`init_token_map`: co-occurrence on {tm['clips']} clips, {tm['codes']} codes seen).")
    for change in s.get("sampler_changes", []):
        a, b = change["from"], change["to"]
        warm += f" Sampler defaults set after training (`decoder-set-sampler`): {_describe_change(a, b)}."
    wer, wer_o = m["wer_reconstructed"], m["wer_original"]
    vocoder_ok = "wer_vocoder" in m and m["wer_vocoder"] <= 2 * wer_o + 0.05
    if wer >= 0.9:
        verdict = "A reconstruction WER near 1 means not intelligible"
        verdict += (": the vocoder alone is close to the original, so it is the flow (tokens -> mel) that this CPU "
                    "budget has not trained far enough." if vocoder_ok else
                    ": this CPU budget is far too small for a flow decoder and a vocoder.")
    elif wer >= 0.3:
        verdict = "Partly intelligible: the ASR recovers some of the words, far from the original's WER."
    else:
        verdict = "Mostly intelligible to the ASR, still behind the original."
    text = f"""# uniaudio-rt default decoder (tokens -> 22.05 kHz audio)

**What it is.** Flow matching (token embedding -> block-causal conformer encoder -> length regulator
-> U-Net estimator, {cfm.n_timesteps} Euler steps, CFG {cfm.inference_cfg_rate:g}) to 80-bin mel at 22.05 kHz / hop 256, and a HiFT
vocoder (NSF source from an F0 predictor, iSTFT head), in the public CosyVoice / GLM-4-Voice layout
(config.yaml, flow.pt, hift.pt; float16): {s['flow_params'] / 1e6:.2f} M + {s['hift_params'] / 1e6:.2f} M
parameters, {mb:.1f} MB. Trained on the tokens of the package's default tokenizer (run
`{s['tokenizer_run']}`, model.safetensors sha256 `{s['tokenizer_model_sha256'][:16]}...`).

**Training.** {training}, on {s['train_clips']} speech and voice clips ({s['train_hours']} h) of the
registry corpus (docs/DATA.md).{warm} docs/RESULTS.md has the commands.

**Quality (measured, `uniaudio-rt evaluate-decoder`).** On {m['clips']} held-out English prompts,
faster-whisper (Whisper tiny.en{'' if m.get('asr_fallback', True) else ', no temperature fallback'}) WER {m['wer_original']:.3f} on the originals and
{wer:.3f} on the reconstructions (CER {m['cer_reconstructed']:.3f}); mel-cepstral
distortion {m['mcd_db_mean']:.2f} dB.{voc} {verdict} It ships so that `detokenize` /
`reconstruct` / streaming run end to end with no download; replace it with a longer-trained decoder
(same commands, more steps; rerun resumes) or a public checkpoint directory (`--decoder DIR`).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)
