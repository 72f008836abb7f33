"""How much of a clip's mel the flow's prior ``mu`` explains from the tokens, against baselines.

On clips of a prepared decoder-data directory (``<corpus>/.decoder_data/<hash>``, written by
train-decoder), prints the mean squared error per log-mel value of

- ``mu``           the flow encoder's mel estimate from the clip's tokens (what the sampler is conditioned on)
- ``mu_shuffled``  the same with the clip's tokens in random order (what token order/context adds)
- ``mu_constant``  the same with every token replaced by the clip's most frequent one
- ``token_table``  each frame gets the average mel frame of its token, averaged over other clips (a
                   context-free lookup: what the code identity alone says)
- ``clip_mean``    the clip's own average spectrum (knows level and voice, no content)
- ``global_mean``  the average spectrum of the other clips

Usage: python bench/decoder_prior_probe.py DECODER_DIR DATA_DIR [--clips 150] [--table-clips 3000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from uniaudio_rt.decoder.loader import load_flow
    from uniaudio_rt.decoder.train import open_data

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("decoder", help="decoder directory (config.yaml, flow.pt, hift.pt)")
    p.add_argument("data", help="prepared decoder-data directory (has index.json)")
    p.add_argument("--clips", type=int, default=150, help="probed clips, drawn at random (seed 0)")
    p.add_argument("--table-clips", type=int, default=3000, help="other clips the token table averages over")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    flow = load_flow(args.decoder).eval().float()
    data = open_data(args.data)
    if data.tokens.size and int(data.tokens.max()) >= flow.cfg.vocab_size:
        raise SystemExit(f"{args.data} holds tokens >= the decoder's vocab_size {flow.cfg.vocab_size}: "
                         "prepared with another tokenizer")
    rng = np.random.default_rng(0)
    probe = rng.choice(len(data), min(args.clips, len(data)), replace=False)
    chosen = set(probe.tolist())
    others = [i for i in range(len(data)) if i not in chosen][:args.table_clips]
    mel_per_token = flow.cfg.sample_rate / flow.cfg.hop_length / flow.cfg.input_frame_rate

    def frame_tokens(t: np.ndarray, n: int) -> np.ndarray:
        return t[np.minimum((np.arange(n) / mel_per_token).astype(int), len(t) - 1)]

    k = flow.cfg.vocab_size
    sums, counts, total, frames = np.zeros((k, 80)), np.zeros(k), np.zeros(80), 0
    for i in others:
        t, m = data.clip_tokens(i), data.clip_mel(i).astype(np.float64)
        ft = frame_tokens(t, m.shape[1])
        np.add.at(sums, ft, m.T)
        np.add.at(counts, ft, 1)
        total += m.sum(1)
        frames += m.shape[1]
    global_mean = total / max(frames, 1)
    table = np.where(counts[:, None] > 0, sums / np.maximum(counts[:, None], 1), global_mean)

    res: dict[str, list[float]] = {k: [] for k in ("mu", "mu_shuffled", "mu_constant", "token_table",
                                                    "clip_mean", "global_mean")}
    var = []
    with torch.inference_mode():
        for i in probe:
            t, m = data.clip_tokens(i), data.clip_mel(i).astype(np.float64)
            n = m.shape[1]
            tt = torch.from_numpy(np.asarray(t, dtype=np.int64))[None]

            def err(pred) -> float:
                return float(((np.asarray(pred, np.float64) - m) ** 2).mean())

            res["mu"].append(err(flow.mu(tt, n)[0].numpy()))
            res["mu_shuffled"].append(err(flow.mu(tt[:, torch.from_numpy(rng.permutation(len(t)))], n)[0].numpy()))
            res["mu_constant"].append(err(flow.mu(torch.full_like(tt, int(np.bincount(t).argmax())), n)[0].numpy()))
            res["token_table"].append(err(table[frame_tokens(t, n)].T))
            res["clip_mean"].append(err(m.mean(1, keepdims=True)))
            res["global_mean"].append(err(global_mean[:, None]))
            var.append(float(m.var()))
    print(f"{len(probe)} clips probed, token table from {len(others)} others; mel variance {np.mean(var):.3f}")
    for name, v in res.items():
        print(f"{name:12s} mse {np.mean(v):.3f}   ({np.mean(v) / np.mean(res['clip_mean']):.2f} x clip_mean)")


if __name__ == "__main__":
    main()
